"""Checkpoints: safetensors weights + a safetensors state file + latest.json.

No pickle anywhere. The weights file holds the uncompiled model's state dict
(no `_orig_mod.` or `module.` prefixes) and metadata strings; the state file
holds AdamW moments, RNG states and, in JSON metadata, the data position.
Each file is written atomically and `latest.json` is replaced last, so a
crash, Ctrl-C or a full disk leaves the previous checkpoint readable and named.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jepa_core import __version__
from jepa_core.errors import CheckpointError
from jepa_core.rundir import BEST, CKPT_DIR, LATEST, CheckpointRef, RunFolder, digest, list_checkpoints, pointer_text, read_best, state_name, utc_now_iso, weights_name

WEIGHTS_FORMAT = "jepa-weights/1"
STATE_FORMAT = "jepa-state/1"


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DDP and torch.compile wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


# torch dtypes as safetensors names them in a header (what `rundir.digest` hashes with each tensor)
_SAFETENSORS_DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL",
    **{getattr(torch, n): s for n, s in (("float8_e4m3fn", "F8_E4M3"), ("float8_e5m2", "F8_E5M2"), ("uint16", "U16"),
                                        ("uint32", "U32"), ("uint64", "U64")) if hasattr(torch, n)},
}  # fmt: skip


def tensors_digest(tensors: dict[str, torch.Tensor], algorithm: str | None = None) -> str:
    """The payload digest of `tensors` as a safetensors file of them holds it (`rundir.digest`), from memory."""
    algorithm = algorithm or digest.default_algorithm()
    h = digest.new_hasher(algorithm)
    if h is None:
        raise ValueError(f"cannot compute a {algorithm} digest here")
    for name in sorted(tensors):
        t = tensors[name]
        h.update(digest.entry_line(name, _SAFETENSORS_DTYPES[t.dtype], t.shape))
        # the bytes as safetensors writes them: contiguous, little-endian (the host's order on x86 and ARM)
        h.update(t.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8).numpy())
    return f"{algorithm}:{h.hexdigest()}"


def _save_tensors(folder: RunFolder, name: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """Write `tensors` with `metadata` and their payload digest to `name` inside `folder` (through its identity check)."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    metadata = {**metadata, digest.DIGEST_KEY: tensors_digest(tensors)}
    with folder.atomic(name) as tmp:
        try:
            save_file(tensors, str(tmp), metadata=metadata)
        except SafetensorError as e:  # its I/O errors carry the errno only in the text
            raise _as_os_error(e, folder.path / name) from e
    return folder.path / name


def _as_os_error(e: Exception, path: Path) -> OSError:
    """A safetensors write error as the OSError it wraps ("... (os error 28)"), naming `path`."""
    import os
    import re

    m = re.search(r"os error (\d+)", str(e))
    if m is None:
        return OSError(0, str(e), str(path))
    errno = int(m.group(1))
    return OSError(errno, os.strerror(errno), str(path))


def model_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    sd = unwrap(model).state_dict()
    return {k: v.detach().to("cpu").contiguous() for k, v in sd.items()}


# group hyper-parameters worth recording (AdamW's and Muon's); the rest are torch internals
_GROUP_HYPER = ("lr", "weight_decay", "betas", "eps", "momentum", "nesterov")


