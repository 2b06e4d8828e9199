"""Starting a run from trained weights: `train.init_from`, `jepa train --init-from SRC` (docs/finetune.md).

Weights only: the run itself is new (step 0, a fresh optimizer, LR schedule and data position).

- SRC is a run directory (`RUN`, `RUN:best`, `RUN:step-N`, resolved as `jepa sample` resolves
  them), a weights file written by `jepa train`, or `hf:DIR`, a Hugging Face model directory
  that `model.hf.read_hf_model` reads as data (config.json and safetensors; no code is run).
- Shape: the model keys that decide the LM's tensors or what it computes must equal the
  source's; a config that differs exits 2 naming each key, both values and the `--set` flags
  that match. Keys that change neither (dropout, init_std, grad_barrier, tap_norm, ...) may differ.
- Parts: the LM (backbone and head) is taken whole from SRC. A JEPA part the source has is
  loaded; one it lacks keeps its name-seeded init (`transformer.normal_by_name_`), except the
  EMA teacher's tensors, which copy their online counterparts after the load, as at any start.
  Parts of SRC the new run has no place for are dropped. A note says which.
- Tokenizer: SRC's. `data_config` swaps it into the data config, so the token cache, keyed by
  the tokenizer's sha256, is the one for that tokenizer; no BPE is trained.
- Resume: a run started from SRC resumes from its own checkpoints like any run; SRC is not read
  again (its tokenizer is the run's own tokenizer.json by then). The checkpoints carry the
  record of SRC (`init_from` metadata), so every segment's run_start names it.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from jepa_core import rundir as rd
from jepa_core.config import Config, DataConfig, toml_value
from jepa_core.errors import CheckpointError, ConfigError, DataError

HF_PREFIX = "hf:"
RECORD_KEY = "init_from"  # in run_start and in the weights files' metadata

# model keys that decide the LM's tensors or what it computes
_LM_KEYS = ("d_model", "n_layers", "n_heads", "rope_base", "norm_eps", "weight_tying", "logit_bias")
# the JEPA heads' shapes, compared when both the source and the new run have heads
_HEAD_KEYS = ("latent_dim", "hidden_mult")
# tensors only some runs build: the ones a source may lack or the new run may not use
_OPTIONAL = ("jepa.", "teacher.", "transformer.tap_norm.", "transformer.lm_bridge.", "transformer.bridge_gate")
_BIAS = "transformer.out_bias"


@dataclass
class InitSource:
    """What SRC is, read from its header (a weights file) or config.json (hf:) without its tensors."""

    given: str  # as the user wrote it
    kind: str  # "run", "checkpoint" or "hf"
    path: Path  # the weights file, or the HF directory
    step: int | None  # the checkpoint's step (None for hf:)
    model: dict[str, Any]  # the source's [model] values (for hf:, those its directory fixes)
    jepa: dict[str, Any] | None  # the source's [jepa] values when it has JEPA heads
    names: frozenset[str]  # its tensor names, in jepa's parameter names
    vocab_size: int  # rows of its token embedding
    tokenizer: Path | None
    notes: list[str] = field(default_factory=list)  # what reading it converted or dropped (hf:)
    _load: Callable[[], dict[str, torch.Tensor]] = field(default=lambda: {}, repr=False)

    @property
    def has_bridge(self) -> bool:
        return any(n.startswith("transformer.lm_bridge.") for n in self.names)

    def describe(self) -> str:
        return f"{self.given} (step {self.step})" if self.step is not None else self.given

    def tensors(self) -> dict[str, torch.Tensor]:
        return self._load()

    def record(self) -> dict[str, Any]:
        """What run_start and the checkpoints record (the digest is added once the weights are loaded)."""
        return {"source": self.given, "kind": self.kind, "path": str(self.path.resolve()), "step": self.step}


# --------------------------------------------------------------------------- resolving SRC


def resolve_source(text: str) -> InitSource:
    """The source `text` names; CheckpointError (exit 2, with what to do) for anything unusable."""
    text = text.strip()
    if not text:
        raise ConfigError("train.init_from is empty.", hint="Name a run directory, a weights file or hf:DIR, or leave the key out.")
    if text.startswith(HF_PREFIX):
        return _hf_source(text)
    return _checkpoint_source(text)


def _checkpoint_source(text: str) -> InitSource:
    from jepa_core.config import config_from_toml
    from jepa_core.train.checkpoint import WEIGHTS_FORMAT

    if not Path(text).exists() and not re.search(r":(best|step-\d+)$", text):
        raise CheckpointError(
            f"Cannot start from {text}: there is no such file or folder.",
            hint="Pass a run directory (RUN, RUN:best, RUN:step-N), a step-*.safetensors weights file, or hf:DIR for a Hugging Face model folder.",
        )
    try:
        # the one verifying resolver (header, then the payload digest): a damaged newest
        # checkpoint of a run falls back to the newest that verifies, said in a note
        ref, _ = rd.verified_checkpoint(text, state=False)
    except CheckpointError as e:
        raise CheckpointError(f"Cannot start from {text}: {_lower_first(e.message)}",
                              hint=e.hint or "Pass a run directory (RUN, RUN:best, RUN:step-N), a weights file or hf:DIR.") from None
    path = ref.weights
    if not path.is_file():
        raise CheckpointError(f"Cannot start from {text}: {path} does not exist (a state file has no weights file beside it).",
                              hint="Pass the run directory or its step-*.safetensors weights file.")
    try:
        header = rd.read_header(path, whole=True)
    except rd.HeaderError as e:
        raise CheckpointError(f"Cannot start from {text}: {e.about(path)}", hint=e.hint or "Pass another checkpoint of the run (RUN:step-N).") from None
    except OSError as e:
        raise CheckpointError(f"Cannot start from {text}: cannot read {path} ({e.strerror or e}).") from None
    meta = header.metadata
    if meta.get("format") != WEIGHTS_FORMAT or "config" not in meta:
        raise CheckpointError(
            f"Cannot start from {text}: {path} is not a weights checkpoint written by `jepa train` "
            f"({meta.get('kind') or meta.get('format') or 'no jepa metadata'}).",
            hint="Pass a run directory, its step-*.safetensors weights file, or a Hugging Face model directory as hf:DIR; "
            "`jepa inspect FILE` shows what a file holds.",
        )
    cfg = config_from_toml(meta["config"], source=str(path))
    names = frozenset(e.name for e in header.entries)
    emb = next((e for e in header.entries if e.name == "transformer.tok_emb.weight"), None)
    if emb is None or len(emb.shape) != 2:
        raise CheckpointError(f"Cannot start from {text}: {path} holds no token embedding (transformer.tok_emb.weight).",
                              hint="Pass a weights checkpoint written by `jepa train`.")
    tokenizer = rd.checkpoint_tokenizer(ref, meta.get("tokenizer_sha256"))
    step = int(meta["step"]) if str(meta.get("step", "")).isdigit() else (ref.step if ref.step >= 0 else None)
    has_heads = any(n.startswith("jepa.") for n in names)

    def load() -> dict[str, torch.Tensor]:
        from jepa_core.train.checkpoint import load_tensors

        return load_tensors(path)

    return InitSource(
        given=text, kind="checkpoint" if Path(text).is_file() else "run", path=path, step=step,
        model=cfg.model.model_dump(), jepa=cfg.jepa.model_dump() if has_heads else None, names=names,
        vocab_size=int(emb.shape[0]), tokenizer=tokenizer, _load=load,
        notes=[f"{text}: {n}" for n in (ref.note, rd.unverified_note(ref)) if n],
    )


def _hf_source(text: str) -> InitSource:
    from jepa_core.model.hf import read_hf_model

    path = Path(text[len(HF_PREFIX):]).expanduser()
    hf = read_hf_model(path)
    tensors = dict(hf.tensors)
    return InitSource(
        given=text, kind="hf", path=hf.path, step=None, model=dict(hf.model), jepa=None, names=frozenset(tensors),
        vocab_size=int(hf.vocab_size), tokenizer=hf.tokenizer, notes=[f"{text}: {n}" for n in hf.notes], _load=lambda: tensors,
    )


def _lower_first(s: str) -> str:
    """A message continued after a colon: "No tokenizer..." -> "no tokenizer...", but "GPT2 ..." stays."""
    return s[:1].lower() + s[1:] if s[:1].isupper() and s[1:2].islower() else s


# --------------------------------------------------------------------------- checking a config against SRC


def mismatches(cfg: Config, src: InitSource) -> list[tuple[str, Any, Any, list[str]]]:
    """(what, the source's value, the config's value, the --set values that match) for every
    key on which `cfg` cannot take the source's weights; [] when it can."""
    from jepa_core.model.transformer import swiglu_hidden

    m, s = cfg.model, src.model
    out: list[tuple[str, Any, Any, list[str]]] = []
    for k in _LM_KEYS:
        if k in s and getattr(m, k) != s[k]:
            out.append((f"model.{k}", s[k], getattr(m, k), [f"model.{k}={toml_value(s[k])}"]))
    if all(k in s for k in ("d_model", "ff_multiplier", "ff_round")):
        want = swiglu_hidden(s["d_model"], s["ff_multiplier"], s["ff_round"])
        got = swiglu_hidden(s["d_model"], m.ff_multiplier, m.ff_round)  # at the source's width: d_model is reported on its own
        if want != got:
            out.append(("the SwiGLU size, model.ff_multiplier x d_model rounded up to model.ff_round,", want, got,
                        [f"model.ff_multiplier={toml_value(s['ff_multiplier'])}", f"model.ff_round={toml_value(s['ff_round'])}"]))
    builds_bridge = not cfg.jepa.run_baseline and m.lm_bridge
    if src.has_bridge and builds_bridge and "tap_layer" in s and "n_layers" in s:
        src_tap = s["tap_layer"] if s["tap_layer"] >= 0 else s["n_layers"] + s["tap_layer"]
        if src_tap != m.tap_index:
            out.append(("model.tap_layer, below the lm_bridge,", s["tap_layer"], m.tap_layer, [f"model.tap_layer={s['tap_layer']}"]))
    if src.jepa is not None and not cfg.jepa.run_baseline:
        j, sj = cfg.jepa, src.jepa
        for k in _HEAD_KEYS:
            if getattr(j, k) != sj[k]:
                out.append((f"jepa.{k}", sj[k], getattr(j, k), [f"jepa.{k}={toml_value(sj[k])}"]))
        if len(j.horizons) != len(sj["horizons"]):
            out.append(("the number of jepa.horizons", len(sj["horizons"]), len(j.horizons),
                        [f"jepa.horizons={toml_value(sj['horizons'])}", f"jepa.horizon_probs={toml_value(sj['horizon_probs'])}"]))
    return out


