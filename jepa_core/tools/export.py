"""`jepa export`: a checkpoint's language model in the Hugging Face layout.

Writes `config.json`, `model.safetensors`, `generation_config.json`, `tokenizer.json` and
`tokenizer_config.json` into a folder that `transformers` loads with
`AutoModelForCausalLM.from_pretrained(OUT)` and `AutoTokenizer.from_pretrained(OUT)`, and
lm-evaluation-harness after it. transformers is not needed to export: the files are written
from the checkpoint with torch and safetensors alone.

Every run exports, as one of two architectures:

- `LlamaForCausalLM` (no remote code; vLLM reads it too) when the LM is Llama-compatible: the
  stack maps onto Llama exactly by the one name mapping in `jepa_core/model/hf.py` (which
  `--init-from hf:` reads back with), the logit scale folded into model.norm
  (norm(x) * s = x / rms(x) * (w * s)) and an all-zero output bias dropped.
- `JepaForCausalLM` when it is not (`llama_blockers`: a JEPA arm's gated `lm_bridge`, a learned
  output bias): the same tensors plus the bridge, the logit scale and the bias, and
  `modeling_jepa.py` (model/hf_remote/, torch and transformers only) beside them, loaded with
  `trust_remote_code=True`. config.json's `auto_map` points transformers at it.

Only the LM is exported: the JEPA heads, the tap norm and the EMA teacher are training-time
parts that the LM's forward pass never reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from jepa_core.errors import ConfigError
from jepa_core.model.hf import JEPA, JEPA_FORMAT, JEPA_FORMAT_KEY, JEPA_MODEL_KEY, LLAMA, to_hf

FORMATS = ("hf",)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
CONFIG = "config.json"
GENERATION_CONFIG = "generation_config.json"
WEIGHTS = "model.safetensors"
TOKENIZER = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
MODELING = "modeling_jepa.py"  # JepaForCausalLM only
FILES = (CONFIG, GENERATION_CONFIG, WEIGHTS, TOKENIZER, TOKENIZER_CONFIG)

# training-time parts, never in an export (the tap norm only feeds the JEPA heads)
_TRAINING_ONLY = ("jepa.", "teacher.", "transformer.tap_norm.")


@dataclass
class ExportResult:
    out: Path
    source: Path  # the weights file exported
    step: int
    architecture: str  # LLAMA, or JEPA (remote code: trust_remote_code=True)
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


def hf_config(cfg: Any, tensors: dict[str, torch.Tensor], vocab_size: int, specials: dict[str, int | None], dtype: str, architecture: str) -> dict[str, Any]:
    m = cfg.model
    hidden = tensors["transformer.blocks.0.mlp.w12.weight"].shape[0] // 2
    config: dict[str, Any] = {
        "architectures": [architecture],
        "model_type": "llama" if architecture == LLAMA else "jepa_lm",
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
        "tie_word_embeddings": bool(m.weight_tying),
        "initializer_range": m.init_std,
        "use_cache": True,
        "bos_token_id": specials["bos"],
        "eos_token_id": specials["eos"],
        "pad_token_id": specials["pad"],
        "torch_dtype": dtype,
    }
    if architecture == LLAMA:
        config |= {
            # transformers >= 5 reads rope_parameters; older versions keep it as an unused attribute
            "rope_parameters": {"rope_type": "default", "rope_theta": m.rope_base},
            "attention_bias": False,
            "attention_dropout": 0.0,
            "mlp_bias": False,
            "pretraining_tp": 1,
        }
    else:
        config |= {
            "auto_map": {"AutoConfig": "modeling_jepa.JepaLMConfig", "AutoModelForCausalLM": "modeling_jepa.JepaForCausalLM"},
            JEPA_FORMAT_KEY: JEPA_FORMAT,
            "bridge_layer": m.tap_index if "transformer.bridge_gate" in tensors else None,
            "logit_bias": "transformer.out_bias" in tensors,
        }
    # the run's [model] keys, for `--init-from hf:` (a Llama's size alone does not say which
    # ff_multiplier and ff_round gave it); transformers keeps an unknown key as an attribute
    config[JEPA_MODEL_KEY] = m.model_dump(mode="json")
    return config


def hf_tensors(cfg: Any, tensors: dict[str, torch.Tensor], dtype: torch.dtype, architecture: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The LM's tensors under HF names (fresh, contiguous, in `dtype`), and notes on what was folded or kept."""
    hf = to_hf(tensors, cfg.model.n_layers, architecture)
    out = {n: t.detach().to(device="cpu", dtype=dtype, copy=True).contiguous() for n, t in hf.items()}
    scale = tensors["transformer.logit_scale"].item()
    if architecture == LLAMA:
        notes = [f"logit_scale ({scale:.6g}) folded into model.norm.weight"]
        # tied: tie_word_embeddings, and lm_head.weight is left out of the file as transformers does
        if "transformer.out_bias" in tensors:
            notes.append("out_bias is all zeros: dropped")
        return out, notes
    kept = [f"logit_scale ({scale:.6g})"]
    if "transformer.out_bias" in tensors:
        kept.append("the output bias (lm_head.bias)")
    if "transformer.bridge_gate" in tensors:
        gate = torch.sigmoid(tensors["transformer.bridge_gate"]).item()
        kept.append(f"the lm_bridge above layer {cfg.model.tap_index} (model.bridge, gate sigmoid(g) = {gate:.3g})")
    return out, [f"kept as they are: {', '.join(kept)}"]


