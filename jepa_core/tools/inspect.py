"""The engine behind `jepa inspect`: read a checkpoint without building the model.

Only the safetensors header is read (standard library: an 8-byte little-endian
length N, then N bytes of JSON), so inspecting a large checkpoint costs one
small read, and a hostile or broken file is refused before anything big is
allocated. Tensor data is touched only for `stats=True` (norms), one tensor at
a time through a read-only numpy memmap. torch and the training code are never
imported: a reader must keep working when the trainer is broken or absent.

The result is an `InspectReport`; `report.to_dict()` is the stable JSON form.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from jepa_core import rundir
from jepa_core.rundir.header import FLOAT_DTYPES, HeaderError
from jepa_core.rundir.header import read_header as read_raw_header
from jepa_core.model.roles import COUNT_OF_ROLE, EMBEDDING, param_role
from jepa_core.errors import CheckpointError

WEIGHTS_FORMAT = "jepa-weights/1"
STATE_FORMAT = "jepa-state/1"
KNOWN_FORMATS = {WEIGHTS_FORMAT: "weights", STATE_FORMAT: "state"}


#: State-dict leaves that are buffers, not parameters (RoPE tables, masks), should a model persist them.
BUFFER_LEAVES = {"inv_freq", "cos", "sin", "cos_cached", "sin_cached", "freqs_cis", "mask", "causal_mask"}

#: Parameter categories, in display order.
CATEGORIES = ("backbone", "lm_head", "jepa_heads", "teacher", "other", "buffers")

#: Eval-line keys that are bookkeeping, not metrics.
_NOT_METRICS = {"type", "step", "time", "tokens", "elapsed"}


# --------------------------------------------------------------------------- data


@dataclass
class TensorInfo:
    name: str
    dtype: str
    shape: list[int]
    params: int  # number of elements
    nbytes: int
    offsets: list[int]  # [begin, end) relative to the data section
    category: str
    module: str
    norm: float | None = None  # L2 norm (float64) with stats; None when not computed or not a float tensor
    nonfinite: int | None = None  # count of NaN/inf elements, computed only when the norm is not finite


@dataclass
class ModuleInfo:
    name: str
    section: str  # first dotted component: transformer, jepa, teacher, optim, rng, ...
    tensors: list[str]
    params: int
    nbytes: int
    norm: float | None = None  # sqrt of the sum of its tensors' squared norms
    repeat: str | None = None  # "transformer.blocks" for transformer.blocks.3: collapsible


@dataclass
class SafetensorsHeader:
    path: Path
    file_size: int
    header_size: int
    metadata: dict[str, str]
    tensors: list[TensorInfo]

    @property
    def data_start(self) -> int:
        return 8 + self.header_size


@dataclass
class InspectReport:
    path: str
    file_size: int
    header_size: int
    is_jepa: bool
    format: str | None
    kind: str | None  # "weights", "state" or None
    profile: str | None
    step: int | None
    tokens_seen: int | None
    created: str | None
    jepa_version: str | None
    torch_version: str | None
    tokenizer_sha256: str | None
    weight_tying: bool | None
    metrics: dict[str, Any] | None
    config_toml: str | None
    config_summary: dict[str, Any] | None
    tensors: list[TensorInfo]
    modules: list[ModuleInfo]
    totals: dict[str, int]
    params: dict[str, int] | None  # per category, plus "trainable" and "total"; jepa weights files only
    tied_embedding: str | None  # the embedding the LM head shares, with weight tying
    optimizer: dict[str, Any] | None = None  # state files
    rng: dict[str, Any] | None = None
    data: Any = None
    stats: bool = False
    source: str | None = None  # how a directory was resolved to this file
    state_file: str | None = None  # the companion state file of a weights file, when present
    available_steps: list[int] = field(default_factory=list)  # weights checkpoints next to this file
    extra_metadata: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    init_from: dict[str, Any] | None = None  # the weights the run started from (train.init_from)
    payload_digest: str | None = None  # ALGORITHM:HEX over the tensors, recorded when the file was written
    # with --verify: per file checked (this one, and its state file), {"file", "status", "detail"};
    # status "verified", "unverified" (no digest: a note) or "failed" (the problem in detail)
    verified: list[dict[str, str]] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for t in d["tensors"]:
            t.pop("offsets")
        return d


# --------------------------------------------------------------------------- header


def read_header(path: str | Path) -> SafetensorsHeader:
    """Parse and validate a safetensors header (`rundir.header.read_header`); reads nothing beyond it.

    Every problem is a `CheckpointError` naming the file and what is wrong.
    """
    path = Path(path)
    try:
        h = read_raw_header(path)
    except FileNotFoundError:
        raise CheckpointError(f"{path} does not exist.", hint="Pass a .safetensors checkpoint or a run directory.") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path} is a directory, not a checkpoint file.") from None
    except HeaderError as e:
        raise CheckpointError(e.about(path), hint=e.hint or None) from None
    except OSError as e:
        raise CheckpointError(f"Cannot read {path}: {e.strerror or e}.") from None
    tensors = [
        TensorInfo(
            name=e.name,
            dtype=e.dtype,
            shape=list(e.shape),
            params=e.numel,
            nbytes=e.end - e.begin,
            offsets=[e.begin, e.end],
            category=param_category(e.name, e.dtype, len(e.shape)),
            module=module_of(e.name),
        )
        for e in h.entries
    ]
    # the file orders tensors by offset; sort by part, then name, so blocks read 0, 1, 2, ... and output is stable
    tensors.sort(key=lambda t: (_section_rank(t.name), _natural_key(t.name)))
    return SafetensorsHeader(path=path, file_size=h.file_size, header_size=h.header_size, metadata=h.metadata, tensors=tensors)


_SECTION_ORDER = ("transformer", "jepa", "teacher", "optim", "rng")


def _section_rank(name: str) -> int:
    section = name.split(".", 1)[0]
    return _SECTION_ORDER.index(section) if section in _SECTION_ORDER else len(_SECTION_ORDER)


def _natural_key(name: str) -> list[Any]:
    # digit runs compare as numbers: blocks.2 before blocks.10, retrieval_top1_h8 before _h32
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", name) if p]


# --------------------------------------------------------------------------- naming


def param_category(name: str, dtype: str = "F32", ndim: int = 2, tied: bool = False) -> str:
    """Which part of the model a state-dict entry belongs to (see CATEGORIES): the model's own
    `param_role` for jepa names, "buffers" for non-float or RoPE tables, "other" for foreign names."""
    leaf = name.rsplit(".", 1)[-1]
    if dtype not in FLOAT_DTYPES or leaf in BUFFER_LEAVES:
        return "buffers"
    if not name.startswith(("teacher.", "jepa.", "transformer.")):
        return "other"
    return COUNT_OF_ROLE[param_role(name, ndim, tied)]


_REPEAT_CONTAINERS = {"blocks", "layers", "layer", "h"}


def module_of(name: str) -> str:
    """The module row a tensor is listed under.

    A repeated block keeps its index (`transformer.blocks.3`); a Sequential's numbered
    children fold into the container (`jepa.online_proj.0.weight` -> `jepa.online_proj`);
    optimizer moments fold by kind (`optim.exp_avg`); otherwise the owner module, or the
    name itself for a top-level parameter such as `transformer.logit_scale`.
    """
    parts = name.split(".")
    if parts[0] == "optim" and len(parts) >= 3:
        return f"optim.{parts[-1]}"
    for i, p in enumerate(parts):
        if p.isdigit() and i > 0:
            if parts[i - 1] in _REPEAT_CONTAINERS:
                return ".".join(parts[: i + 1])
            return ".".join(parts[:i])
    return ".".join(parts[:-1]) if len(parts) >= 3 else name


def _repeat_of(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) >= 2 and parts[-1].isdigit() and parts[-2] in _REPEAT_CONTAINERS:
        return ".".join(parts[:-1])
    return None


def group_modules(tensors: list[TensorInfo]) -> list[ModuleInfo]:
    """Tensors folded into module rows, in first-seen order of the (sorted) tensor list."""
    out: dict[str, ModuleInfo] = {}
    for t in tensors:
        m = out.get(t.module)
        if m is None:
            m = out[t.module] = ModuleInfo(
                name=t.module, section=t.module.split(".")[0], tensors=[], params=0, nbytes=0, repeat=_repeat_of(t.module)
            )
        m.tensors.append(t.name)
        m.params += t.params
        m.nbytes += t.nbytes
    return list(out.values())


def split_params(tensors: list[TensorInfo]) -> dict[str, int]:
    """Parameter counts per category, plus `trainable` (backbone + LM head + JEPA heads + other) and `total`."""
    counts = {c: 0 for c in CATEGORIES}
    for t in tensors:
        counts[t.category] += t.params
    counts["trainable"] = counts["backbone"] + counts["lm_head"] + counts["jepa_heads"] + counts["other"]
    counts["total"] = counts["trainable"] + counts["teacher"]
    return counts


# --------------------------------------------------------------------------- norms


def compute_norms(header: SafetensorsHeader, chunk: int = 1 << 22) -> None:
    """Fill `norm` (float64 L2) for every float tensor, reading one chunk of one tensor at a time."""
    import numpy as np

    if not header.tensors:
        return
    mm = np.memmap(header.path, dtype=np.uint8, mode="r")
    try:
        for t in header.tensors:
            np_dtype = {"F16": np.float16, "F32": np.float32, "F64": np.float64, "BF16": np.uint16}.get(t.dtype)
            if np_dtype is None or t.params == 0:
                if np_dtype is not None:
                    t.norm = 0.0
                continue
            start = header.data_start + t.offsets[0]
            flat = np.frombuffer(mm, dtype=np_dtype, count=t.params, offset=start)
            total = 0.0
            for i in range(0, t.params, chunk):
                x = _widen(flat[i : i + chunk], t.dtype)
                # float64 products and sum without a float64 copy (einsum casts in small buffers)
                total += float(np.einsum("i,i->", x, x, dtype=np.float64))
            t.norm = math.sqrt(total)
            if not math.isfinite(t.norm):
                t.nonfinite = sum(
                    int((~np.isfinite(_widen(flat[i : i + chunk], t.dtype))).sum()) for i in range(0, t.params, chunk)
                )
                t.norm = None if t.nonfinite else t.norm
    finally:
        del mm


def _widen(x, dtype: str):
    import numpy as np

    if dtype == "BF16":  # bf16 is the top half of an fp32: widen the bits, then reinterpret
        return (x.astype(np.uint32) << 16).view(np.float32)
    return x


# --------------------------------------------------------------------------- resolution


def resolve_checkpoint(path: str | Path) -> tuple[Path, str | None]:
    """A file, a run directory, a checkpoints/ folder or `RUN:best` -> (the file to read, how it was chosen)."""
    ref, how = rundir.resolve_checkpoint(path)
    if how is None:  # a file: read that file itself, weights or state
        return Path(path), None
    return ref.weights, how


# --------------------------------------------------------------------------- metadata


def _int_or_none(value: str | None, key: str, warnings: list[str]) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        warnings.append(f"metadata `{key}` is not an integer: {value!r}")
        return None


def _json_or_none(value: str | None, key: str, warnings: list[str]) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError as e:
        warnings.append(f"metadata `{key}` is not valid JSON ({e})")
        return None


def summarize_config(toml_text: str, tensors: list[TensorInfo]) -> dict[str, Any]:
    """The few keys that identify a model, from the stored TOML (read with tomllib: no pydantic, no validation)."""
    cfg = tomllib.loads(toml_text)
    model, jepa, data = cfg.get("model", {}), cfg.get("jepa", {}), cfg.get("data", {})
    emb = next((t for t in tensors if t.name == "transformer.tok_emb.weight" and len(t.shape) == 2), None)
    baseline = jepa.get("run_baseline")
    summary = {
        "name": cfg.get("name"),
        "d_model": model.get("d_model"),
        "n_layers": model.get("n_layers"),
        "n_heads": model.get("n_heads"),
        # the tokenizer sets the vocabulary; the embedding shows the size actually trained
        "vocab_size": emb.shape[0] if emb else data.get("vocab_size"),
        "block_size": data.get("block_size"),
        "dataset": data.get("dataset"),
        "weight_tying": model.get("weight_tying"),
        "run_baseline": baseline,
    }
    if not baseline:
        summary.update(
            teacher=jepa.get("teacher"),
            tap_layer=model.get("tap_layer"),
            latent_dim=jepa.get("latent_dim"),
            horizons=jepa.get("horizons"),
        )
    return summary


def trained_on(config_toml: str, step: int | None, tokens_seen: int | None) -> str | None:
    """"fsdp x2" / "ddp x2" for a checkpoint trained by several ranks, else None.

    The world size is not in the metadata but follows from it: every step trains
    batch_size x block_size x grad_accum_steps tokens on each rank."""
    cfg = tomllib.loads(config_toml)
    train, data = cfg.get("train", {}), cfg.get("data", {})
    try:
        per_rank = int(step) * int(train.get("batch_size")) * int(data.get("block_size")) * int(train.get("grad_accum_steps", 1))
        world, rest = divmod(int(tokens_seen), per_rank)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if rest or world <= 1:
        return None
    return f"{'fsdp' if train.get('parallel') == 'fsdp' else 'ddp'} x{world}"


def _optimizer_summary(opt: Any, tensors: list[TensorInfo], warnings: list[str]) -> dict[str, Any]:
    groups_raw = opt.get("groups") if isinstance(opt, dict) else opt if isinstance(opt, list) else None
    groups = []
    for g in groups_raw or []:
        if not isinstance(g, dict):
            continue
        params = g.get("params")
        n = len(params) if isinstance(params, list) else params if isinstance(params, int) else None
        hyper = {k: v for k, v in g.items() if k not in ("params", "name")}
        groups.append({"name": g.get("name") or "", "n_params": n, **hyper})
    if groups_raw is None:
        warnings.append("metadata `optimizer` has no `groups` list")
    moments: dict[str, dict[str, int]] = {}
    covered: set[str] = set()
    elements = 0
    for t in tensors:
        if t.name.startswith("optim."):
            base, _, kind = t.name[len("optim.") :].rpartition(".")
            m = moments.setdefault(kind, {"tensors": 0, "elements": 0, "bytes": 0})
            m["tensors"] += 1
            m["elements"] += t.params
            m["bytes"] += t.nbytes
            covered.add(base)
            elements += t.params
    step = opt.get("step") if isinstance(opt, dict) else None
    algorithm = opt.get("algorithm") if isinstance(opt, dict) else None
    return {
        "algorithm": algorithm if isinstance(algorithm, str) else "adamw",
        "groups": groups,
        "step": int(step) if isinstance(step, (int, float)) and math.isfinite(step) else None,
        "moments": moments,
        "moment_tensors": sum(m["tensors"] for m in moments.values()),
        "moment_bytes": sum(m["bytes"] for m in moments.values()),
        "params_with_moments": len(covered),
    }


def _rng_summary(rng: Any, tensors: list[TensorInfo]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for t in tensors:
        if t.name.startswith("rng."):
            out[t.name[len("rng.") :]] = f"{t.dtype} tensor, {t.nbytes:,} bytes"
    if isinstance(rng, dict):
        for key, value in rng.items():
            out[key] = _describe_rng(value)
    return out


def _describe_rng(value: Any) -> str:
    if isinstance(value, list) and len(value) == 3 and isinstance(value[1], list):
        return f"Mersenne Twister, {len(value[1])} words"  # random.getstate()
    if isinstance(value, dict):
        name = value.get("key") or value.get("bit_generator")
        state = value.get("state")
        size = f", {len(state)} words" if isinstance(state, list) else ""
        return f"{name}{size}" if name else f"{len(value)} fields"
    if isinstance(value, list):
        return f"{len(value)} entries"
    return type(value).__name__


# --------------------------------------------------------------------------- report


def inspect_checkpoint(path: str | Path, stats: bool = False, verify: bool = False) -> InspectReport:
    """Everything `jepa inspect` shows about a checkpoint file, run directory or checkpoints/ folder;
    with `verify`, also `verified` (`_verify_files`)."""
    target, source = resolve_checkpoint(path)
    header = read_header(target)
    if stats:
        compute_norms(header)
    meta = dict(header.metadata)
    warnings: list[str] = []
    fmt = meta.pop("format", None)
    is_jepa = fmt is not None and fmt.startswith("jepa-")
    kind = meta.pop("kind", None) or KNOWN_FORMATS.get(fmt or "")
    if is_jepa and fmt not in KNOWN_FORMATS:
        warnings.append(f"format {fmt!r} is newer or other than this jepa reads ({', '.join(KNOWN_FORMATS)}); shown as best effort")

    metrics = _json_or_none(meta.pop("metrics", None), "metrics", warnings)
    if metrics is not None and not isinstance(metrics, dict):
        warnings.append("metadata `metrics` is not a JSON object")
        metrics = None
    config_toml = meta.pop("config", None)
    config_summary = None
    if config_toml is not None:
        try:
            config_summary = summarize_config(config_toml, header.tensors)
        except tomllib.TOMLDecodeError as e:
            warnings.append(f"metadata `config` is not valid TOML ({e})")
    tying_raw = meta.pop("weight_tying", None)
    tying = {"true": True, "false": False}.get(tying_raw) if tying_raw is not None else None
    names = {t.name for t in header.tensors}
    if tying is None and kind == "weights":
        tying = "transformer.lm_head.weight" not in names and "transformer.tok_emb.weight" in names

    modules = group_modules(header.tensors)
    if stats:
        by_name = {t.name: t for t in header.tensors}
        for m in modules:
            norms = [by_name[n].norm for n in m.tensors if by_name[n].norm is not None]
            m.norm = math.sqrt(sum(x * x for x in norms)) if norms else None

    report = InspectReport(
        path=str(target),
        file_size=header.file_size,
        header_size=header.header_size,
        is_jepa=is_jepa,
        format=fmt,
        kind=kind,
        profile=meta.pop("profile", None),
        step=_int_or_none(meta.pop("step", None), "step", warnings),
        tokens_seen=_int_or_none(meta.pop("tokens_seen", None), "tokens_seen", warnings),
        created=meta.pop("created", None),
        jepa_version=meta.pop("jepa_version", None),
        torch_version=meta.pop("torch_version", None),
        tokenizer_sha256=meta.pop("tokenizer_sha256", None),
        weight_tying=tying,
        metrics=metrics,
        config_toml=config_toml,
        config_summary=config_summary,
        tensors=header.tensors,
        modules=modules,
        totals={
            "tensors": len(header.tensors),
            "params": sum(t.params for t in header.tensors),
            "bytes": sum(t.nbytes for t in header.tensors),
        },
        params=None,
        tied_embedding=None,
        stats=stats,
        source=source,
    )
    if is_jepa and kind != "state":  # the split means nothing for another project's tensor names
        if tying and EMBEDDING in names:
            report.tied_embedding = EMBEDDING
            for t in header.tensors:  # the tied embedding is the LM head's weight (roles.py)
                t.category = param_category(t.name, t.dtype, len(t.shape), tied=True)
        report.params = split_params(header.tensors)
    if kind == "state":
        opt = _json_or_none(meta.pop("optimizer", None), "optimizer", warnings)
        report.optimizer = _optimizer_summary(opt, header.tensors, warnings) if opt is not None else None
        report.rng = _rng_summary(_json_or_none(meta.pop("rng", None), "rng", warnings), header.tensors)
        report.data = _json_or_none(meta.pop("data", None), "data", warnings)
    report.init_from = _json_dict(meta.pop("init_from", None), "init_from", warnings)
    report.payload_digest = meta.pop(rundir.digest.DIGEST_KEY, None)
    report.extra_metadata = meta
    if config_summary is not None and (trained := trained_on(config_toml, report.step, report.tokens_seen)):
        config_summary["parallel"] = trained
    _neighbours(report, target)
    if not is_jepa:
        warnings.insert(0, "not a jepa checkpoint: no jepa `format` metadata (tensors shown; nothing else is known)")
    report.warnings = warnings
    if verify:
        report.verified = _verify_files(report)
    return report


def _neighbours(report: InspectReport, target: Path) -> None:
    """The checkpoint's state file and the other steps beside it."""
    ckpt_dir = target.parent
    step = rundir.weights_step(target)
    if step is not None:
        state = ckpt_dir / rundir.state_name(step)
        report.state_file = str(state) if state.is_file() else None
    if step is not None or target.name.endswith(".state.safetensors"):
        try:
            report.available_steps = [ref.step for ref in rundir.list_checkpoints(ckpt_dir)]
        except CheckpointError:
            pass  # a listing is a nicety; the file itself was readable