def optimizer_tensors(model: torch.nn.Module, optimizer: Any) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimizer state keyed by parameter name (`optim.NAME.KEY`: AdamW's exp_avg and
    exp_avg_sq, Muon's momentum_buffer), plus the JSON-able group hyper-parameters."""
    from .optimizer import optimizer_algorithm

    names = {id(p): n for n, p in unwrap(model).named_parameters()}
    tensors: dict[str, torch.Tensor] = {}
    groups = []
    steps: dict[str, float] = {}
    state_keys: dict[str, list[str]] = {}
    for g in optimizer.param_groups:
        hyper = {k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items() if k in _GROUP_HYPER}
        groups.append({"name": g.get("name", ""), **hyper, "params": [names[id(p)] for p in g["params"]]})
        for p in g["params"]:
            st = optimizer.state.get(p)
            if not st:
                continue
            n = names[id(p)]
            keys = sorted(k for k, v in st.items() if k != "step" and torch.is_tensor(v))
            for k in keys:
                tensors[f"optim.{n}.{k}"] = st[k].detach().to("cpu").contiguous()
            state_keys[n] = keys
            if "step" in st:
                step = st["step"]
                steps[n] = float(step.item() if torch.is_tensor(step) else step)
    adam_step = max(steps.values()) if steps else 0.0
    return tensors, {
        "algorithm": optimizer_algorithm(optimizer),
        "groups": groups,
        "step": adam_step,
        "param_steps": steps,
        "param_state": state_keys,
    }


def rng_snapshot() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"rng.torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    meta = {
        "python": [py_version, list(py_state), py_gauss],
        "numpy": {"key": np_state[0], "state": np_state[1].tolist(), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
    }
    return tensors, meta


def restore_rng(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["rng.torch_cpu"])
    cuda = sorted(k for k in tensors if k.startswith("rng.cuda."))
    if cuda and torch.cuda.is_available():
        states = [tensors[k] for k in cuda]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
    if "python" in meta:
        v, st, g = meta["python"]
        random.setstate((v, tuple(st), g))
    if "numpy" in meta:
        n = meta["numpy"]
        np.random.set_state((n["key"], np.array(n["state"], dtype=np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))


@dataclass
class CheckpointMeta:
    config_toml: str
    profile: str
    step: int
    tokens_seen: int
    tokenizer_sha256: str
    metrics: dict[str, Any]
    weight_tying: bool
    watch: dict[str, Any] | None = None  # EvalWatch state (best val loss and its counters)
    init_from: dict[str, Any] | None = None  # the weights the run started from (train.init_from)


def save_checkpoint(
    run_dir: Path | RunFolder,
    model: torch.nn.Module,
    optimizer: Any,
    meta: CheckpointMeta,
    data_state: dict,
    keep_last: int,
    best: bool = False,
) -> CheckpointRef:
    """Write weights, then state, then latest.json (and best.json when `best`); then drop checkpoints
    beyond keep_last, except the one best.json names.

    A trainer passes its RunFolder: every file goes through its identity check, so a run directory
    deleted or moved since the run started is never recreated (the write fails instead). A plain
    path is a folder created here (preflight, tests)."""
    folder = run_dir if isinstance(run_dir, RunFolder) else RunFolder.create(run_dir)
    ckpt_dir = folder.mkdir(CKPT_DIR)
    created = utc_now_iso()
    weights_meta = {
        "format": WEIGHTS_FORMAT,
        "kind": "weights",
        "config": meta.config_toml,
        "profile": meta.profile,
        "step": str(meta.step),
        "tokens_seen": str(meta.tokens_seen),
        "tokenizer_sha256": meta.tokenizer_sha256,
        "metrics": json.dumps(meta.metrics, allow_nan=True),
        "jepa_version": __version__,
        "torch_version": torch.__version__,
        "created": created,
        "weight_tying": "true" if meta.weight_tying else "false",
    }
    if meta.watch is not None:
        weights_meta["eval_watch"] = json.dumps(meta.watch, allow_nan=True)
    if meta.init_from is not None:
        weights_meta["init_from"] = json.dumps(meta.init_from)
    w_path = _save_tensors(folder, f"{CKPT_DIR}/{weights_name(meta.step)}", model_tensors(model), weights_meta)

    opt_tensors, opt_meta = optimizer_tensors(model, optimizer)
    rng_tensors, rng_meta = rng_snapshot()
    state_meta = {
        "format": STATE_FORMAT,
        "kind": "state",
        "step": str(meta.step),
        "tokens_seen": str(meta.tokens_seen),
        "optimizer": json.dumps(opt_meta),
        "data": json.dumps(data_state),
        "rng": json.dumps(rng_meta),
        "created": created,
        "jepa_version": __version__,
        "torch_version": torch.__version__,
    }
    s_path = _save_tensors(folder, f"{CKPT_DIR}/{state_name(meta.step)}", {**opt_tensors, **rng_tensors}, state_meta)

    folder.write_text(f"{CKPT_DIR}/{LATEST}", pointer_text(meta.step))
    if best:
        best_text = pointer_text(meta.step, val_loss=meta.metrics.get("val_loss"), val_bpb=meta.metrics.get("val_bpb"))
        folder.write_text(f"{CKPT_DIR}/{BEST}", best_text)
    _rotate(ckpt_dir, keep_last, meta.step)
    return CheckpointRef(run_dir=folder.path, step=meta.step, weights=w_path, state=s_path)


def _rotate(ckpt_dir: Path, keep_last: int, current: int) -> None:
    """Keep the keep_last newest checkpoints up to `current`, the one just written.

    Checkpoints past `current` belong to a line this run abandoned (it resumed
    from an earlier one); they are neither counted nor deleted here, so the
    checkpoint just written can never be rotated away by them.
    """
    try:
        best = read_best(ckpt_dir.parent)
    except CheckpointError:
        best = None  # an unreadable best.json protects nothing; latest.json still names a good checkpoint
    steps = [ref.step for ref in list_checkpoints(ckpt_dir) if ref.step <= current and (best is None or ref.step != best.step)]
    for step in steps[:-keep_last] if keep_last > 0 else []:
        for name in (weights_name(step), state_name(step)):
            try:
                (ckpt_dir / name).unlink()
            except FileNotFoundError:
                pass


def read_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except FileNotFoundError:
        raise CheckpointError(f"Checkpoint {path} does not exist.") from None
    except Exception as e:  # safetensors raises its own error types for bad headers
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint ({e}).") from None


def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except FileNotFoundError:
        raise CheckpointError(f"Checkpoint {path} does not exist.") from None
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint ({e}).") from None


def load_weights_into(model: torch.nn.Module, path: Path) -> dict[str, str]:
    """Load a weights file into `model` (strict); returns its metadata."""
    meta = read_metadata(path)
    if meta.get("format") != WEIGHTS_FORMAT:
        raise CheckpointError(f"{path} is not a jepa weights file (format {meta.get('format')!r}).")
    tensors = load_tensors(path)
    target = unwrap(model)
    missing, unexpected = target.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}.",
            hint="The checkpoint was written by a run with a different model shape or teacher.",
        )
    return meta


