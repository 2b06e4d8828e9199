"""The decoder-only LM stack: RMSNorm, SwiGLU, RoPE, causal attention, blocks.

`DecoderOnlyTransformer` is the online network shared by the LM and the JEPA
objective (docs/architecture.md, "One step"). With `with_tap`, the output of block `tl`
(the tap) is returned for the JEPA heads, and the layers above it read it
through an optional gradient barrier and a gated residual `lm_bridge` (none with
`model.lm_bridge = false`; `model.logit_bias = false` drops the logits' bias: the
LM is then a plain Llama-shaped stack that `jepa export` writes as `LlamaForCausalLM`).

Initialisation (chosen so the first steps already train well, GPT-2 style):
- every Linear and the token embedding: normal(0, init_std) (0.02 by default).
  The small embedding std keeps the tied logits near zero at step 0 (loss
  starts at ln V) and pre-norm blocks rescale the small residual anyway;
- residual output projections (`attn.proj`, `mlp.w3`, the bridge's last
  Linear): std init_std / sqrt(2 * n_layers), so the residual stream's variance
  grows by O(1) over the whole stack instead of O(n_layers);
- norms at 1, biases at 0, `logit_scale` at 1/sqrt(d_model) (tied or not: the
  logits start at std ~init_std whatever the width), `bridge_gate` at -2 (the
  bridge starts at sigmoid(-2) ~ 0.12 strength).

Every random tensor is drawn from its own generator, seeded from (seed, the
parameter's state-dict name) by `param_generator`, never from the global RNG:
a parameter's initial value then does not depend on which other modules exist
or in which order they were built, so a baseline and a JEPA arm of one seed
start from bit-identical shared weights (the pairing the ablation relies on).
"""

from __future__ import annotations

import hashlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig


def swiglu_hidden(d_model: int, ff_multiplier: float, ff_round: int) -> int:
    """SwiGLU inner size: ff_multiplier * d_model rounded up to a multiple of ff_round."""
    raw = int(math.ceil(ff_multiplier * d_model - 1e-9))
    return max(ff_round, int(math.ceil(raw / ff_round)) * ff_round)


