"""Shared timing for the benchmarks: warm-up, synchronised timing, and peak memory of one process."""
from __future__ import annotations

import resource
import time
from typing import Callable


def time_steps(step: Callable[[], None], iters: int, warmup: int, device) -> dict:
    """Seconds per call of `step` after `warmup` calls, and peak memory in MB.

    On CUDA the peak is torch.cuda.max_memory_allocated over the timed calls. On CPU, `peak_mb` is the process's
    peak resident set and `growth_mb` its growth since before the warm-up (what the measured work added).
    """
    import torch

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    for _ in range(warmup):
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(iters):
        step()
    sync()
    seconds = (time.perf_counter() - start) / iters
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.type == "cuda":
        peak = growth = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak, growth = rss / 1024, (rss - base_rss) / 1024
    return {"seconds": seconds, "peak_mb": peak, "growth_mb": growth}
