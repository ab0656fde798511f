"""Measuring: wall-clock timers, FLOP and memory counting, the matmul peak, the profiler table."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); a no-op on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def summarize(times: list[float]) -> dict[str, float]:
    """Median, inclusive quartiles, IQR, minimum and count of ``times`` (seconds)."""
    q1, median, q3 = statistics.quantiles(times, n=4, method="inclusive")
    return {
        "median_s": median,
        "q1_s": q1,
        "q3_s": q3,
        "iqr_s": q3 - q1,
        "min_s": min(times),
        "n": len(times),
    }


def time_calls(fn: Callable[[int], Any], count: int, device: torch.device) -> list[float]:
    """Seconds of ``fn(0)``, ..., ``fn(count - 1)``, the device synchronised around each."""
    times = []
    for i in range(count):
        synchronize(device)
        start = time.perf_counter()
        fn(i)
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def flops_and_peak_memory(fn: Callable[[], Any], device: torch.device) -> tuple[int, dict]:
    """FLOPs of ``fn`` and the peak of the tensor memory it allocates above what was live.

    FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions
    and the other ops it has formulas for; elementwise ops count zero).

    Memory on CUDA: ``torch.cuda.max_memory_allocated`` minus the allocation
    before. On CPU: replay of the allocation/free events that ``torch.profiler``
    records with ``profile_memory=True`` (every tensor allocation through
    PyTorch's CPU allocator, in time order), taking the maximum of the running
    sum. That is exact for tensors and independent of what ran earlier in the
    process, unlike ``ru_maxrss`` (a process-lifetime high-water mark that only
    moves when a new record is set, so it cannot separate variants run in one
    process). Python objects and allocator caching are not included.

    Returns:
        ``(flops, {"bytes": peak or None, "method": how it was measured})``.
    """
    counter = FlopCounterMode(display=False)
    if device.type == "cuda":
        memory = _cuda_peak_memory(fn, counter, device)
    else:
        memory = _cpu_peak_memory(fn, counter)
    return counter.get_total_flops(), memory


def _cuda_peak_memory(
    fn: Callable[[], Any], counter: FlopCounterMode, device: torch.device
) -> dict[str, Any]:
    synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    with counter:
        fn()
    synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - before
    return {"bytes": peak, "method": "torch.cuda.max_memory_allocated"}


def _cpu_peak_memory(fn: Callable[[], Any], counter: FlopCounterMode) -> dict[str, Any]:
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof, counter:
        fn()
    try:
        events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
        events.sort(key=lambda e: e.start_ns())
        live = peak = 0
        for event in events:
            live += event.nbytes()
            peak = max(peak, live)
    except AttributeError:  # private profiler API changed
        return {"bytes": None, "method": "unavailable (torch.profiler memory events)"}
    return {"bytes": peak, "method": "torch.profiler memory events (tensor allocations)"}


def state_bytes(model: nn.Module, optimizer: torch.optim.Optimizer | None) -> int:
    """Parameters + optimizer state, the memory a step holds before it starts."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    if optimizer is not None:
        for state in optimizer.state.values():
            total += sum(v.numel() * v.element_size() for v in state.values() if torch.is_tensor(v))
    return total


def matmul_peak(size: int, dtype: torch.dtype, device: torch.device, repeats: int) -> float:
    """Best GFLOP/s of a ``size x size`` square matmul over ``repeats`` runs (after one warm-up)."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    a @ b
    times = time_calls(lambda _: a @ b, repeats, device)
    return 2 * size**3 / min(times) / 1e9


def profile_top_ops(fn: Callable[[], Any], rows: int) -> str:
    """``torch.profiler``'s table of the ``rows`` ops of ``fn`` with the most self CPU time."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)
