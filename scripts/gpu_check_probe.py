"""Child-process probes for `scripts/gpu-check` (each prints one JSON line).

Run in their own processes so a CUDA error, a hang or a crash in one cannot
take the check down, and so each starts with fresh CUDA memory statistics.

    python scripts/gpu_check_probe.py env
    python scripts/gpu_check_probe.py memory --profile NAME [--sets '["k=v", ...]'] [--profile ...]
    python -m torch.distributed.run --standalone --nproc-per-node 1 \\
        scripts/gpu_check_probe.py nccl --profile NAME [--set k=v ...]
    python scripts/gpu_check_probe.py jepa --deterministic -- train --profile NAME ...

The JSON line starts with `GPU_CHECK_JSON ` so it can be told from library output.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

MARK = "GPU_CHECK_JSON "
ROOT = Path(__file__).resolve().parent.parent


def emit(doc: dict) -> None:
    sys.stdout.write(MARK + json.dumps(doc) + "\n")
    sys.stdout.flush()


def _nvidia_smi() -> dict:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return {}
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20,
        ).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        return {}
    if not out:
        return {}
    parts = [p.strip() for p in out[0].split(",")]
    keys = ["name", "driver", "memory_total"]
    return dict(zip(keys, parts))


def probe_env(_: argparse.Namespace) -> None:
    import torch

    import jepa_core

    doc: dict = {
        "python": platform.python_version(),
        "executable": sys.executable,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "jepa_core_from": str(Path(jepa_core.__file__).resolve().parent),
        "machine": platform.machine(),
    }
    try:
        from jepa_core.tools.bench import cpu_name

        doc["cpu_name"] = cpu_name()
    except Exception as e:  # an informational field: never fail the probe for it
        doc["cpu_name"] = f"? ({type(e).__name__})"
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        doc.update(
            device_name=torch.cuda.get_device_name(0),
            device_count=torch.cuda.device_count(),
            capability=".".join(map(str, torch.cuda.get_device_capability(0))),
            memory_bytes=int(props.total_memory),
            sm_count=int(props.multi_processor_count),
            bf16_supported=bool(torch.cuda.is_bf16_supported()),
            cudnn=torch.backends.cudnn.version(),
        )
        try:
            v = torch.cuda.nccl.version()
            doc["nccl"] = ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
        except Exception as e:
            doc["nccl"] = f"unavailable ({type(e).__name__}: {e})"
        smi = _nvidia_smi()
        doc["nvidia_smi"] = smi
        doc["driver"] = smi.get("driver")
        from jepa_core.train.device import gpu_peak_flops

        doc["datasheet_bf16_flops"] = gpu_peak_flops(torch.device("cuda", 0))
    emit(doc)


def _config(args: argparse.Namespace):
    from jepa_core.config import load_config

    return load_config(args.profile, list(args.set or ()))


def probe_memory(args: argparse.Namespace) -> None:
    """Each profile's own training step (the arm `jepa train` would run), its peak memory
    against preflight's formula. One arm at a time: bench's three-arm run keeps the other
    arms' weights and optimizer state allocated, so its per-arm peaks overlap.
    Prints one JSON object, profile -> figures."""
    import gc

    from jepa_core.config import load_config

    if len(args.sets) not in (0, len(args.profile)):
        raise SystemExit("memory: give --sets once per --profile, or not at all")
    out = {}
    for i, profile in enumerate(args.profile):
        sets = json.loads(args.sets[i]) if args.sets else []
        out[profile] = _memory_of(load_config(profile, sets))
        gc.collect()
    emit(out)


def _memory_of(cfg) -> dict:
    import torch

    from jepa_core.tools.bench import run_bench
    from jepa_core.model.memory import MEMORY_BUDGET_FRACTION, estimate_memory
    from jepa_core.train.device import resolve_runtime

    rt = resolve_runtime(cfg.train.device, cfg.train.precision)
    est = estimate_memory(cfg, precision=rt.precision)
    arm = "baseline" if cfg.jepa.run_baseline else cfg.jepa.teacher
    t0 = time.perf_counter()
    rep = run_bench(cfg, steps=2, repeats=1, warmup=2, arms=[arm], matmul_sizes=(256,), matmul_repeats=1)
    res = rep.arm(arm)
    doc = {
        "profile": cfg.name,
        "arm": arm,
        "device": str(rt.device),
        "precision": rt.precision,
        "compile": rep.plan.get("compile"),
        "batch_size": cfg.train.batch_size,
        "block_size": cfg.data.block_size,
        "estimate": {
            "total": est.total, "weights": est.weights, "grads": est.grads, "optimizer": est.optimizer,
            "activations": est.activations, "params_total": est.params_total, "params_trainable": est.params_trainable,
        },
        "budget_fraction": MEMORY_BUDGET_FRACTION,
        "peak_bytes": res.peak_mem_bytes if res else None,
        "peak_kind": res.peak_mem_kind if res else None,
        "ms_per_step": res.median_ms if res else None,
        "notes": rep.notes,
        "seconds": round(time.perf_counter() - t0, 3),
    }
    if rt.device.type == "cuda":
        doc["peak_reserved_bytes"] = int(torch.cuda.max_memory_reserved(rt.device))
        del rep, res
        torch.cuda.empty_cache()
    return doc


def probe_nccl(args: argparse.Namespace) -> None:
    """Under torchrun: the process group (NCCL on CUDA, gloo on CPU), collectives with
    known answers, and DDP steps of the profile's model whose gradients must equal a
    plain model's (with one rank the all-reduce averages over one copy)."""
    import copy

    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from jepa_core.model import JepaLM
    from jepa_core.train.device import resolve_runtime

    cfg = _config(args)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    # the same choice as jepa_core.train.distributed.init_distributed
    use_cuda = torch.cuda.is_available() and (cfg.train.device == "auto" or cfg.train.device.startswith("cuda"))
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(local)
    t0 = time.perf_counter()
    dist.init_process_group(backend=backend)
    rt = resolve_runtime(cfg.train.device, cfg.train.precision, local)
    device = rt.device
    checks: dict[str, bool] = {}

    t = torch.full((1024,), float(rank + 1), device=device)
    dist.all_reduce(t)
    checks["all_reduce_sum"] = bool(torch.all(t == world * (world + 1) / 2))
    b = torch.arange(8, device=device, dtype=torch.int64) * (rank + 1)
    dist.broadcast(b, src=0)
    checks["broadcast"] = bool(torch.equal(b.cpu(), torch.arange(8, dtype=torch.int64)))
    lo = torch.tensor([rank], device=device, dtype=torch.int64)
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    checks["all_reduce_min"] = int(lo.item()) == 0
    dist.barrier()

    torch.manual_seed(cfg.train.seed)
    model = JepaLM.from_config(cfg, cfg.data.vocab_size).to(device)
    plain = copy.deepcopy(model)
    ddp = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    B, T = min(cfg.train.batch_size, 4), cfg.data.block_size
    gen = torch.Generator(device="cpu").manual_seed(cfg.train.seed)
    losses, grads_equal = [], True
    # one rank: DDP's all-reduce averages one copy, so its gradients are the plain model's up to
    # the order of atomics in the backward pass (bf16 activations on CUDA)
    rtol, atol = (1e-3, 1e-5) if device.type == "cuda" else (1e-5, 1e-7)
    for step in range(2):
        toks = torch.randint(0, cfg.data.vocab_size, (B, T + 1), generator=gen)
        x, y = toks[:, :-1].to(device), toks[:, 1:].to(device)
        state = torch.get_rng_state(), (torch.cuda.get_rng_state(device) if device.type == "cuda" else None)
        with rt.autocast():
            out = ddp(x, y, 1.0)
        out.loss.backward()
        # the plain model, same weights, same pair-sampling RNG stream
        torch.set_rng_state(state[0])
        if state[1] is not None:
            torch.cuda.set_rng_state(state[1], device)
        with rt.autocast():
            ref = plain(x, y, 1.0)
        ref.loss.backward()
        for (n, p), (_, q) in zip(model.named_parameters(), plain.named_parameters()):
            if p.grad is None and q.grad is None:
                continue
            if p.grad is None or q.grad is None or not torch.allclose(p.grad, q.grad, rtol=rtol, atol=atol):
                grads_equal = False
        losses.append(float(out.loss.detach().float().item()))
        for m in (model, plain):
            m.zero_grad(set_to_none=True)
    checks["ddp_grads_equal_plain"] = grads_equal
    checks["ddp_loss_finite"] = all(l == l and abs(l) != float("inf") for l in losses)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    dist.barrier()
    dist.destroy_process_group()
    if rank == 0:
        emit({
            "backend": backend, "world_size": world, "device": str(device), "precision": rt.precision,
            "checks": checks, "ok": all(checks.values()), "losses": losses, "seconds": round(seconds, 3),
        })


