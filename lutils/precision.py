"""Numeric precision of training, generation and evaluation: "fp32", "bf16" (autocast) or "auto".

"auto" picks bf16 autocast where the hardware runs it fast and fp32 elsewhere: on CUDA (as the original trains),
and on CPUs with native bf16 matrix instructions (AVX512-BF16 or AMX), where bf16 matmuls run several times faster
than fp32. Weights and optimizer state stay fp32 in every case; autocast only lowers the matmuls' precision.

TF32 (CUDA's 10-bit-mantissa fp32 matmuls and convolutions) is set deliberately, by `set_tf32`, which `autocast`
calls, so training, generation and evaluation all decide it in one place: allowed under bf16 (the run already
accepts bf16 matmuls; TF32 only touches the few fp32 ones autocast leaves, e.g. the autoencoder's convolutions),
off under fp32 (fp32 then means fp32, as a reference run needs). `tf32_settings()` is what a run records.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch

PRECISIONS = ("auto", "bf16", "fp32")


def cpu_has_fast_bf16() -> bool:
    """True when this CPU has native bf16 matrix instructions (AVX512-BF16 or AMX-BF16)."""
    for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        check = getattr(torch.cpu, name, None)
        if check is not None:
            try:
                if check():
                    return True
            except RuntimeError:
                pass
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(precision: str, device) -> str:
    """"bf16" or "fp32" for `precision` on `device`; "auto" decides by the hardware (module docstring)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision != "auto":
        return precision
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16"
    if device.type == "cpu":
        return "bf16" if cpu_has_fast_bf16() else "fp32"
    return "fp32"


def set_tf32(device, precision: str) -> dict:
    """Allow TF32 on CUDA exactly when `precision` is "bf16" (module docstring); returns `tf32_settings()`.
    On other devices the flags are left alone (they only change CUDA kernels)."""
    if torch.device(device).type == "cuda":
        allowed = precision == "bf16"
        torch.backends.cuda.matmul.allow_tf32 = allowed
        torch.backends.cudnn.allow_tf32 = allowed
    return tf32_settings()


def tf32_settings() -> dict:
    """The TF32 flags as they stand now: {"tf32_matmul": bool, "tf32_cudnn": bool} (they apply to CUDA only)."""
    return {"tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
            "tf32_cudnn": bool(torch.backends.cudnn.allow_tf32)}


def autocast(device, precision: str):
    """A context that runs the enclosed code at `precision` ("bf16" or "fp32", already resolved) on `device`.
    Also sets TF32 for `precision` (set_tf32)."""
    device = torch.device(device)
    if precision in ("bf16", "fp32"):
        set_tf32(device, precision)
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    if precision == "fp32":
        return contextlib.nullcontext()
    raise ValueError(f"precision must be 'bf16' or 'fp32' once resolved, got {precision!r}")
