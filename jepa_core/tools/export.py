"""`jepa export`: a checkpoint's language model in the Hugging Face layout, as `LlamaForCausalLM`.

Writes `config.json`, `model.safetensors`, `generation_config.json`, `tokenizer.json` and
`tokenizer_config.json` into a folder that `transformers` loads with
`AutoModelForCausalLM.from_pretrained(OUT)` and `AutoTokenizer.from_pretrained(OUT)` (no
remote code), and lm-evaluation-harness and vLLM after it. transformers is not needed to
export: the files are written from the checkpoint with torch and safetensors alone.

Only the LM is exported: the JEPA heads, the tap norm and the EMA teacher are training-time
parts that the LM's forward pass never reads. The stack maps onto Llama exactly:

    transformer.tok_emb                    model.embed_tokens
    blocks.i.attn_norm / mlp_norm          model.layers.i.input_layernorm / post_attention_layernorm
    blocks.i.attn.qkv (rows q | k | v)     model.layers.i.self_attn.q_proj / k_proj / v_proj
    blocks.i.attn.proj                     model.layers.i.self_attn.o_proj
    blocks.i.mlp.w12 (rows u | v)          model.layers.i.mlp.gate_proj / up_proj
    blocks.i.mlp.w3                        model.layers.i.mlp.down_proj
    norm_f * logit_scale                   model.norm (the scale folded in: norm(x) * s = x / rms(x) * (w * s))
    lm_head (untied) / the embedding       lm_head (tie_word_embeddings when tied)

RoPE needs no permutation: jepa rotates the half-split pairs (i, i + head_dim/2) with
frequency base^(-2i/head_dim), which is transformers' `rotate_half` convention (the
permutation in Meta-to-HF conversions turns the interleaved layout into this one).

What has no place in Llama is refused, naming the setting: a JEPA arm's gated `lm_bridge`
(`model.lm_bridge`) and a non-zero output bias (`model.logit_bias`; Llama's lm_head is
bias-free, and a per-token bias cannot be folded into a matrix product exactly). A bias that
is still all zeros is dropped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from jepa_core.errors import ConfigError

FORMATS = ("hf",)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
CONFIG = "config.json"
GENERATION_CONFIG = "generation_config.json"
WEIGHTS = "model.safetensors"
TOKENIZER = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
FILES = (CONFIG, GENERATION_CONFIG, WEIGHTS, TOKENIZER, TOKENIZER_CONFIG)
ARCHITECTURE = "LlamaForCausalLM"

# training-time parts, never in an export (the tap norm only feeds the JEPA heads)
_TRAINING_ONLY = ("jepa.", "teacher.", "transformer.tap_norm.")


@dataclass
class ExportResult:
    out: Path
    source: Path  # the weights file exported
    step: int
    architecture: str
    dtype: str
    files: list[str]
    lm_params: int  # parameters written (a tied head counted once)
    left_out: int  # JEPA heads, tap norm and EMA teacher parameters not exported
    notes: list[str] = field(default_factory=list)  # what was folded or dropped, in words
    note: str | None = None  # how a directory was resolved to a checkpoint
    integrity: list[str] = field(default_factory=list)  # a verification fallback or an unchecked checkpoint, as notes


def llama_blockers(cfg: Any, tensors: dict[str, torch.Tensor]) -> list[tuple[str, str]]:
    """(setting, why) for each part of this checkpoint's LM that a plain LlamaForCausalLM cannot hold."""
    out = []
    if not cfg.jepa.run_baseline and cfg.model.lm_bridge:
        out.append((
            "model.lm_bridge",
            "the layers above the tap read it through the gated lm_bridge (x + sigmoid(g) * MLP(x), "
            "an RMSNorm-Linear-GELU-Linear residual with biases), which Llama has no place for",
        ))
    bias = tensors.get("transformer.out_bias")
    if bias is not None and bool(bias.any()):
        out.append((
            "model.logit_bias",
            f"the logits carry a learned per-token bias (transformer.out_bias, max |b| = {bias.abs().max().item():.3g}) "
            "and Llama's lm_head has none; a bias cannot be folded into the head's matrix exactly",
        ))
    return out


