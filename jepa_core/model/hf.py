"""Hugging Face model directories, both ways: the one jepa <-> HF tensor-name mapping, and
`read_hf_model`, which reads a directory as data (config.json and safetensors; never its code).

`jepa export` (tools/export.py) writes with `to_hf`; `--init-from hf:DIR` reads with
`read_hf_model`, which uses `from_hf`. Two architectures share the mapping:

- `LlamaForCausalLM`: the plain stack. The logit scale is folded into the final norm on export
  (norm(x) * s = x / rms(x) * (w * s)), so a Llama read back has logit_scale 1 and a zero bias.
- `JepaForCausalLM`: what `jepa export` writes when the LM has parts Llama has no place for
  (the gated lm_bridge above the tap, a learned output bias). The same Llama names for the
  stack, plus the extras below; the modeling file beside it (model/hf_remote/) runs it in
  transformers with trust_remote_code. Here it is read as tensors and config.json only.

RoPE needs no permutation: jepa rotates the half-split pairs (i, i + head_dim/2), transformers'
`rotate_half` convention. A fused jepa tensor (qkv, w12) is the row-concatenation of its HF
parts in the order listed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from jepa_core.errors import CheckpointError

LLAMA = "LlamaForCausalLM"
JEPA = "JepaForCausalLM"
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"
TOKENIZER = "tokenizer.json"
#: config.json's marker that jepa wrote a JepaForCausalLM (its layout's version)
JEPA_FORMAT_KEY = "jepa_format"
JEPA_FORMAT = 1
#: config.json's copy of the run's [model] section: the keys the tensors alone cannot tell
#: (ff_multiplier and ff_round behind a SwiGLU size, tap_layer behind the bridge's place)
JEPA_MODEL_KEY = "jepa_model"

# per block: jepa name under transformer.blocks.{i}. -> its HF parts under model.layers.{i}.
BLOCK_NAMES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("attn_norm.weight", ("input_layernorm.weight",)),
    ("attn.qkv.weight", ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight")),
    ("attn.proj.weight", ("self_attn.o_proj.weight",)),
    ("mlp_norm.weight", ("post_attention_layernorm.weight",)),
    ("mlp.w12.weight", ("mlp.gate_proj.weight", "mlp.up_proj.weight")),
    ("mlp.w3.weight", ("mlp.down_proj.weight",)),
)
# the rest of the stack: jepa name under transformer. -> HF name
TOP_NAMES: tuple[tuple[str, str], ...] = (
    ("tok_emb.weight", "model.embed_tokens.weight"),
    ("norm_f.weight", "model.norm.weight"),
    ("lm_head.weight", "lm_head.weight"),  # untied only: a tied head is the embedding
)
# JepaForCausalLM only: the parts Llama has no place for
JEPA_ONLY_NAMES: tuple[tuple[str, str], ...] = (
    ("logit_scale", "model.logit_scale"),
    ("out_bias", "lm_head.bias"),
    ("bridge_gate", "model.bridge.gate"),
    ("lm_bridge.0.weight", "model.bridge.norm.weight"),
    ("lm_bridge.1.weight", "model.bridge.fc1.weight"),
    ("lm_bridge.1.bias", "model.bridge.fc1.bias"),
    ("lm_bridge.4.weight", "model.bridge.fc2.weight"),
    ("lm_bridge.4.bias", "model.bridge.fc2.bias"),
)
PREFIX = "transformer."  # JepaLM's name for the LM stack

_PICKLED = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "model.pth", "consolidated.00.pth", "tf_model.h5", "flax_model.msgpack")
_FLOATS = {"F16", "BF16", "F32", "F64"}


def name_map(n_layers: int, architecture: str = JEPA) -> list[tuple[str, tuple[str, ...]]]:
    """(JepaLM state-dict name, its HF names) for every tensor the architecture can hold."""
    out = [(PREFIX + j, (h,)) for j, h in TOP_NAMES]
    for i in range(n_layers):
        out += [(f"{PREFIX}blocks.{i}.{j}", tuple(f"model.layers.{i}.{h}" for h in hs)) for j, hs in BLOCK_NAMES]
    if architecture == JEPA:
        out += [(PREFIX + j, (h,)) for j, h in JEPA_ONLY_NAMES]
    return out


def to_hf(tensors: dict[str, torch.Tensor], n_layers: int, architecture: str) -> dict[str, torch.Tensor]:
    """The LM's tensors (JepaLM names; other parts ignored) under HF names, as views or new tensors.

    For LLAMA the logit scale is folded into model.norm.weight (in float64) and the JEPA-only
    parts are left out: the caller has checked that the LM has none (llama_blockers)."""
    out: dict[str, torch.Tensor] = {}
    for jname, parts in name_map(n_layers, architecture):
        t = tensors.get(jname)
        if t is not None:
            out |= dict(zip(parts, t.chunk(len(parts), dim=0) if len(parts) > 1 else (t,), strict=True))
    if architecture == LLAMA:
        scale = tensors[PREFIX + "logit_scale"].double()
        out["model.norm.weight"] = (tensors[PREFIX + "norm_f.weight"].double() * scale).to(tensors[PREFIX + "norm_f.weight"].dtype)
    return out


def from_hf(hf: dict[str, torch.Tensor], n_layers: int, architecture: str, vocab_size: int) -> dict[str, torch.Tensor]:
    """The inverse of to_hf: JepaLM names, float32. An LM without them gets logit_scale 1 and a
    zero out_bias (the same logits), for a run that has them to load."""
    out: dict[str, torch.Tensor] = {}
    for jname, parts in name_map(n_layers, architecture):
        if all(p in hf for p in parts):
            out[jname] = torch.cat([hf[p] for p in parts], dim=0) if len(parts) > 1 else hf[parts[0]]
    out = {k: v.to(torch.float32).contiguous() for k, v in out.items()}
    out.setdefault(PREFIX + "logit_scale", torch.tensor(1.0))  # a Llama's: folded into model.norm
    out.setdefault(PREFIX + "out_bias", torch.zeros(vocab_size))  # no bias: the same logits as a zero one
    return out


@dataclass
class HFModel:
    path: Path  # the directory read
    architecture: str  # LLAMA or JEPA
    model: dict[str, Any]  # jepa [model] keys the directory fixes (names as in config.schema.ModelConfig)
    vocab_size: int
    run_baseline: bool  # True when the LM has no lm_bridge
    tensors: dict[str, torch.Tensor]  # JepaLM state-dict names ("transformer.tok_emb.weight", ...), float32
    tokenizer: Path | None  # the directory's tokenizer.json, if it has one
    max_position_embeddings: int | None = None  # the context the source was made for (jepa: data.block_size)
    notes: list[str] = field(default_factory=list)  # what was dropped or converted, in words


def _refuse(path: Path, what: str, hint: str) -> CheckpointError:
    return CheckpointError(f"{path} cannot be read as a Hugging Face model: {what}", hint=hint)


_LLAMA_HINT = (
    "jepa reads Llama-layout directories (LlamaForCausalLM, multi-head attention, SwiGLU, RoPE, "
    "safetensors) and what `jepa export` writes; start from such a model, or train from scratch."
)


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_dir():
        what = "it is a file, not a folder." if path.exists() else "there is no such folder."
        raise _refuse(path, what, hint="Give the folder that holds config.json and model.safetensors (what save_pretrained or `jepa export` writes).")
    cfg_path = path / CONFIG
    if not cfg_path.is_file():
        raise _refuse(path, f"it holds no {CONFIG}.", hint="Give the folder that holds config.json and model.safetensors (what save_pretrained or `jepa export` writes).")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise _refuse(path, f"its {CONFIG} is not readable JSON ({e}).", hint="Re-copy the folder, or export it again.") from None
    if not isinstance(config, dict):
        raise _refuse(path, f"its {CONFIG} is not a JSON object.", hint="Re-copy the folder, or export it again.")
    return config


def _architecture(path: Path, config: dict[str, Any]) -> str:
    archs = config.get("architectures") or []
    archs = archs if isinstance(archs, list) else [archs]
    if JEPA in archs:
        if config.get(JEPA_FORMAT_KEY) != JEPA_FORMAT:
            raise _refuse(
                path, f"it declares {JEPA} but not {JEPA_FORMAT_KEY} = {JEPA_FORMAT}: it was not written by this version of `jepa export`.",
                hint="Export the run again with this jepa (`jepa export RUN OUT`).",
            )
        return JEPA
    if LLAMA in archs or (not archs and config.get("model_type") == "llama"):
        return LLAMA
    named = ", ".join(map(str, archs)) or f"model_type {config.get('model_type')!r}"
    raise _refuse(path, f"its architecture is {named}, not {LLAMA}.", hint=_LLAMA_HINT)


def _rope(config: dict[str, Any]) -> tuple[float, list[str]]:
    """(rope_theta, problems) from either spelling: rope_parameters (transformers 5) or rope_theta + rope_scaling."""
    problems = []
    params = config.get("rope_parameters")
    theta = config.get("rope_theta", 10000.0)
    if isinstance(params, dict):
        theta = params.get("rope_theta", theta)
        if params.get("rope_type", "default") != "default":
            problems.append(f"rope_parameters.rope_type = {params.get('rope_type')!r} (jepa's RoPE is the default, unscaled one)")
        if params.get("partial_rotary_factor", 1.0) != 1.0:
            problems.append(f"partial_rotary_factor = {params['partial_rotary_factor']} (jepa rotates every dimension)")
    elif params is not None:
        problems.append(f"rope_parameters = {params!r} (jepa reads one default RoPE)")
    scaling = config.get("rope_scaling")
    if scaling and not (isinstance(scaling, dict) and scaling.get("rope_type", scaling.get("type")) == "default"):
        problems.append(f"rope_scaling = {scaling!r} (jepa's RoPE is unscaled)")
    if not isinstance(theta, (int, float)) or isinstance(theta, bool) or not theta > 1:
        problems.append(f"rope_theta = {theta!r} (a number above 1)")
        theta = 10000.0
    return float(theta), problems


def _dims(path: Path, config: dict[str, Any]) -> dict[str, int]:
    keys = {"vocab_size": "V", "hidden_size": "d", "intermediate_size": "ff", "num_hidden_layers": "L", "num_attention_heads": "H"}
    out, bad = {}, []
    for key, short in keys.items():
        v = config.get(key)
        if isinstance(v, int) and not isinstance(v, bool) and v >= 1:
            out[short] = v
        else:
            bad.append(f"{key} = {v!r}" if key in config else f"{key} (missing)")
    if bad:
        raise _refuse(path, f"{CONFIG} lacks a positive whole number for {', '.join(bad)}.", hint="Re-copy the folder, or save the model again with save_pretrained.")
    return out


def _unsupported(config: dict[str, Any], dims: dict[str, int]) -> list[str]:
    """Llama features jepa's stack cannot reproduce exactly, each named with its value."""
    out = []
    kv = config.get("num_key_value_heads") or dims["H"]
    if kv != dims["H"]:
        out.append(f"grouped-query attention (num_key_value_heads = {kv}, num_attention_heads = {dims['H']}; jepa's attention has one key and value head per query head)")
    for key in ("attention_bias", "mlp_bias"):
        if config.get(key):
            out.append(f"{key} = true (jepa's projections have no biases)")
    act = config.get("hidden_act", "silu")
    if act != "silu":
        out.append(f"hidden_act = {act!r} (jepa's SwiGLU gates with silu)")
    if dims["d"] % dims["H"]:
        out.append(f"hidden_size {dims['d']} is not divisible by num_attention_heads {dims['H']}")
    else:
        head_dim = config.get("head_dim") or dims["d"] // dims["H"]
        if head_dim != dims["d"] // dims["H"]:
            out.append(f"head_dim = {head_dim} (jepa's is hidden_size / num_attention_heads = {dims['d'] // dims['H']})")
        elif head_dim % 2:
            out.append(f"head_dim = {head_dim} is odd (RoPE rotates pairs)")
    return out + _rope(config)[1]


