"""Random draws that honour an optional torch.Generator: drawn on the generator's device (or a default one), then
moved to where they are used. Keeps seeded results identical whatever device the model runs on."""
from __future__ import annotations

from typing import Optional

import torch


def draw_device(generator: Optional[torch.Generator], default):
    """Where a draw must happen: the generator's device, else `default`."""
    return generator.device if generator is not None else default


def uniform(shape, low: float, high: float, device, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """U[low, high) on `device`."""
    draw = torch.rand(shape, device=draw_device(generator, device), generator=generator)
    return (draw * (high - low) + low).to(device)


def normal(shape, device, generator: Optional[torch.Generator] = None, dtype=None, default=None) -> torch.Tensor:
    """N(0, 1) on `device`, drawn on the generator's device, else on `default` (else `device`)."""
    where = draw_device(generator, device if default is None else default)
    return torch.randn(shape, device=where, dtype=dtype, generator=generator).to(device)


def randint(low: int, high: int, shape, device, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Integers in [low, high) on `device`."""
    return torch.randint(low, high, shape, device=draw_device(generator, device), generator=generator).to(device)
