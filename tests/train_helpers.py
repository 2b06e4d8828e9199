"""Small configs and data shared by the training tests (a few seconds per run on 2 cores)."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from jepa_core.config import Config, load_config

ROOT = Path(__file__).resolve().parent.parent
MIRROR_TEXT = ROOT.parent / "shared" / "data" / "tiny_shakespeare" / "input.txt"


def small_text(tmp: Path, n_bytes: int = 120_000) -> Path:
    """The first n_bytes of tiny shakespeare (or generated text without the mirror)."""
    path = tmp / "small.txt"
    if not path.exists():
        if MIRROR_TEXT.is_file():
            text = MIRROR_TEXT.read_bytes()[:n_bytes].decode("utf-8", errors="ignore")
        else:  # play-like text: speakers, lines and blank-line paragraphs, as the documents tests split it
            rng = random.Random(0)
            words = [a + b for a in ("th", "k", "sp", "l", "w", "m", "br", "g", "d", "f", "h", "n") for b in ("e", "ing", "ord", "ake", "ell", "ay", "ight", "ou", "ere", "ost")]
            parts, size = [], 0
            while size < n_bytes:
                lines = [" ".join(rng.choice(words) for _ in range(rng.randint(4, 11))).capitalize() + "." for _ in range(rng.randint(1, 5))]
                parts.append(rng.choice(words).upper() + ":\n" + "\n".join(lines))
                size += len(parts[-1]) + 2
            text = "\n\n".join(parts)[:n_bytes]
        path.write_text(text, encoding="utf-8")
    return path


def small_overrides(text: Path, *extra: str) -> list[str]:
    """The small shape (d32, 2 layers, block 32, batch 4) on a local text: a run takes seconds."""
    return [
        f'data.dataset="text:{text}"',
        "data.vocab_size=320",
        "data.block_size=32",
        "model.d_model=32",
        "model.n_layers=2",
        "model.n_heads=2",
        "model.tap_layer=-1",
        "jepa.latent_dim=16",
        "jepa.horizons=[1, 4]",
        "jepa.horizon_probs=[0.5, 0.5]",
        "jepa.pairs_per_seq=2",
        "jepa.eval_pairs=32",
        "train.batch_size=4",
        "train.max_steps=8",
        "train.eval_every=4",
        "train.eval_batches=2",
        "train.checkpoint_every=4",
        "train.sample_tokens=8",
        'train.device="cpu"',
        'train.precision="fp32"',
        "train.compile=false",
        "log.every=1",
        *extra,
    ]


def small_config(text: Path, out_dir: Path, *extra: str, baseline: bool = False, teacher: str = "projector", profile: str = "tiny") -> Config:
    overrides = small_overrides(
        text,
        f'jepa.teacher="{teacher}"',
        f"jepa.run_baseline={'true' if baseline else 'false'}",
        f'train.out_dir="{out_dir}"',
        "optim.warmup_steps=2",
        *extra,
    )
    return load_config(profile, overrides)


def finished_run(tmp: Path, name: str, *extra: str, baseline: bool = False, text: Path | None = None, profile: str = "tiny") -> Path:
    """A small finished run at tmp/runs/NAME, for module-scoped fixtures: trained with JEPA_HOME
    at tmp/home (the per-test home fixture is not there yet) and JEPA_HOME restored after."""
    from jepa_core.train.loop import train

    old = os.environ.get("JEPA_HOME")
    os.environ["JEPA_HOME"] = str(tmp / "home")
    try:
        cfg = small_config(text or small_text(tmp), tmp / "runs", *extra, baseline=baseline, profile=profile)
        result = train(cfg, run_dir=tmp / "runs" / name, handle_signals=False)
    finally:
        if old is None:
            os.environ.pop("JEPA_HOME", None)
        else:
            os.environ["JEPA_HOME"] = old
    assert result.status == "finished"
    return result.run_dir


def spoil_tensor_bytes(path: Path, n: int = 64) -> str:
    """Overwrite `n` bytes in the middle of the largest tensor of a safetensors file (each XORed with
    0xA5, so every one changes): the header, sizes and metadata stay intact. Returns the tensor's name."""
    from jepa_core.rundir import read_header

    h = read_header(path, whole=True)
    e = max(h.entries, key=lambda e: e.end - e.begin)
    assert e.end - e.begin > n
    at = 8 + h.header_size + e.begin + (e.end - e.begin - n) // 2
    with open(path, "r+b") as f:
        f.seek(at)
        old = f.read(n)
        f.seek(at)
        f.write(bytes(b ^ 0xA5 for b in old))
    return e.name


def read_metrics(run_dir: Path) -> list[dict]:
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(l) for l in lines if l.strip()]


# Fixtures for training tests: one JEPA_HOME per test module (the small dataset is prepared once
# per module) and the small text. A module opts in with
# `from train_helpers import _use_home, home, text  # noqa: F401`.


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("home")


@pytest.fixture(autouse=True)
def _use_home(home, monkeypatch):
    monkeypatch.setenv("JEPA_HOME", str(home))


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    return small_text(tmp_path_factory.mktemp("text"))