def run_jepa(args: argparse.Namespace) -> None:
    """The jepa CLI in this process, optionally with deterministic algorithms on
    (CUBLAS_WORKSPACE_CONFIG and TORCHINDUCTOR_DETERMINISTIC come from the caller's env,
    because cuBLAS and inductor read them when they start)."""
    if args.deterministic:
        import torch

        torch.use_deterministic_algorithms(True, warn_only=True)
    argv = list(args.rest)
    if argv and argv[0] == "--":
        argv = argv[1:]
    sys.argv = ["jepa", *argv]
    from jepa_cli.main import main as jepa_main

    jepa_main()


def main() -> None:
    ap = argparse.ArgumentParser(prog="gpu_check_probe")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("env").set_defaults(fn=probe_env)
    p = sub.add_parser("memory")
    p.add_argument("--profile", action="append", required=True)
    p.add_argument("--sets", action="append", default=[], help="a JSON list of k=v overrides, once per --profile")
    p.set_defaults(fn=probe_memory)
    p = sub.add_parser("nccl")
    p.add_argument("--profile", required=True)
    p.add_argument("--set", action="append", default=[])
    p.set_defaults(fn=probe_nccl)
    p = sub.add_parser("jepa")
    p.add_argument("--deterministic", action="store_true")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(fn=run_jepa)
    args = ap.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
