"""Throughput and memory of `jepa data prepare` on a synthetic JSON-lines corpus.

    nice -n 10 .venv/bin/python benchmarks/bench_data_prepare.py [--sizes 50,200] [--format json|parquet]

Generates a corpus of `max(sizes)` MB of text at run time (never committed) in
files of 25 MB, in a temporary folder, and for each size prepares the first
files that hold it, each in a fresh interpreter (so peak memory is that run's
own, imports included):

- end to end: the whole `prepare_dataset` call (reading, training the BPE
  tokenizer on a `--sample-mb` sample, encoding, writing, hashing), MB of
  text per second;
- the encoding pass alone (the manifest's `encode_seconds`: reading the
  stream, encoding, writing shards);
- peak RSS of that process.

The baseline is `tokenizers`' own `encode_batch` on the same documents,
already in memory, in chunks of the size the pipeline encodes at once,
with the same tokenizer, measured in the same run; the ratios divide the
pipeline's MB/s by it. Text bytes are UTF-8 bytes of the documents.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FILE_MB = 25


def _words(rng: np.random.Generator, n: int = 20_000) -> np.ndarray:
    """Pseudo-words from syllables, so BPE has structure to learn (not uniform noise)."""
    syll = np.array(["ka", "lo", "mi", "te", "ra", "su", "ne", "po", "di", "an", "er", "is", "on", "th", "qu", "ex", "st", "ou", "ing", "ed"])
    lens = rng.integers(1, 5, size=n)
    return np.array(["".join(syll[rng.integers(0, len(syll), size=k)]) for k in lens], dtype=object)


def generate(folder: Path, total_mb: int, kind: str, seed: int = 0) -> list[Path]:
    """Documents of ~0.5-8 KB (Zipf-distributed words, sentences, paragraphs) in files of FILE_MB."""
    from datasets import Dataset

    rng = np.random.default_rng(seed)
    words = _words(rng)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for f in range(-(-total_mb // FILE_MB)):
        docs, size = [], 0
        while size < FILE_MB * 1_000_000:
            n_words = int(rng.integers(80, 1300))
            idx = np.minimum(rng.zipf(1.2, size=n_words) - 1, len(words) - 1)
            toks = words[idx]
            # sentence and paragraph breaks at random positions
            ends = rng.random(n_words) < 0.07
            paras = rng.random(n_words) < 0.01
            parts = []
            for i, w in enumerate(toks):
                parts.append(w)
                parts.append(".\n\n" if paras[i] else ". " if ends[i] else " ")
            doc = "".join(parts).strip()
            doc = doc[:1].upper() + doc[1:]
            docs.append(doc)
            size += len(doc.encode("utf-8"))
        ds = Dataset.from_dict({"content": docs})
        path = folder / f"part-{f:05d}.{'parquet' if kind == 'parquet' else 'jsonl'}"
        if kind == "parquet":
            ds.to_parquet(str(path))
        else:
            ds.to_json(str(path))
        paths.append(path)
    return paths


CHILD = r"""
import json, resource, sys, time
from jepa_core.config import DataConfig
from jepa_core.data import prepare_dataset
cfg = DataConfig(**json.loads(sys.argv[1]))
t0 = time.perf_counter()
p = prepare_dataset(cfg, force=True)
wall = time.perf_counter() - t0
m = p.manifest
print(json.dumps({
    "wall_s": wall,
    "encode_s": m["encode_seconds"],
    "tokenizer_s": m["tokenizer"].get("seconds", 0.0),
    "text_bytes": m["splits"]["train"]["bytes"] + m["splits"]["val"]["bytes"],
    "tokens": m["splits"]["train"]["tokens"] + m["splits"]["val"]["tokens"],
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "tokenizer": str(p.tokenizer_path),
}))
"""


def prepare_in_child(files: list[Path], kind: str, home: Path, sample_mb: int, vocab: int) -> dict:
    folder = files[0].parent / f"set-{len(files)}"
    folder.mkdir(exist_ok=True)
    for f in files:  # a folder per size, of links to the first files
        link = folder / f.name
        if not link.exists():
            os.symlink(f, link)
    cfg = {
        "dataset": f"{kind}:{folder}",
        "text_field": "content",
        "vocab_size": vocab,
        "block_size": 1024,
        "val_fraction": 0.005,
        "tokenizer_sample_bytes": sample_mb * 1_000_000,
    }
    env = dict(os.environ, JEPA_HOME=str(home), HF_HOME=str(home / "hf"), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg)], capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def baseline(files: list[Path], kind: str, tokenizer_path: str, chunk_bytes: int) -> tuple[float, int]:
    """(seconds, text bytes) of encode_batch over every document, in chunks like the pipeline's."""
    from datasets import load_dataset
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(tokenizer_path)
    ds = load_dataset(kind, data_files=[str(f) for f in files], split="train")
    docs = ds["content"]
    chunks, cur, size, total = [], [], 0, 0
    for d in docs:
        b = len(d.encode("utf-8"))
        cur.append(d)
        size += b
        total += b
        if size >= chunk_bytes:
            chunks.append(cur)
            cur, size = [], 0
    if cur:
        chunks.append(cur)
    t0 = time.perf_counter()
    for c in chunks:
        tok.encode_batch(c, add_special_tokens=False)
    return time.perf_counter() - t0, total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="50,200", help="corpus sizes in MB (comma-separated; the largest is generated)")
    ap.add_argument("--format", default="json", choices=["json", "parquet"])
    ap.add_argument("--sample-mb", type=int, default=16, help="tokenizer sample (data.tokenizer_sample_bytes), MB")
    ap.add_argument("--vocab", type=int, default=32768, help="BPE vocabulary (the fineweb-edu profile's by default)")
    ap.add_argument("--workdir", default=None, help="where to generate the corpus (default: a temporary folder, removed after)")
    args = ap.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))

    from jepa_core.data import pipeline

    tmp = tempfile.TemporaryDirectory(dir=args.workdir)
    root = Path(tmp.name)
    # datasets' own caches (the baseline's Arrow copy, lock files) go in the temporary folder too
    os.environ["HF_HOME"] = str(root / "hf")
    t0 = time.perf_counter()
    files = generate(root / "corpus", sizes[-1], args.format)
    gen_s = time.perf_counter() - t0
    raw_mb = sum(f.stat().st_size for f in files) / 1e6
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    print(f"corpus: {len(files)} {args.format} files, {raw_mb:.0f} MB on disk, generated in {gen_s:.0f} s; BPE {args.vocab}")

    rows = []
    for mb in sizes:
        n = -(-mb // FILE_MB)
        r = prepare_in_child(files[:n], args.format, root / f"home-{mb}", args.sample_mb, args.vocab)
        r["size_mb"] = mb
        rows.append(r)
        print(
            f"prepare {mb:>4} MB: end to end {r['text_bytes'] / 1e6 / r['wall_s']:6.2f} MB/s ({r['wall_s']:.1f} s, tokenizer "
            f"{r['tokenizer_s']:.1f} s on a {args.sample_mb} MB sample), encoding pass {r['text_bytes'] / 1e6 / r['encode_s']:6.2f} MB/s, "
            f"{r['tokens'] / r['encode_s'] / 1e6:.2f} M tokens/s, peak RSS {r['peak_rss_mb']:.0f} MB"
        )

    big = rows[-1]
    n_big = -(-sizes[-1] // FILE_MB)
    base_s, base_bytes = baseline(files[:n_big], args.format, big["tokenizer"], pipeline.CHUNK_BYTES)
    base = base_bytes / 1e6 / base_s
    print(f"tokenizers encode_batch alone on the same {sizes[-1]} MB (in memory, {pipeline.CHUNK_BYTES >> 20} MB chunks): {base:.2f} MB/s ({base_s:.1f} s)")
    for r in rows:
        e2e = r["text_bytes"] / 1e6 / r["wall_s"]
        enc = r["text_bytes"] / 1e6 / r["encode_s"]
        print(f"ratio to encode_batch, {r['size_mb']:>4} MB: end to end {e2e / base:.2f}, encoding pass {enc / base:.2f}  (target >= 0.8)")
    if len(rows) > 1:
        growth = rows[-1]["peak_rss_mb"] - rows[0]["peak_rss_mb"]
        print(
            f"peak RSS {rows[0]['peak_rss_mb']:.0f} MB at {rows[0]['size_mb']} MB -> {rows[-1]['peak_rss_mb']:.0f} MB at {rows[-1]['size_mb']} MB "
            f"({growth:+.0f} MB; target < 1024 MB and flat)"
        )
    print(f"load average {os.getloadavg()[0]:.1f} at the end; ru_maxrss of this driver {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    tmp.cleanup()


if __name__ == "__main__":
    main()
