"""Frame conversions for display: [-1,1] float frames to uint8."""
from __future__ import annotations

import numpy as np
import torch


def to_image(x: torch.Tensor) -> torch.Tensor:
    """Map frames in [-1,1] to uint8 tensors with the same layout (values clamped first)."""
    return ((x.detach().float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)


def to_video(x: torch.Tensor) -> np.ndarray:
    """Map frames [b l 3 H W] (any layout) in [-1,1] to a uint8 numpy array with the same layout.

    `round((x+1)*127.5)` is the exact inverse of the data pipeline's `x/127.5 - 1`, so stored frames round-trip.
    """
    return to_image(x).cpu().numpy()
