"""JepaForCausalLM: a language model trained with `jepa`, for transformers (torch and transformers only).

`jepa export` copies this file next to config.json and model.safetensors when the LM has
parts a plain LlamaForCausalLM has no place for. Load it with

    AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)

The stack is Llama's (pre-norm blocks: RMSNorm, multi-head attention with half-split RoPE,
SwiGLU; the tensors carry Llama's names), and on top of it:

- the bridge (config.bridge_layer, or none): above that layer the hidden state x becomes
  x + sigmoid(gate) * fc2(gelu(fc1(rmsnorm(x)))), a gated residual MLP with biases;
- the head: logits = (norm(x) * logit_scale) @ W^T + bias, W the token embedding when
  tie_word_embeddings, the bias only when config.logit_bias.

Generation uses the key/value cache transformers hands to `forward` (its `update` and
`get_seq_length`), so `generate` works as with any decoder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

# transformers renamed the output's cache field (past_key_values -> cache); use the one it has
_CACHE_FIELD = "cache" if "cache" in getattr(CausalLMOutputWithPast, "__dataclass_fields__", {}) else "past_key_values"


class JepaLMConfig(PretrainedConfig):
    model_type = "jepa_lm"

    def __init__(
        self,
        vocab_size: int = 1024,
        hidden_size: int = 128,
        intermediate_size: int = 384,
        num_hidden_layers: int = 4,
        num_attention_heads: int = 4,
        rms_norm_eps: float = 1e-5,
        rope_theta: float = 10000.0,
        max_position_embeddings: int = 128,
        bridge_layer: int | None = None,
        logit_bias: bool = False,
        tie_word_embeddings: bool = True,
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_attention_heads
        self.head_dim = hidden_size // num_attention_heads
        self.rms_norm_eps = rms_norm_eps
        self.rope_theta = rope_theta
        self.max_position_embeddings = max_position_embeddings
        self.bridge_layer = bridge_layer
        self.logit_bias = logit_bias
        for key in ("num_key_value_heads", "head_dim"):  # derived above; config.json repeats them for other readers
            kwargs.pop(key, None)
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()  # normalised in float32 whatever the weights' dtype
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight.float()
        return y.to(x.dtype)


def rope_tables(positions: torch.Tensor, head_dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (B, 1, T, head_dim/2) at the positions (B, T); angles in float64, as jepa."""
    half = head_dim // 2
    inv_freq = base ** (-torch.arange(half, dtype=torch.float64, device=positions.device) * 2.0 / head_dim)
    ang = positions.to(torch.float64)[..., None] * inv_freq
    return ang.cos().float()[:, None], ang.sin().float()[:, None]


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the half-split pairs (i, i + head_dim/2) of x (B, H, T, head_dim)."""
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, config: JepaLMConfig, layer_idx: int):
        super().__init__()
        d = config.hidden_size
        self.layer_idx = layer_idx
        self.n_heads, self.head_dim = config.num_attention_heads, d // config.num_attention_heads
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(d, d, bias=False) for _ in range(4))

    def forward(self, x, cos, sin, mask, cache):
        B, T, C = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(B, T, self.n_heads, self.head_dim).transpose(1, 2)

        q, k, v = rotate(heads(self.q_proj(x)), cos, sin), rotate(heads(self.k_proj(x)), cos, sin), heads(self.v_proj(x))
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        # no mask: a whole causal sequence (is_causal) or one new token that sees every cached one
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None and T > 1)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, config: JepaLMConfig):
        super().__init__()
        d, h = config.hidden_size, config.intermediate_size
        self.gate_proj, self.up_proj = nn.Linear(d, h, bias=False), nn.Linear(d, h, bias=False)
        self.down_proj = nn.Linear(h, d, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, config: JepaLMConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config, layer_idx)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, cos, sin, mask, cache):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class Bridge(nn.Module):
    """x + sigmoid(gate) * fc2(gelu(fc1(norm(x)))): how the layers above the tap read it."""

    def __init__(self, config: JepaLMConfig):
        super().__init__()
        d = config.hidden_size
        self.norm = RMSNorm(d, config.rms_norm_eps)
        self.fc1, self.fc2 = nn.Linear(d, d), nn.Linear(d, d)
        self.gate = nn.Parameter(torch.tensor(-2.0))

    def forward(self, x):
        return x + torch.sigmoid(self.gate) * self.fc2(F.gelu(self.fc1(self.norm(x))))


class JepaLMModel(nn.Module):
    """The stack: embedding, layers (with the bridge above config.bridge_layer), final norm, logit scale."""

    def __init__(self, config: JepaLMConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.bridge = Bridge(config) if config.bridge_layer is not None else None
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.logit_scale = nn.Parameter(torch.tensor(1.0))

    def forward(self, x, positions, mask, cache):
        cos, sin = rope_tables(positions, self.config.hidden_size // self.config.num_attention_heads, self.config.rope_theta)
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, mask, cache)
            if i == self.config.bridge_layer:
                x = self.bridge(x)
        return self.norm(x) * self.logit_scale


def attention_mask_4d(attention_mask, past: int, T: int, device) -> torch.Tensor | None:
    """A boolean (B, 1, T, past + T) mask (True: may attend), or None when causality alone will do."""
    padded = attention_mask is not None and not bool(attention_mask.bool().all())
    if not padded and (past == 0 or T == 1):
        return None
    S = past + T
    allowed = torch.arange(S, device=device)[None, :] <= torch.arange(past, S, device=device)[:, None]
    mask = allowed[None, None]
    if padded:
        mask = mask & attention_mask[:, None, None, -S:].bool()
    # a padding query with nothing to attend to would give NaN; its output is never read
    return mask | ~mask.any(dim=-1, keepdim=True)


class JepaForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = JepaLMConfig
    base_model_prefix = "model"
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: JepaLMConfig):
        super().__init__(config)
        self.model = JepaLMModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=bool(config.logit_bias))
        self.post_init()

    def _init_weights(self, module):
        # only for tensors a checkpoint lacks: from_pretrained overwrites the rest
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def set_input_embeddings(self, value):
        self.model.embed_tokens = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        cache=None,
        past_key_values=None,
        inputs_embeds=None,
        labels=None,
        use_cache=None,
        logits_to_keep=0,
        return_dict=None,
        **kwargs,
    ):
        cache = cache if cache is not None else past_key_values  # the argument's name before transformers 5.x
        x = self.model.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        B, T = x.shape[:2]
        past = int(cache.get_seq_length()) if cache is not None else 0
        if position_ids is None:
            position_ids = torch.arange(past, past + T, device=x.device)[None].expand(B, T)
        mask = attention_mask_4d(attention_mask, past, T, x.device)
        h = self.model(x, position_ids, mask, cache)
        if isinstance(logits_to_keep, int) and logits_to_keep > 0:
            h = h[:, -logits_to_keep:]
        logits = self.lm_head(h)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)
        out = CausalLMOutputWithPast(loss=loss, logits=logits, **{_CACHE_FIELD: cache})
        return out if return_dict is not False else out.to_tuple()
