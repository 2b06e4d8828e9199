"""What a checkpoint payload digest costs: GB/s of sha256, blake2b and xxhash (XXH3) on this machine.

Two measurements per algorithm, each the best of `--repeats`:
- `memory`: one hash over a buffer already in memory, fed in 1 MiB slices (the writer's case:
  tensors are in memory when the checkpoint is saved);
- `file`: the buffer written to a file, then read back in 1 MiB slices and hashed (the verifier's
  case, with the file in the page cache: the cost a resume pays on top of loading it).

Then the real paths on a checkpoint-like file (fp32 tensors of 64 x 64 to 1024 x 1024, `--mb` in
all): the writer's `tensors_digest` beside safetensors' `save_file` of the same tensors, and the
reader's `rundir.check_file` (header + digest) beside `load_file`.

Usage: .venv/bin/python benchmarks/bench_digest.py [--mb 256] [--repeats 5]
Prints one line per algorithm and a JSON summary; the figures are in benchmarks/2026-12-xeon-amx.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import tempfile
import time

CHUNK = 1 << 20


def _algorithms() -> dict:
    algos = {"sha256": hashlib.sha256, "blake2b": hashlib.blake2b}
    try:
        import xxhash

        algos["xxh3_64"] = xxhash.xxh3_64
        algos["xxh3_128"] = xxhash.xxh3_128
    except ImportError:
        pass
    return algos


def _hash_memory(new, buf: memoryview) -> None:
    h = new()
    for i in range(0, len(buf), CHUNK):
        h.update(buf[i : i + CHUNK])
    h.hexdigest()


def _hash_file(new, path: str) -> None:
    h = new()
    slab = bytearray(CHUNK)
    view = memoryview(slab)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(slab):
            h.update(view[:n])
    h.hexdigest()


def _read_only(path: str) -> None:
    slab = bytearray(CHUNK)
    with open(path, "rb", buffering=0) as f:
        while f.readinto(slab):
            pass


def _best(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    size = args.mb << 20
    buf = memoryview(os.urandom(size))
    gb = size / 1e9
    out: dict = {"mb": args.mb, "python": platform.python_version(), "openssl": __import__("ssl").OPENSSL_VERSION,
                 "loadavg_before": os.getloadavg()}
    with tempfile.NamedTemporaryFile(delete=False) as f:
        f.write(buf)
        path = f.name
    try:
        _read_only(path)  # into the page cache
        read_s = _best(lambda: _read_only(path), args.repeats)
        out["read_only_gb_s"] = round(gb / read_s, 2)
        print(f"{'read only':10s} file {gb / read_s:6.2f} GB/s")
        for name, new in _algorithms().items():
            mem_s = _best(lambda: _hash_memory(new, buf), args.repeats)
            file_s = _best(lambda: _hash_file(new, path), args.repeats)
            out[name] = {"memory_gb_s": round(gb / mem_s, 2), "file_gb_s": round(gb / file_s, 2),
                         "s_per_gb_memory": round(mem_s / gb, 3), "s_per_gb_file": round(file_s / gb, 3)}
            print(f"{name:10s} memory {gb / mem_s:6.2f} GB/s ({mem_s / gb:.3f} s/GB)   file {gb / file_s:6.2f} GB/s ({file_s / gb:.3f} s/GB)")
    finally:
        os.unlink(path)
    out["checkpoint"] = _checkpoint_paths(args.mb, args.repeats)
    out["loadavg_after"] = os.getloadavg()
    print(json.dumps(out))


def _checkpoint_paths(mb: int, repeats: int) -> dict:
    import sys
    from pathlib import Path

    import torch
    from safetensors.torch import load_file, save_file

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from jepa_core import rundir
    from jepa_core.train.checkpoint import tensors_digest

    g = torch.Generator().manual_seed(0)
    tensors, total, i = {}, 0, 0
    sides = [64, 256, 1024, 512, 128]
    while total < mb << 20:
        side = sides[i % len(sides)]
        tensors[f"t{i:04d}"] = torch.randn(side, side, generator=g)
        total += side * side * 4
        i += 1
    gb = total / 1e9
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "c.safetensors"
        meta = {"payload_digest": tensors_digest(tensors)}
        times = {
            "tensors_digest (write side)": _best(lambda: tensors_digest(tensors), repeats),
            "safetensors save_file": _best(lambda: save_file(tensors, str(path), metadata=meta), repeats),
            "rundir.check_file (read side)": _best(lambda: rundir.check_file(path), repeats),
            "safetensors load_file": _best(lambda: load_file(str(path)), repeats),
        }
        assert rundir.check_file(path).problem is None
    res = {"tensors": len(tensors), "gb": round(gb, 3)}
    for name, t in times.items():
        res[name] = {"s_per_gb": round(t / gb, 3), "gb_s": round(gb / t, 2)}
        print(f"{name:32s} {t / gb:6.3f} s/GB ({gb / t:6.2f} GB/s) on {len(tensors)} tensors, {gb:.3f} GB")
    return res


if __name__ == "__main__":
    main()