def check_shape(cfg: Config, src: InitSource) -> None:
    """ConfigError naming every key on which `cfg` disagrees with the source, with the flags that fix it."""
    bad = mismatches(cfg, src)
    if not bad:
        return
    what = "; ".join(f"{k} ({a!r} in the source, {b!r} here)" for k, a, b, _ in bad)
    sets = " ".join(f"--set {shlex.quote(x)}" for *_, xs in bad for x in xs)
    raise ConfigError(
        f"The model of profile `{cfg.name}` does not match {src.describe()}, so its weights cannot be loaded: {what}.",
        hint=f"The source decides the shape of the model: add {sets} (or set them in the profile). "
        "Keys that do not change the weights (dropout, init_std, grad_barrier, tap_norm) may differ.",
    )


def check_tokenizer(src: InitSource, data_cfg: DataConfig) -> tuple[Path, str]:
    """The tokenizer the run will use (SRC's) and its sha256, after checking it against the
    embedding's vocabulary and against a data.tokenizer the profile names."""
    from jepa_core.data.prepare import external_tokenizer
    from jepa_core.data.tokenizer import BPETokenizer

    if src.tokenizer is None:
        raise DataError(
            f"Cannot start from {src.given}: it has no tokenizer.json, and a run started from it must encode its data "
            "with the tokenizer the embedding was trained with.",
            hint=f"Put the model's tokenizer.json into {src.path}.",
        )
    try:
        path, sha = external_tokenizer(DataConfig(tokenizer=str(src.tokenizer)))  # byte-level and readable
        vocab = BPETokenizer.from_file(path).vocab_size
    except DataError as e:
        raise DataError(f"Cannot start from {src.given}: its tokenizer cannot be used: {_lower_first(e.message)}",
                        hint="jepa needs a byte-level BPE tokenizer.json (jepa's own, GPT-2's, Llama 3's, SmolLM's).") from None
    if vocab != src.vocab_size:
        raise DataError(
            f"Cannot start from {src.given}: its tokenizer {src.tokenizer} has {vocab} tokens but the token embedding has "
            f"{src.vocab_size} rows; text encoded with it would not match the embedding.",
            hint="Use the tokenizer.json saved with these weights (a run's own, or the model directory's).",
        )
    if data_cfg.tokenizer:
        _, own = external_tokenizer(data_cfg)
        if own != sha:
            raise ConfigError(
                f"data.tokenizer {data_cfg.tokenizer} is not the tokenizer of {src.given} ({src.tokenizer}); "
                "a run started from it encodes its data with the source's tokenizer.",
                hint='Leave data.tokenizer empty (--set data.tokenizer="") when starting from a source.',
            )
    return path, sha