def llama_config(cfg: Any, tensors: dict[str, torch.Tensor], vocab_size: int, specials: dict[str, int | None], dtype: str) -> dict[str, Any]:
    m = cfg.model
    hidden = tensors["transformer.blocks.0.mlp.w12.weight"].shape[0] // 2
    return {
        "architectures": [ARCHITECTURE],
        "model_type": "llama",
        "vocab_size": vocab_size,
        "hidden_size": m.d_model,
        "intermediate_size": hidden,
        "num_hidden_layers": m.n_layers,
        "num_attention_heads": m.n_heads,
        "num_key_value_heads": m.n_heads,
        "head_dim": m.d_model // m.n_heads,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.data.block_size,
        "rms_norm_eps": m.norm_eps,
        "rope_theta": m.rope_base,
        # transformers >= 5 reads rope_parameters; older versions keep it as an unused attribute
        "rope_parameters": {"rope_type": "default", "rope_theta": m.rope_base},
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "pretraining_tp": 1,
        "tie_word_embeddings": bool(m.weight_tying),
        "initializer_range": m.init_std,
        "use_cache": True,
        "bos_token_id": specials["bos"],
        "eos_token_id": specials["eos"],
        "pad_token_id": specials["pad"],
        "torch_dtype": dtype,
    }


