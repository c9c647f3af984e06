"""What a run executes on, and how many CPU threads it may use.

torch's default intra-op thread count is every core of the machine, whatever else runs there: DataLoader workers,
a second training job, another user. OpenMP threads that find their core taken wait for it, and tiny operations
(a linear head on cached features) slow down tenfold. Every command therefore sets its thread count explicitly
(`train.threads`, `--threads`), by default to its share of the cores minus the cores its data workers take.

The same weights and data give bit-identical training only on the same kernels: the CPU's instruction set decides
which kernels torch, oneDNN and MKL pick (AVX-512 and AVX2 round differently), and so can the thread count.
`machine_info()` records all of it in every run.json.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re

import torch


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def default_threads(num_workers: int, processes_per_machine: int = 1) -> int:
    """This process's share of the cores, less one core per DataLoader worker it starts; at least 1."""
    share = available_cores() // max(1, processes_per_machine)
    return max(1, share - num_workers)


def resolve_threads(requested: int, num_workers: int, processes_per_machine: int = 1) -> int:
    """`requested` when positive, else the default for this machine and worker count."""
    return requested if requested > 0 else default_threads(num_workers, processes_per_machine)


def set_threads(requested: int, num_workers: int = 0, processes_per_machine: int | None = None) -> int:
    """Set torch's intra-op thread count for this process (see resolve_threads); returns the count set."""
    if processes_per_machine is None:
        processes_per_machine = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    threads = resolve_threads(requested, num_workers, processes_per_machine)
    torch.set_num_threads(threads)
    return threads


@contextlib.contextmanager
def limited_threads(threads: int):
    """Run the block with at most `threads` intra-op threads, then restore the previous count.

    For work too small to gain from threads (a linear head on cached features): with one thread it cannot be
    slowed down by cores that another process holds.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(min(previous, threads))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _vector_flags() -> list[str]:
    """The SIMD extensions the CPU reports (avx2, avx512f, amx…): what decides torch's kernel choice."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    flags = line.split(":", 1)[1].split()
                    return sorted(f for f in flags if re.match(r"(avx|fma|amx|sse4|neon|sve|asimd)", f))
    except OSError:
        pass
    return []


def _onednn_version() -> str:
    match = re.search(r"MKL-DNN v([\w.]+)", torch.__config__.show())
    return match.group(1) if match else "unknown"


def machine_info() -> dict:
    """CPU model and vector extensions, the kernels torch picked, threads, and the numeric libraries' versions."""
    return {
        "cpu": _cpu_model(),
        "cpu_flags": _vector_flags(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # AVX512 / AVX2 / DEFAULT: torch's own kernels
        "cores_available": available_cores(),
        "threads": torch.get_num_threads(),
        "onednn": _onednn_version(),
        "mkl": torch.backends.mkl.is_available(),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "ATEN_CPU_CAPABILITY",
                                           "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS") if k in os.environ},
    }
