"""Flow-matching maths of CAGE, apart from the network: timestamps, the probability path, its velocity, the loss.

Path (t = 0 noise, t = 1 data): x_t = (1 - (1 - sigma) t) * noise + t * latent; velocity u = latent - (1 - sigma) noise.
"""
from __future__ import annotations

from typing import Optional

import torch


def sample_timestamps(
    batch: int,
    num_frames: int,
    num_clean: int,
    same_t: bool = False,
    device: Optional[torch.device] = None,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Timestamps [b l]: the first `num_clean` frames (context and reference) at t = 1, the rest U[0, 1),
    one value per frame, or one shared value per sample when `same_t`."""
    if same_t:
        t = torch.rand(batch, 1, device=device, generator=generator).expand(batch, num_frames).clone()
    else:
        t = torch.rand(batch, num_frames, device=device, generator=generator)
    t[:, :num_clean] = 1.0
    return t


def _expand(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """t [b l] -> [b l 1 1 1] broadcastable against latents [b l s h w]."""
    return t.reshape(t.shape + (1,) * (like.ndim - t.ndim))


def interpolate(latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, sigma: float) -> torch.Tensor:
    """Point x_t on the path, computed in fp32 (autocast off)."""
    with torch.autocast(device_type=latents.device.type, enabled=False):
        t = _expand(t.float(), latents)
        return (1 - (1 - sigma) * t) * noise.float() + t * latents.float()


def target_velocity(latents: torch.Tensor, noise: torch.Tensor, sigma: float) -> torch.Tensor:
    """d x_t / dt, the regression target (independent of t), in fp32."""
    with torch.autocast(device_type=latents.device.type, enabled=False):
        return latents.float() - (1 - sigma) * noise.float()


def masked_loss(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the kept tokens: sum(mask (pred - target)^2) / (channels * sum(mask)).

    prediction, target [b l s h w]; mask [b l 1 h w] with 1 for tokens the network saw.
    """
    channels = prediction.shape[2]
    squared = (prediction.float() - target.float()).pow(2) * mask.float()
    return squared.sum() / (channels * mask.float().sum()).clamp_min(1.0)