def architecture_note(blockers: list[tuple[str, str]]) -> str:
    """Which architecture is written, and why, in words."""
    if not blockers:
        return (
            f"{LLAMA}: the LM has no lm_bridge and no learned output bias, so it is a plain Llama "
            "(transformers, lm-evaluation-harness and vLLM load it with no remote code)"
        )
    why = " ".join(f"{k}: {reason}." for k, reason in blockers)
    return (
        f"{JEPA}, with {MODELING} (load with trust_remote_code=True): a plain {LLAMA} cannot hold "
        f"{' and '.join(k for k, _ in blockers)}. {why} For a plain {LLAMA}, train with "
        + " ".join(f"--set {k}=false" for k, _ in blockers)
    )


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
        raise ConfigError(f"--format {fmt!r} is not supported.", hint="Use --format hf (the Hugging Face layout: LlamaForCausalLM, or JepaForCausalLM with its modeling file).")
    if dtype not in DTYPES:
        raise ConfigError(f"--dtype {dtype!r} is not one of {', '.join(DTYPES)}.", hint="float32 (the default) keeps the trained weights exactly.")


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} exists and is not a folder.", hint="Give a new folder (it is created) or an existing one.")
    present = [n for n in (*FILES, MODELING) if (out / n).exists()]
    if present and not force:
        raise ConfigError(
            f"{out} already holds {', '.join(present)}.",
            hint="Pass --force to overwrite them, or give another folder.",
        )


def _modeling_source() -> str:
    """The JepaForCausalLM modeling file, shipped inside the package (model/hf_remote/)."""
    from importlib.resources import files

    return files("jepa_core.model").joinpath("hf_remote", MODELING).read_text(encoding="utf-8")


def export_hf(path: str | Path, out: str | Path, *, dtype: str = "float32", force: bool = False) -> ExportResult:
    """Export the checkpoint at `path` (what `jepa sample` takes, `RUN:best` included) into `out`:
    a LlamaForCausalLM when the LM is Llama-compatible, else a JepaForCausalLM with its modeling file."""
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
    arch = JEPA if blockers else LLAMA
    hf, notes = hf_tensors(cfg, tensors, DTYPES[dtype], arch)
    left_out = sum(t.numel() for n, t in tensors.items() if n.startswith(_TRAINING_ONLY))
    specials = _special_ids(sm.tokenizer)
    config = hf_config(cfg, tensors, sm.tokenizer.vocab_size, specials, dtype, arch)
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
    files = list(FILES)
    # the modeling file first: config.json's auto_map must never point at a missing or stale one
    if arch == JEPA:
        atomic_write_text(out / MODELING, _modeling_source())
        files.append(MODELING)
    with atomic_path(out / WEIGHTS) as tmp:
        save_file(hf, str(tmp), metadata=metadata)
    atomic_write_text(out / CONFIG, json.dumps(config, indent=2) + "\n")
    if arch == LLAMA and (out / MODELING).exists():
        (out / MODELING).unlink()  # an earlier JepaForCausalLM export's (--force): nothing reads it now
    atomic_write_text(out / GENERATION_CONFIG, json.dumps(generation, indent=2) + "\n")
    atomic_write_text(out / TOKENIZER, sm.tokenizer.to_str())
    atomic_write_text(out / TOKENIZER_CONFIG, json.dumps(_tokenizer_config(sm.tokenizer, specials, cfg.data.block_size), indent=2) + "\n")
    return ExportResult(
        out=out,
        source=sm.ref.weights,
        step=sm.step,
        architecture=arch,
        dtype=dtype,
        files=files,
        lm_params=sum(t.numel() for t in hf.values()),
        left_out=left_out,
        notes=[architecture_note(blockers), *notes],
        note=sm.note,
        integrity=sm.integrity,
    )