def check_config(cfg: Config) -> InitSource | None:
    """The source `cfg.train.init_from` names, after every check a start from it makes before
    training (shape, tokenizer); None when the config starts from random weights."""
    if not cfg.train.init_from:
        return None
    src = resolve_source(cfg.train.init_from)
    check_shape(cfg, src)
    check_tokenizer(src, cfg.data)
    return src


def config_from_source(text: str, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """`jepa train --init-from SRC` without --profile: the source run's own config (plus `overrides`),
    started from SRC. A Hugging Face directory has no jepa config: it needs a profile."""
    import tomllib

    from jepa_core.config import apply_overrides, validate

    src = resolve_source(text)
    if src.kind == "hf":
        sets = " ".join(f"--set {shlex.quote(f'model.{k}={toml_value(v)}')}" for k, v in sorted(src.model.items()))
        raise ConfigError(
            f"`jepa train --init-from {text}` needs --profile: a Hugging Face model directory holds no jepa config.",
            hint=f"Name the profile to train with and the source's shape, e.g. jepa train --profile tiny --init-from {shlex.quote(text)} {sets}",
        )
    from jepa_core.train.checkpoint import read_metadata

    raw = tomllib.loads(read_metadata(src.path)["config"])
    raw.pop("extends", None)
    raw.setdefault("data", {})["tokenizer"] = ""  # the source's tokenizer is used whatever its config named
    raw.setdefault("train", {})["init_from"] = text
    return validate(apply_overrides(raw, overrides), source=f"the config of {src.path}")


# --------------------------------------------------------------------------- the data config


def data_config(cfg: Config, src: InitSource | None, resume: rd.CheckpointRef | None = None) -> DataConfig:
    """The data config a run prepares: `cfg.data`, with the source's tokenizer for a run started
    from one (a resumed one: its own copy, so that SRC need not exist any more)."""
    if not cfg.train.init_from:
        return cfg.data
    if resume is not None and (resume.run_dir / rd.TOKENIZER).is_file():
        tok = resume.run_dir / rd.TOKENIZER
    else:
        src = src or resolve_source(cfg.train.init_from)
        tok, _ = check_tokenizer(src, cfg.data)
    return cfg.data.model_copy(update={"tokenizer": str(Path(tok).resolve())})


# --------------------------------------------------------------------------- loading the weights


@dataclass
class Loaded:
    record: dict[str, Any]  # run_start's and the checkpoints' `init_from`
    notes: list[str]


def _group(names: list[str]) -> str:
    """`jepa.* (7), teacher.* (4), transformer.bridge_gate`: tensor names by the part they belong to."""
    counts: dict[str, int] = {}
    for n in sorted(names):
        parts = n.split(".")
        key = parts[0] if parts[0] in ("jepa", "teacher") else ".".join(parts[:2])
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{k}.* ({c})" if c > 1 or k in ("jepa", "teacher") else k for k, c in counts.items())


@torch.no_grad()
def load_into(model: torch.nn.Module, src: InitSource) -> Loaded:
    """Load SRC's weights into a freshly built `model` (a JepaLM) by the rules in the module docstring."""
    from jepa_core.train.checkpoint import tensors_digest, unwrap

    target = unwrap(model)
    own = target.state_dict(keep_vars=True)
    tensors = dict(src.tensors())
    if _BIAS in tensors and _BIAS not in own and not tensors[_BIAS].any():
        del tensors[_BIAS]  # a zero bias (a Llama's, read by model.hf) is no bias: the same logits
    optional = lambda n: n.startswith(_OPTIONAL)  # noqa: E731
    # the LM must come whole: a missing or extra LM tensor would leave a silently different model
    lm_missing = sorted(n for n in own if not optional(n) and n not in tensors)
    lm_extra = sorted(n for n in tensors if not optional(n) and n not in own)
    shapes = sorted(f"{n} {list(tensors[n].shape)} in the source, {list(own[n].shape)} here"
                    for n in tensors if n in own and tuple(tensors[n].shape) != tuple(own[n].shape))
    if lm_missing or lm_extra or shapes:
        parts = ([f"tensors this model has and the source lacks: {', '.join(lm_missing[:6])}"] if lm_missing else []) + \
                ([f"tensors the source has and this model lacks: {', '.join(lm_extra[:6])}"] if lm_extra else []) + \
                ([f"shapes that differ: {'; '.join(shapes[:6])}"] if shapes else [])
        raise CheckpointError(
            f"The weights of {src.describe()} do not fit this model ({'; '.join(parts)}).",
            hint="Make the profile's model keys equal the source's (`jepa inspect SRC` shows its config), "
            "and start with the tokenizer saved with the source.",
        )
    loaded = {n: t for n, t in tensors.items() if n in own}
    for name, t in loaded.items():
        own[name].copy_(t.to(own[name].dtype))
    copied = []
    for t_name, o_name in getattr(target, "_ema_pairs", []):
        if t_name not in loaded:  # the teacher starts where its online counterpart now is
            own[t_name].copy_(own[o_name])
            copied.append(t_name)
    fresh = [n for n in own if n not in loaded and n not in copied]
    dropped = [n for n in tensors if n not in own]
    # the payload digest a safetensors file of exactly these tensors records (rundir.digest): for a
    # source whose every tensor was loaded, the one its own file carries
    record = {**src.record(), "digest": tensors_digest(loaded), "loaded": len(loaded)}
    where = f" ({src.path.name}, step {src.step})" if src.kind != "hf" else ""
    notes = [f"weights from {src.given}{where}: {len(loaded)} tensors loaded", *src.notes]
    if fresh or copied:
        what = [f"name-seeded init for {_group(fresh)}"] if fresh else []
        what += [f"the teacher ({len(copied)} tensors) copied from the loaded online weights"] if copied else []
        notes.append(f"not in the source: {'; '.join(what)}")
        record["fresh"] = _group(fresh + copied)
    if dropped:
        notes.append(f"dropped from the source (this run does not use them): {_group(dropped)}")
        record["dropped"] = _group(dropped)
    return Loaded(record, notes)


def recorded(weights_meta: dict[str, str]) -> dict[str, Any] | None:
    """The `init_from` record a checkpoint carries (a run started from SRC), else None."""
    raw = weights_meta.get(RECORD_KEY)
    if not raw:
        return None
    try:
        rec = json.loads(raw)
    except ValueError:
        return None
    return rec if isinstance(rec, dict) else None