def _ff_keys(d: int, hidden: int, hint: dict[str, Any]) -> dict[str, Any] | None:
    """ff_multiplier and ff_round giving SwiGLU size `hidden` for width d: the exporting run's own
    when config.json carries them, else jepa's defaults when they fit, else hidden/d."""
    from jepa_core.config import ModelConfig

    from .transformer import swiglu_hidden

    fields = ModelConfig.model_fields
    candidates = [(hint.get("ff_multiplier"), hint.get("ff_round"))]
    candidates += [(fields["ff_multiplier"].default, fields["ff_round"].default), (hidden / d, fields["ff_round"].default), (hidden / d, 1)]
    for mult, rnd in candidates:
        if isinstance(mult, (int, float)) and isinstance(rnd, int) and 0 < mult <= 16 and 1 <= rnd <= 1024:
            if swiglu_hidden(d, float(mult), rnd) == hidden:
                return {"ff_multiplier": float(mult), "ff_round": rnd}
    return None


def _model_keys(path: Path, config: dict[str, Any], dims: dict[str, int], arch: str) -> dict[str, Any]:
    """jepa's [model] keys that the directory fixes, validated against ModelConfig's bounds."""
    from pydantic import ValidationError

    from jepa_core.config import ModelConfig

    hint = config.get(JEPA_MODEL_KEY) if isinstance(config.get(JEPA_MODEL_KEY), dict) else {}
    ff = _ff_keys(dims["d"], dims["ff"], hint)
    if ff is None:
        raise _refuse(
            path, f"intermediate_size {dims['ff']} is more than 16 times hidden_size {dims['d']} (jepa's model.ff_multiplier is at most 16).",
            hint=_LLAMA_HINT,
        )
    eps = config.get("rms_norm_eps", 1e-6)  # LlamaConfig's default
    model: dict[str, Any] = {
        "d_model": dims["d"],
        "n_layers": dims["L"],
        "n_heads": dims["H"],
        **ff,
        "rope_base": _rope(config)[0],
        "norm_eps": float(eps) if isinstance(eps, (int, float)) else eps,
        "weight_tying": bool(config.get("tie_word_embeddings", False)),  # LlamaConfig's default
    }
    # what the LM lacks is not fixed: a zero bias, or no bridge (a baseline), gives the same logits
    if arch == JEPA and config.get("logit_bias"):
        model["logit_bias"] = True
    if arch == JEPA and config.get("bridge_layer") is not None:
        model["lm_bridge"] = True
        bridge = config["bridge_layer"]  # the tap's index (checked by the caller)
        tap = hint.get("tap_layer")
        ok = isinstance(tap, int) and (tap if tap >= 0 else dims["L"] + tap) == bridge
        model["tap_layer"] = tap if ok else bridge  # the run's own spelling (-2, say) when it agrees
    try:
        ModelConfig(**model)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))} = {err.get('input')!r}: {err['msg']}" for err in e.errors())
        raise _refuse(path, f"its shape is outside what jepa builds ({problems}).", hint=_LLAMA_HINT) from None
    return model