def load_state_into(model: torch.nn.Module, optimizer: Any, path: Path) -> dict[str, Any]:
    """Restore the optimizer state and RNG states; returns the decoded metadata (data position, step)."""
    meta = read_metadata(path)
    if meta.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path} is not a jepa state file (format {meta.get('format')!r}).")
    tensors = load_tensors(path)
    opt_meta = json.loads(meta["optimizer"])
    named = dict(unwrap(model).named_parameters())
    saved_groups = [g.get("name", "") for g in opt_meta["groups"]]
    current_groups = [g.get("name", "") for g in optimizer.param_groups]
    if saved_groups != current_groups:
        raise CheckpointError(
            f"{path} holds optimizer groups {saved_groups}, this run builds {current_groups}.",
            hint="The optimizer (optim.optimizer) changed since the checkpoint was written; resume with the same one.",
        )
    for g, saved in zip(optimizer.param_groups, opt_meta["groups"], strict=True):
        current = [n for n, p in named.items() if any(p is q for q in g["params"])]
        if sorted(current) != sorted(saved["params"]):
            raise CheckpointError(f"{path}: optimizer group `{saved['name']}` holds different parameters than this model.")
    # fused/capturable AdamW keeps its step counter on the parameter's device
    step_on_device = {
        id(p): bool(g.get("fused") or g.get("capturable")) for g in optimizer.param_groups for p in g["params"]
    }
    steps = opt_meta["param_steps"]
    # state files from before `param_state` existed hold AdamW moments only
    state_keys = opt_meta["param_state"] if "param_state" in opt_meta else {n: ["exp_avg", "exp_avg_sq"] for n in steps}
    for name, keys in state_keys.items():
        p = named[name]
        st: dict[str, Any] = {k: tensors[f"optim.{name}.{k}"].to(p.device) for k in keys}
        if name in steps:
            st["step"] = torch.tensor(float(steps[name]), dtype=torch.float32, device=p.device if step_on_device[id(p)] else "cpu")
        optimizer.state[p] = st
    restore_rng(tensors, json.loads(meta["rng"]))
    return {
        "step": int(meta["step"]),
        "tokens_seen": int(meta["tokens_seen"]),
        "data": json.loads(meta["data"]),
    }