def _json_dict(raw: str | None, key: str, warnings: list[str]) -> dict[str, Any] | None:
    value = _json_or_none(raw, key, warnings)
    return value if isinstance(value, dict) else None


def _verify_files(report: InspectReport) -> list[dict[str, str]]:
    """The file, and the state file of a weights file that has one, checked as every loader checks
    them (`rundir.check_file`: the whole header and the payload digest); `verification_problem`
    turns a failure into the error to raise."""
    files = [(report.kind or "weights", Path(report.path))]
    if report.state_file and report.kind != "state":
        files.append(("state", Path(report.state_file)))
    return [_verify_file(p, k) for k, p in files]


def _verify_file(path: Path, kind: str) -> dict[str, str]:
    check = rundir.check_file(path, kind)
    if check.problem is not None:
        return {"file": str(path), "status": "failed", "detail": check.problem}
    if check.unverified is not None:
        return {"file": str(path), "status": "unverified", "detail": check.unverified}
    algorithm = (rundir.digest.parse(check.metadata.get(rundir.digest.DIGEST_KEY, "")) or ("?", ""))[0]
    return {"file": str(path), "status": "verified", "detail": f"its tensor bytes match the {algorithm} digest recorded when it was written"}


def verification_problem(report: InspectReport) -> CheckpointError | None:
    """The error `jepa inspect --verify` ends with when a file failed its check, else None."""
    failed = [v for v in report.verified or [] if v["status"] == "failed"]
    if not failed:
        return None
    return CheckpointError(
        f"{report.path} does not verify: {'; '.join(v['detail'] for v in failed)}.",
        hint="Use an earlier checkpoint: `jepa train --resume RUN` sets a corrupt newest checkpoint aside (NAME.corrupt) and "
        "resumes from the newest that verifies, and `jepa sample RUN` / `jepa export RUN` use that one. Or re-copy the file.",
    )


def metric_items(metrics: dict[str, Any] | None) -> list[tuple[str, Any]]:
    """The eval metrics worth showing, in a fixed order: LM metrics, retrieval, rank, then the rest."""
    if not metrics:
        return []
    first = [k for k in ("val_bpb", "val_loss", "val_ppl") if k in metrics]
    # per-horizon top-1 values first, the margin after them
    retrieval = sorted((k for k in metrics if k.startswith("retrieval_")), key=lambda k: ("top1" not in k, _natural_key(k)))
    rank = [k for k in ("eff_rank",) if k in metrics]
    seen = set(first) | set(retrieval) | set(rank) | _NOT_METRICS
    rest = sorted(k for k in metrics if k not in seen)
    return [(k, metrics[k]) for k in first + retrieval + rank + rest]