class RMSNorm(nn.Module):
    """x * rsqrt(mean(x^2) + eps) * w, computed in float32 and returned in x's dtype."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # F.rms_norm is one fused kernel; upcast so bf16 inputs are normalised in fp32.
        y = F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps)
        return y.to(x.dtype)


class SwiGLU(nn.Module):
    """w3(silu(u) * v) with [u, v] = w12(x); one fused input matmul, no biases."""

    def __init__(self, d_model: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.hidden = hidden
        self.w12 = nn.Linear(d_model, 2 * hidden, bias=False)
        self.w3 = nn.Linear(hidden, d_model, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u, v = self.w12(x).chunk(2, dim=-1)
        return self.dropout(self.w3(F.silu(u) * v))


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (half-split layout, as GPT-NeoX / Llama).

    Dimension i < head_dim/2 is paired with i + head_dim/2 and the pair is
    rotated by angle pos * base^(-2i/head_dim). The cos/sin tables cover
    `max_seq_len` positions once and are sliced for any shorter sequence; they
    are non-persistent buffers, so they follow `.to(device)` but never enter
    the state dict.
    """

    def __init__(self, head_dim: int, max_seq_len: int, base: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"RoPE needs an even head size, got {head_dim}")
        self.head_dim = head_dim
        self.max_seq_len = max_seq_len
        self.base = base
        cos, sin = self._tables()
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)

    def _tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        # float64 angles: pos * freq loses digits in float32 at long contexts
        half = self.head_dim // 2
        inv_freq = self.base ** (-torch.arange(half, dtype=torch.float64) * 2.0 / self.head_dim)
        ang = torch.arange(self.max_seq_len, dtype=torch.float64)[:, None] * inv_freq[None, :]
        return ang.cos().float(), ang.sin().float()

    def reset_tables(self) -> None:
        """Recompute the tables in place (after `to_empty()` from the meta device)."""
        cos, sin = self._tables()
        self.cos = cos.to(self.cos.device)
        self.sin = sin.to(self.sin.device)

    def rotate_at(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rotate x of shape (B, H, P, head_dim) at the positions (B, P) (any order)."""
        dtype = torch.promote_types(x.dtype, torch.float32)
        cos = self.cos[positions][:, None].to(dtype)  # (B, 1, P, half)
        sin = self.sin[positions][:, None].to(dtype)
        x1, x2 = x.to(dtype).chunk(2, dim=-1)
        return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate x of shape (..., T, head_dim) at positions 0..T-1."""
        T = x.shape[-2]
        if T > self.max_seq_len:
            raise ValueError(
                f"sequence length {T} exceeds the RoPE table size {self.max_seq_len} (data.block_size); "
                "crop the input to the block size"
            )
        dtype = torch.promote_types(x.dtype, torch.float32)
        cos = self.cos[:T].to(dtype)
        sin = self.sin[:T].to(dtype)
        xf = x.to(dtype)
        x1, x2 = xf.chunk(2, dim=-1)
        out = torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
        return out.to(x.dtype)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs) -> torch.Tensor:
    """F.scaled_dot_product_attention, in fp32 on CPU when the inputs are bf16.

    torch's CPU flash-attention backward is several times slower in bf16 than in fp32 (the
    figures: benchmarks/2026-12-xeon-amx.md), which made bf16 autocast slower than fp32
    training on CPU. Attention is a small share of the FLOPs at these widths, so it runs in
    fp32 and the matmuls around it keep bf16's speed.
    """
    if q.device.type == "cpu" and q.dtype == torch.bfloat16:
        mask = kwargs.get("attn_mask")
        if mask is not None and mask.is_floating_point():  # an additive mask joins the fp32 scores
            kwargs = {**kwargs, "attn_mask": mask.float()}
        with torch.autocast("cpu", enabled=False):  # autocast would cast the fp32 inputs back down
            y = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), **kwargs)
        return y.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, **kwargs)