def expected_shapes(dims: dict[str, int], arch: str, tied: bool, bias: bool, bridge: int | None) -> dict[str, tuple[int, ...]]:
    """Every HF tensor name the directory must hold, with the shape config.json implies."""
    V, d, ff, L = dims["V"], dims["d"], dims["ff"], dims["L"]
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (V, d), "model.norm.weight": (d,)}
    for i in range(L):
        p = f"model.layers.{i}."
        shapes |= {p + n: (d,) for n in ("input_layernorm.weight", "post_attention_layernorm.weight")}
        shapes |= {p + f"self_attn.{n}_proj.weight": (d, d) for n in "qkvo"}
        shapes |= {p + "mlp.gate_proj.weight": (ff, d), p + "mlp.up_proj.weight": (ff, d), p + "mlp.down_proj.weight": (d, ff)}
    if not tied:
        shapes["lm_head.weight"] = (V, d)
    if arch == JEPA:
        shapes["model.logit_scale"] = ()
        if bias:
            shapes["lm_head.bias"] = (V,)
        if bridge is not None:
            shapes |= {"model.bridge.gate": (), "model.bridge.norm.weight": (d,)}
            shapes |= {f"model.bridge.{fc}.weight": (d, d) for fc in ("fc1", "fc2")} | {f"model.bridge.{fc}.bias": (d,) for fc in ("fc1", "fc2")}
    return shapes


