"""Device and precision selection, and the peak-FLOPS table for MFU."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from jepa_core.errors import ConfigError

# Dense bf16 tensor-core peaks (datasheet, no sparsity), FLOP/s.
GPU_PEAK_BF16 = {
    "H200": 989e12,
    "H100 SXM": 989e12,
    "H100 PCIe": 756e12,
    "H100": 989e12,
    "A100": 312e12,
    "L40S": 362e12,
    "A10G": 125e12,
    "L4": 121e12,
    "RTX 4090": 165e12,
    "RTX 3090": 71e12,
    "V100": 125e12,
    "T4": 65e12,
}


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    precision: str  # "fp32" or "bf16"
    why: str = ""  # why this precision: the setting, or what `auto` saw

    @property
    def precision_label(self) -> str:
        """What run_start, bench and preflight show: "bf16 (auto: the CPU has native bf16 matmul (...))"."""
        return f"{self.precision} ({self.why})" if self.why else self.precision

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return torch.bfloat16 if self.precision == "bf16" else None

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)


def resolve_device(spec: str, local_rank: int = 0) -> torch.device:
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise ConfigError(f"Invalid `train.device`: {spec!r}.", hint="Use auto, cpu, cuda, cuda:N or mps.") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                "`train.device` asks for CUDA but no CUDA device is available.",
                hint="Use --set train.device=auto (or cpu).",
            )
        if dev.index is None:
            dev = torch.device("cuda", local_rank)
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("`train.device` asks for MPS but it is not available.", hint="Use --set train.device=auto.")
    return dev


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu"  # CPU autocast supports bf16 (emulated, and slow, without native bf16)


# CPU feature flags (Linux /proc/cpuinfo names) that give bf16 matmul native instructions:
# x86 AVX512-BF16 (Cooper Lake, Zen 4 and later) and AMX (Sapphire Rapids), Arm's BF16 extension
# (Graviton 3, Neoverse V1/N2, Apple M2 and later). Without one of them torch's CPU bf16 matmul
# converts element by element and runs many times slower than fp32 (benchmarks/2026-12-zen3-epyc.md).
NATIVE_BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux names them, or an empty set where /proc/cpuinfo is not there."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key = line.split(":", 1)[0].strip()
                if key in ("flags", "Features"):  # x86, Arm
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def fast_bf16_matmul(device: torch.device, flags: frozenset[str] | None = None) -> tuple[bool, str]:
    """Whether bf16 matmuls on `device` run at least as fast as fp32 ones, and why.

    Decided from capability flags, not a timed probe: the answer must not depend on how loaded
    the machine happens to be when a run starts (a run and its resume must choose alike), and it
    costs nothing. A CPU we cannot read flags for is treated as slow: fp32 is correct everywhere
    and costs at most about 2x on the Newton-Schulz matmuls where bf16 would have been fast.
    """
    if device.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
        return ok, "CUDA bf16 tensor cores" if ok else f"{torch.cuda.get_device_name(device)} has no bf16 support"
    if device.type != "cpu":
        return False, f"bf16 matmul speed on {device.type} is unknown"
    have = (cpu_flags() if flags is None else flags) & NATIVE_BF16_CPU_FLAGS
    if have:
        return True, f"the CPU has native bf16 matmul ({', '.join(sorted(have))})"
    return False, "the CPU has no native bf16 matmul (no avx512_bf16, amx_bf16 or Arm bf16 flag)"


def resolve_ns_dtype(setting: str, device: torch.device, flags: frozenset[str] | None = None) -> tuple[torch.dtype, str]:
    """`optim.muon_ns_dtype` ("auto" | "bf16" | "fp32") as a dtype for `device`, with the reason."""
    if setting == "bf16":
        return torch.bfloat16, "optim.muon_ns_dtype = \"bf16\""
    if setting == "fp32":
        return torch.float32, "optim.muon_ns_dtype = \"fp32\""
    fast, why = fast_bf16_matmul(device, flags)
    return (torch.bfloat16 if fast else torch.float32), f"auto: {why}"


def ns_dtype_label(optimizer: str, setting: str, device: torch.device) -> str | None:
    """What run_start and bench record: the Newton-Schulz dtype Muon runs and why (None without Muon)."""
    if optimizer != "muon":
        return None
    dtype, why = resolve_ns_dtype(setting, device)
    return f"{str(dtype).replace('torch.', '')} ({why})"


def slow_bf16_note(rt: "Runtime") -> str | None:
    """A note when the run asked for bf16 autocast where bf16 matmul is emulated (auto never picks it there)."""
    if rt.precision != "bf16" or rt.device.type != "cpu":
        return None
    fast, why = fast_bf16_matmul(rt.device)
    if fast:
        return None
    return f"bf16 autocast on this CPU is several times slower than fp32: {why}; --set train.precision=fp32"


def resolve_precision(setting: str, device: torch.device, flags: frozenset[str] | None = None) -> tuple[str, str]:
    """`train.precision` ("auto" | "bf16" | "fp32") for `device`: (precision, why).

    `auto` is bf16 autocast wherever bf16 matmul is native (CUDA with bf16, a CPU with
    avx512_bf16, AMX or Arm bf16: the same test as Muon's Newton-Schulz dtype) and fp32
    elsewhere. On a CPU with native bf16 `tiny` trains much faster in bf16 with the same val
    BPB (docs/results/bf16-cpu.md).
    """
    if setting == "auto":
        fast, why = fast_bf16_matmul(device, flags)
        return ("bf16" if fast else "fp32"), f"auto: {why}"
    if setting == "bf16" and not bf16_supported(device):
        raise ConfigError(f"`train.precision = \"bf16\"` is not supported on {device}.", hint="Use precision = \"auto\" or \"fp32\".")
    return setting, f"train.precision = \"{setting}\""


def resolve_runtime(device_spec: str, precision: str, local_rank: int = 0) -> Runtime:
    device = resolve_device(device_spec, local_rank)
    resolved, why = resolve_precision(precision, device)
    return Runtime(device=device, precision=resolved, why=why)


def gpu_peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key in sorted(GPU_PEAK_BF16, key=len, reverse=True):
        if key in name:
            return GPU_PEAK_BF16[key]
    return None


def compile_unavailable_reason(device: torch.device) -> str | None:
    """Why `torch.compile` cannot run on `device`, or None when it can (as far as we can tell).

    On CPU, inductor builds C++ kernels: without a working C++ compiler the first
    compiled call fails, so callers check first and run eagerly instead.
    """
    if device.type != "cpu":
        return None
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler
    except ImportError:  # a private API that moved: let torch.compile decide
        return None
    try:
        get_cpp_compiler()
    except Exception as e:  # InvalidCxxCompiler and friends
        return f"torch.compile on CPU needs a C++ compiler and none works here ({type(e).__name__}); running eagerly"
    return None


def device_memory(device: torch.device) -> tuple[int, str]:
    """(bytes, what they are) of the device the run would use."""
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return int(props.total_memory), f"{props.name} memory"
    pages, page = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    return int(pages * page), "physical RAM"