class CausalSelfAttention(nn.Module):
    """Fused QKV (no bias), RoPE on q and k, SDPA with is_causal=True."""

    def __init__(self, d_model: int, n_heads: int, max_seq_len: int, rope_base: float = 10000.0, dropout: float = 0.0):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.dropout_p = dropout
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.proj = nn.Linear(d_model, d_model, bias=False)
        self.rope = RotaryEmbedding(self.head_dim, max_seq_len, rope_base)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, H, T, hd)
        q, k = self.rope(q), self.rope(k)
        y = attend(
            q, k, v, is_causal=True, dropout_p=self.dropout_p if self.training else 0.0
        )
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.resid_dropout(self.proj(y))

    def forward_at(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """The outputs at `positions` (B, P) only: queries for those rows, keys and
        values for the whole (causal) prefix. Equals forward(x) gathered at positions."""
        B, T, C = x.shape
        P = positions.shape[1]
        w = self.qkv.weight
        kv = F.linear(x, w[C:]).view(B, T, 2, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        k, v = self.rope(kv[0]), kv[1]
        x_sel = x.gather(1, positions[:, :, None].expand(B, P, C))
        q = F.linear(x_sel, w[:C]).view(B, P, self.n_heads, self.head_dim).transpose(1, 2)
        q = self.rope.rotate_at(q, positions)
        # query at position p sees keys 0..p (the causal mask for arbitrary query rows)
        mask = torch.arange(T, device=x.device)[None, None, :] <= positions[:, :, None]
        y = attend(
            q, k, v, attn_mask=mask[:, None], dropout_p=self.dropout_p if self.training else 0.0
        )
        return self.resid_dropout(self.proj(y.transpose(1, 2).reshape(B, P, C)))


class Block(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then x + swiglu(norm(x))."""

    def __init__(self, m: ModelConfig, block_size: int):
        super().__init__()
        self.attn_norm = RMSNorm(m.d_model, m.norm_eps)
        self.attn = CausalSelfAttention(m.d_model, m.n_heads, block_size, m.rope_base, m.dropout)
        self.mlp_norm = RMSNorm(m.d_model, m.norm_eps)
        self.mlp = SwiGLU(m.d_model, swiglu_hidden(m.d_model, m.ff_multiplier, m.ff_round), m.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x))
        return x + self.mlp(self.mlp_norm(x))

    def forward_at(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """forward(x) gathered at positions (B, P), computing only those rows
        (keys and values still cover the prefix)."""
        B, P, C = positions.shape[0], positions.shape[1], x.shape[-1]
        x_sel = x.gather(1, positions[:, :, None].expand(B, P, C))
        x_sel = x_sel + self.attn.forward_at(self.attn_norm(x), positions)
        return x_sel + self.mlp(self.mlp_norm(x_sel))


def make_lm_bridge(d_model: int, eps: float, dropout: float) -> nn.Sequential:
    """RMSNorm -> Linear(d, d) -> GELU -> Dropout -> Linear(d, d)."""
    return nn.Sequential(
        RMSNorm(d_model, eps), nn.Linear(d_model, d_model), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_model, d_model)
    )


def param_generator(seed: int, name: str) -> torch.Generator:
    """A CPU generator seeded from (seed, name) through sha256 (Python's hash() is salted per process)."""
    digest = hashlib.sha256(f"{int(seed)}:{name}".encode()).digest()
    return torch.Generator(device="cpu").manual_seed(int.from_bytes(digest[:8], "little") >> 1)


@torch.no_grad()
def normal_by_name_(p: torch.Tensor, std: float, seed: int, name: str) -> None:
    """p <- normal(0, std) drawn on the CPU from `param_generator(seed, name)`.

    Drawn on the CPU in float32 and copied, so the values do not depend on the
    device or dtype the model was built on; a meta tensor has nothing to fill.
    """
    if p.is_meta:
        return
    draw = torch.empty(p.shape, dtype=torch.float32).normal_(0.0, std, generator=param_generator(seed, name))
    p.copy_(draw)


# the residual output projections, scaled down by sqrt(2 * n_layers)
_RESIDUAL_OUT = ("attn.proj.weight", "mlp.w3.weight", "lm_bridge.4.weight")


def init_weights(module: nn.Module, init_std: float, n_layers: int, seed: int, prefix: str = "") -> None:
    """The initialisation described in the module docstring, applied in place.

    `prefix` is the module's place in the full model ("transformer."), so each
    tensor's generator is keyed by its state-dict name.
    """
    resid_std = init_std / math.sqrt(2 * n_layers)
    for mname, mod in module.named_modules():
        if isinstance(mod, (nn.Linear, nn.Embedding)):
            name = f"{prefix}{mname}.weight"
            normal_by_name_(mod.weight, resid_std if name.endswith(_RESIDUAL_OUT) else init_std, seed, name)
            if getattr(mod, "bias", None) is not None:
                nn.init.zeros_(mod.bias)
        elif isinstance(mod, RMSNorm):
            nn.init.ones_(mod.weight)


def default_seed(seed: int | None) -> int:
    """`seed`, or the global RNG's seed (the last torch.manual_seed) when None."""
    return int(seed) if seed is not None else torch.initial_seed()


class DecoderOnlyTransformer(nn.Module):
    """Token embedding, n_layers pre-norm blocks, final RMSNorm and the LM head.

    `forward(idx)` returns `(h_final, h_tap)`: the final-normed hidden states
    (feed them to `logits`) and, when built `with_tap`, the (tap-normed) output
    of block `tl` that the JEPA heads read; None otherwise.
    """

    def __init__(self, m: ModelConfig, vocab_size: int, block_size: int, with_tap: bool, seed: int | None = None):
        super().__init__()
        if vocab_size < 1:
            raise ValueError(f"vocab_size must be positive, got {vocab_size}")
        self.vocab_size = vocab_size
        self.d_model = m.d_model
        self.n_layers = m.n_layers
        self.max_seq_len = block_size
        self.with_tap = with_tap
        self.weight_tying = m.weight_tying
        self.grad_barrier = m.grad_barrier
        self.tap_index = m.tap_index if with_tap else -1
        if with_tap and not 0 <= self.tap_index < m.n_layers:
            raise ValueError(f"tap layer {m.tap_layer} is outside [0, {m.n_layers - 1}] for n_layers = {m.n_layers}")

        self.tok_emb = nn.Embedding(vocab_size, m.d_model)
        self.blocks = nn.ModuleList(Block(m, block_size) for _ in range(m.n_layers))
        self.norm_f = RMSNorm(m.d_model, m.norm_eps)
        self.logit_scale = nn.Parameter(torch.tensor(1.0 / math.sqrt(m.d_model)))
        # model.logit_bias = false: no bias on the logits (a bias-free head, as Llama's)
        self.out_bias = nn.Parameter(torch.zeros(vocab_size)) if m.logit_bias else None
        if not m.weight_tying:
            self.lm_head = nn.Linear(m.d_model, vocab_size, bias=False)
        if with_tap:
            self.tap_norm = RMSNorm(m.d_model, m.norm_eps) if m.tap_norm else None
            # model.lm_bridge = false: the layers above the tap read it as it is (a plain stack)
            self.lm_bridge = make_lm_bridge(m.d_model, m.norm_eps, m.dropout) if m.lm_bridge else None
            self.bridge_gate = nn.Parameter(torch.tensor(-2.0)) if m.lm_bridge else None
        init_weights(self, m.init_std, m.n_layers, default_seed(seed), prefix="transformer.")

    def forward(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = self.tok_emb(idx)
        h_tap = None
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i == self.tap_index:
                h_tap = x
                # with the barrier the LM loss cannot reach blocks 0..tl: they learn from JEPA alone
                x_up = x.detach() if self.grad_barrier else x
                x = x_up if self.lm_bridge is None else x_up + torch.sigmoid(self.bridge_gate) * self.lm_bridge(x_up)
        if h_tap is not None and self.tap_norm is not None:
            h_tap = self.tap_norm(h_tap)
        return self.norm_f(x), h_tap

    def head_weight(self) -> torch.Tensor:
        return self.tok_emb.weight if self.weight_tying else self.lm_head.weight

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """(h @ W^T) * logit_scale + out_bias, W the embedding (tied) or lm_head."""
        # scaling h (B*T*d) instead of the logits (B*T*V) is the same product, cheaper
        return F.linear(h * self.logit_scale, self.head_weight(), self.out_bias)


class TapEncoder(nn.Module):
    """Embedding, blocks 0..tl and the tap norm: the stack below the tap, nothing above.

    Used as the EMA `teacher.encoder`; its parameter names mirror
    `transformer.tok_emb`, `transformer.blocks.{i}` and `transformer.tap_norm`.
    """

    def __init__(self, m: ModelConfig, vocab_size: int, block_size: int):
        super().__init__()
        self.tok_emb = nn.Embedding(vocab_size, m.d_model)
        self.blocks = nn.ModuleList(Block(m, block_size) for _ in range(m.tap_index + 1))
        self.tap_norm = RMSNorm(m.d_model, m.norm_eps) if m.tap_norm else None

    def forward(self, idx: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Tap activations (B, T, d), or only at `positions` (B, P) -> (B, P, d).

        With positions, the last block computes just those rows: the teacher's
        targets sit at a few positions per sequence, so its MLP and queries at
        every other position would be thrown away.
        """
        x = self.tok_emb(idx)
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            x = block.forward_at(x, positions) if positions is not None and i == last else block(x)
        return self.tap_norm(x) if self.tap_norm is not None else x