def _weight_files(path: Path) -> list[Path]:
    """The safetensors files holding the weights (one, or the shards an index names)."""
    index = path / WEIGHTS_INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            names = sorted(set(weight_map.values()))
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise _refuse(path, f"its {WEIGHTS_INDEX} is not a readable shard index ({e!r}).", hint="Re-copy the folder, or save the model again.") from None
        bad = [n for n in names if not isinstance(n, str) or Path(n).name != n or not n.endswith(".safetensors")]
        if bad:
            raise _refuse(path, f"its {WEIGHTS_INDEX} names shard files outside the folder or not safetensors: {bad[:3]}.", hint="Re-copy the folder, or save the model again.")
        missing = [n for n in names if not (path / n).is_file()]
        if missing:
            raise _refuse(path, f"shards named in {WEIGHTS_INDEX} are missing: {', '.join(missing[:3])}.", hint="Copy the whole folder (every model-*.safetensors shard).")
        return [path / n for n in names]
    if (path / WEIGHTS).is_file():
        return [path / WEIGHTS]
    pickled = [n for n in _PICKLED if (path / n).is_file()] + sorted(p.name for p in path.glob("pytorch_model-*.bin"))
    if pickled:
        raise _refuse(
            path, f"its weights are only in {', '.join(pickled)}, not safetensors. jepa never unpickles files: "
            "loading a pickle can run arbitrary code.",
            hint="Convert it with transformers where you trust the files: AutoModelForCausalLM.from_pretrained(DIR).save_pretrained(NEW_DIR) "
            "writes model.safetensors; then pass hf:NEW_DIR.",
        )
    raise _refuse(path, f"it holds no {WEIGHTS} (nor {WEIGHTS_INDEX}).", hint="Give the folder save_pretrained or `jepa export` wrote, weights included.")