def llama_tensors(cfg: Any, tensors: dict[str, torch.Tensor], dtype: torch.dtype) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The LM's tensors under Llama's names (fresh, contiguous, in `dtype`), and notes on what was folded."""
    m = cfg.model
    d = m.d_model
    notes: list[str] = []

    def put(t: torch.Tensor) -> torch.Tensor:
        return t.detach().to(device="cpu", dtype=dtype, copy=True).contiguous()

    out = {"model.embed_tokens.weight": put(tensors["transformer.tok_emb.weight"])}
    for i in range(m.n_layers):
        src, dst = f"transformer.blocks.{i}.", f"model.layers.{i}."
        q, k, v = tensors[src + "attn.qkv.weight"].split(d, dim=0)
        gate, up = tensors[src + "mlp.w12.weight"].chunk(2, dim=0)
        out |= {
            dst + "input_layernorm.weight": put(tensors[src + "attn_norm.weight"]),
            dst + "self_attn.q_proj.weight": put(q),
            dst + "self_attn.k_proj.weight": put(k),
            dst + "self_attn.v_proj.weight": put(v),
            dst + "self_attn.o_proj.weight": put(tensors[src + "attn.proj.weight"]),
            dst + "post_attention_layernorm.weight": put(tensors[src + "mlp_norm.weight"]),
            dst + "mlp.gate_proj.weight": put(gate),
            dst + "mlp.up_proj.weight": put(up),
            dst + "mlp.down_proj.weight": put(tensors[src + "mlp.w3.weight"]),
        }
    scale = tensors["transformer.logit_scale"].double()
    out["model.norm.weight"] = put(tensors["transformer.norm_f.weight"].double() * scale)
    notes.append(f"logit_scale ({scale.item():.6g}) folded into model.norm.weight")
    if not m.weight_tying:
        out["lm_head.weight"] = put(tensors["transformer.lm_head.weight"])
    # else: tie_word_embeddings, and lm_head.weight is left out of the file as transformers does
    if "transformer.out_bias" in tensors:
        notes.append("out_bias is all zeros: dropped")
    return out, notes


def _special_ids(tokenizer: Any) -> dict[str, int | None]:
    from jepa_core.data.pipeline import separator_id

    inner = tokenizer.inner

    def find(*names: str) -> int | None:
        for n in names:
            i = inner.token_to_id(n)
            if i is not None:
                return int(i)
        return None

    eos = separator_id(tokenizer)
    return {"bos": find("<bos>", "<s>"), "eos": eos, "unk": find("<unk>"), "pad": find("<pad>")}


def _tokenizer_config(tokenizer: Any, specials: dict[str, int | None], block_size: int) -> dict[str, Any]:
    inner = tokenizer.inner
    body: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast"}
    for key in ("bos", "eos", "unk", "pad"):
        if specials[key] is not None:
            body[f"{key}_token"] = inner.id_to_token(specials[key])
    body |= {
        # jepa encodes without specials and decodes byte-level text as it is
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": block_size,
        "model_input_names": ["input_ids", "attention_mask"],
    }
    return body


def check_export_args(fmt: str, dtype: str) -> None:
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r} is not supported.", hint="Use --format hf (the Hugging Face layout, LlamaForCausalLM).")
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype!r} is not one of {', '.join(DTYPES)}.", hint="float32 (the default) keeps the trained weights exactly.")


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} exists and is not a folder.", hint="Give a new folder (it is created) or an existing one.")
    present = [n for n in FILES if (out / n).exists()]
    if present and not force:
        raise ConfigError(
            f"{out} already holds {', '.join(present)}.",
            hint="Pass --force to overwrite them, or give another folder.",
        )


def export_hf(path: str | Path, out: str | Path, *, dtype: str = "float32", force: bool = False) -> ExportResult:
    """Export the checkpoint at `path` (what `jepa sample` takes, `RUN:best` included) into `out`."""
    from safetensors.torch import save_file

    from jepa_core.fsutil import atomic_path, atomic_write_text
    from jepa_core.tools.sample import load_for_sampling

    check_export_args("hf", dtype)
    out = Path(out)
    _check_out(out, force)
    sm = load_for_sampling(path, "cpu")
    cfg = sm.cfg
    tensors = dict(sm.model.state_dict())
    blockers = llama_blockers(cfg, tensors)
    if blockers:
        settings = " and ".join(f"{k} = true" for k, _ in blockers)
        raise ConfigError(
            f"{sm.ref.weights} cannot be exported as a plain {ARCHITECTURE}: {settings}. "
            + " ".join(f"{k}: {why}." for k, why in blockers),
            hint="Train with " + " ".join(f"--set {k}=false" for k, _ in blockers)
            + " for an exportable LM (the logit scale and a tied or untied head export as they are).",
        )
    hf, notes = llama_tensors(cfg, tensors, DTYPES[dtype])
    left_out = sum(t.numel() for n, t in tensors.items() if n.startswith(_TRAINING_ONLY))
    specials = _special_ids(sm.tokenizer)
    config = llama_config(cfg, tensors, sm.tokenizer.vocab_size, specials, dtype)
    generation = {
        "bos_token_id": specials["bos"],
        "eos_token_id": specials["eos"],
        "pad_token_id": specials["pad"],
        "max_length": cfg.data.block_size,
    }
    out.mkdir(parents=True, exist_ok=True)
    metadata = {
        "format": "pt",  # transformers reads only safetensors files that say so
        "jepa_source": str(sm.ref.weights),
        "jepa_step": str(sm.step),
        "jepa_tokenizer_sha256": sm.tokenizer.sha256(),
    }
    with atomic_path(out / WEIGHTS) as tmp:
        save_file(hf, str(tmp), metadata=metadata)
    atomic_write_text(out / CONFIG, json.dumps(config, indent=2) + "\n")
    atomic_write_text(out / GENERATION_CONFIG, json.dumps(generation, indent=2) + "\n")
    atomic_write_text(out / TOKENIZER, sm.tokenizer.to_str())
    atomic_write_text(out / TOKENIZER_CONFIG, json.dumps(_tokenizer_config(sm.tokenizer, specials, cfg.data.block_size), indent=2) + "\n")
    return ExportResult(
        out=out,
        source=sm.ref.weights,
        step=sm.step,
        architecture=ARCHITECTURE,
        dtype=dtype,
        files=list(FILES),
        lm_params=sum(t.numel() for t in hf.values()),
        left_out=left_out,
        notes=notes,
        note=sm.note,
        integrity=sm.integrity,
    )