def _headers(path: Path, files: list[Path]) -> dict[str, tuple[Path, Any]]:
    """Tensor name -> (file, header entry), every header checked before any tensor is read."""
    from jepa_core.rundir.header import HeaderError, read_header

    entries: dict[str, tuple[Path, Any]] = {}
    for f in files:
        try:
            header = read_header(f)
        except HeaderError as e:
            raise _refuse(path, e.about(f.name), hint="Re-copy the folder (a file was cut short or damaged), or save the model again.") from None
        except OSError as e:
            raise _refuse(path, f"{f.name} is not readable ({e.strerror or e}).", hint="Check the file's permissions, or re-copy the folder.") from None
        for e in header.entries:
            if e.name in entries:
                raise _refuse(path, f"tensor {e.name} is in both {entries[e.name][0].name} and {f.name}.", hint="Re-copy the folder, or save the model again.")
            entries[e.name] = (f, e)
    return entries


def _check_tensors(path: Path, entries: dict[str, tuple[Path, Any]], shapes: dict[str, tuple[int, ...]], tied: bool) -> list[str]:
    """Refuse missing, unexpected, misshapen or non-float tensors; returns the names to drop (with notes)."""
    drop = [n for n in entries if n.endswith("rotary_emb.inv_freq")]  # older transformers saved the RoPE table
    if tied and "lm_head.weight" in entries:
        drop.append("lm_head.weight")  # tied: transformers reads the embedding, and so does jepa
    missing = [n for n in shapes if n not in entries]
    unexpected = [n for n in entries if n not in shapes and n not in drop]
    if missing or unexpected:
        parts = ([f"missing {', '.join(missing[:4])}" + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")] if missing else [])
        parts += [f"unexpected {', '.join(unexpected[:4])}" + (f" and {len(unexpected) - 4} more" if len(unexpected) > 4 else "")] if unexpected else []
        raise _refuse(path, f"its tensors do not match its {CONFIG}: {'; '.join(parts)}.", hint=_LLAMA_HINT)
    for name, want in shapes.items():
        e = entries[name][1]
        if tuple(e.shape) != want:
            raise _refuse(
                path, f"tensor {name} has shape {list(e.shape)} in {entries[name][0].name}, but {CONFIG} implies {list(want)}.",
                hint="The weights and config.json come from different models; re-copy the folder or save the model again.",
            )
        if e.dtype not in _FLOATS:
            raise _refuse(path, f"tensor {name} is {e.dtype}, not a float (quantized weights?).", hint="Give an unquantized float16, bfloat16 or float32 model.")
    return drop


def _load(path: Path, entries: dict[str, tuple[Path, Any]], names: list[str]) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    out: dict[str, torch.Tensor] = {}
    by_file: dict[Path, list[str]] = {}
    for n in names:
        by_file.setdefault(entries[n][0], []).append(n)
    for f, ns in by_file.items():
        try:
            with safe_open(str(f), framework="pt") as fh:
                for n in ns:
                    out[n] = fh.get_tensor(n)
        except Exception as e:  # safetensors raises its own error types for damaged data
            raise _refuse(path, f"{f.name} is not a readable safetensors file ({e}).", hint="Re-copy the folder, or save the model again.") from None
    return out


def read_hf_model(path: str | Path) -> HFModel:
    """A Hugging Face model directory as jepa tensors and [model] keys, read as data only.

    Accepts a LlamaForCausalLM in safetensors (one file or shards) and the JepaForCausalLM that
    `jepa export` writes; refuses anything jepa cannot reproduce exactly with CheckpointError."""
    path = Path(path).expanduser()
    config = _read_config(path)
    arch = _architecture(path, config)
    dims = _dims(path, config)
    problems = _unsupported(config, dims)
    if problems:
        raise _refuse(path, f"it uses what jepa's stack cannot reproduce exactly: {'; '.join(problems)}.", hint=_LLAMA_HINT)
    bridge = config.get("bridge_layer") if arch == JEPA else None
    if bridge is not None and not (isinstance(bridge, int) and not isinstance(bridge, bool) and 0 <= bridge < dims["L"]):
        raise _refuse(path, f"bridge_layer = {bridge!r} is not a layer index below num_hidden_layers {dims['L']}.", hint="Export the run again with `jepa export`.")
    model = _model_keys(path, config, dims, arch)
    tied = model["weight_tying"]
    shapes = expected_shapes(dims, arch, tied, bool(model.get("logit_bias")), bridge)
    entries = _headers(path, _weight_files(path))
    drop = _check_tensors(path, entries, shapes, tied)
    hf = _load(path, entries, list(shapes))
    notes = [f"{n} dropped ({'the head is tied to the embedding' if n == 'lm_head.weight' else 'a RoPE table, recomputed'})" for n in drop]
    dtypes = sorted({entries[n][1].dtype for n in shapes} - {"F32"})
    if dtypes:
        notes.append(f"{'/'.join(dtypes)} weights read as float32")
    if arch == LLAMA:
        notes.append("logit_scale 1 and a zero out_bias (the Llama's logits exactly; its scale is in model.norm)")
    tensors = from_hf(hf, dims["L"], arch, dims["V"])
    tok = path / TOKENIZER
    mpe = config.get("max_position_embeddings")
    return HFModel(
        path=path,
        architecture=arch,
        model=model,
        vocab_size=dims["V"],
        run_baseline=not model.get("lm_bridge", False),
        tensors=tensors,
        tokenizer=tok if tok.is_file() else None,
        max_position_embeddings=mpe if isinstance(mpe, int) and not isinstance(mpe, bool) else None,
        notes=notes,
    )
