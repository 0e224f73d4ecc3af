"""The flow of CAGE, apart from the network: `FlowPath` owns every convention of the probability path.

Path (t = 0 noise, t = 1 data): x_t = (1 - (1 - sigma) t) * noise + t * latent; velocity u = latent - (1 - sigma) noise.
Training asks the path for timestamps, x_t, the target velocity and the masked loss; `generate()` asks it for the
time span it integrates over, the times of clean (conditioning) frames and the staggered target times of rollout.
Changing the interpolant is a change to this file alone.

The module-level functions are the same maths for callers that hold only sigma.
"""
from __future__ import annotations

from typing import Optional

import torch

NOISE_TIME = 0.0  # t of pure noise: where sampling starts
CLEAN_TIME = 1.0  # t of data: context and reference frames are given at this time, sampling ends here


def _expand(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """t [b l] -> [b l 1 1 1] broadcastable against latents [b l s h w]."""
    return t.reshape(t.shape + (1,) * (like.ndim - t.ndim))


class FlowPath:
    """The conditional optimal-transport path from noise to data with minimum noise level `sigma`."""

    def __init__(self, sigma: float):
        self.sigma = float(sigma)

    def __repr__(self) -> str:
        return f"FlowPath(sigma={self.sigma!r})"

    # Training ----------------------------------------------------------------------------------------------------
    def sample_timestamps(self, batch: int, num_frames: int, num_clean: int, same_t: bool = False,
                          device: Optional[torch.device] = None,
                          generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Timestamps [b l]: the first `num_clean` frames (context and reference) clean, the rest U[0, 1), one value
        per frame, or one shared value per sample when `same_t`."""
        if same_t:
            t = torch.rand(batch, 1, device=device, generator=generator).expand(batch, num_frames).clone()
        else:
            t = torch.rand(batch, num_frames, device=device, generator=generator)
        t[:, :num_clean] = CLEAN_TIME
        return t

    def interpolate(self, latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Point x_t [b l s h w] on the path at times t [b l], computed in fp32 (autocast off)."""
        with torch.autocast(device_type=latents.device.type, enabled=False):
            t = _expand(t.float(), latents)
            return (1 - (1 - self.sigma) * t) * noise.float() + t * latents.float()

    def target_velocity(self, latents: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """d x_t / dt, the regression target (independent of t), in fp32."""
        with torch.autocast(device_type=latents.device.type, enabled=False):
            return latents.float() - (1 - self.sigma) * noise.float()

    @staticmethod
    def loss(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error over the kept tokens: sum(mask (pred - target)^2) / (channels * sum(mask)).

        prediction, target [b l s h w]; mask [b l 1 h w] with 1 for tokens the network saw.
        """
        channels = prediction.shape[2]
        squared = (prediction.float() - target.float()).pow(2) * mask.float()
        return squared.sum() / (channels * mask.float().sum()).clamp_min(1.0)

    # Sampling ----------------------------------------------------------------------------------------------------
    def time_span(self, device=None) -> torch.Tensor:
        """[noise time, clean time]: the interval the sampler integrates each stage over."""
        return torch.tensor([NOISE_TIME, CLEAN_TIME], device=device)

    def step_size(self, num_steps: int) -> float:
        """Step of a fixed-grid solver that crosses the span in `num_steps` steps."""
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        return (CLEAN_TIME - NOISE_TIME) / num_steps

    def clean_times(self, count: int, device=None) -> torch.Tensor:
        """Times [count] of frames given clean (context, reference)."""
        return torch.full((count,), CLEAN_TIME, device=device)

    def stage_times(self, stage: str, t: torch.Tensor, num_targets: int, scale_rolling: bool = True) -> tuple:
        """(times [T] of the T target frames, velocity scale [T] of each) at solver time t of a sampling stage.

        joint: all targets move together from noise to clean. warmup: target j reaches (T - j) / T, so the targets
        end staggered by 1/T. rolling: each target advances by 1/T (from (T-1-j)/T to (T-j)/T), so the first one ends
        clean and leaves; its velocity is scaled by 1/T (the original misses that factor: `scale_rolling=False`).
        """
        T = num_targets
        j = torch.arange(T, dtype=torch.float32, device=t.device)
        if stage == "joint":
            return t.expand(T), torch.ones(T, device=t.device)
        if stage == "warmup":
            return t * (T - j) / T, (T - j) / T
        if stage == "rolling":
            scale = torch.full((T,), 1.0 / T if scale_rolling else 1.0, device=t.device)
            return ((T - 1 - j) + t) / T, scale
        raise ValueError(f"unknown stage {stage!r}")

    def noise_levels(self, buffer_length: int, i: int, target_times: torch.Tensor) -> torch.Tensor:
        """Time of every buffer frame during a stage whose targets start at i: clean before i, the targets' times,
        noise after them."""
        levels = torch.full((buffer_length,), NOISE_TIME)
        levels[:i] = CLEAN_TIME
        levels[i:i + len(target_times)] = target_times.detach().float().cpu()
        return levels


# The same maths for callers that hold only sigma -------------------------------------------------------------------
def sample_timestamps(batch: int, num_frames: int, num_clean: int, same_t: bool = False,
                      device: Optional[torch.device] = None, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """`FlowPath.sample_timestamps` (the timestamps do not depend on sigma)."""
    return FlowPath(0.0).sample_timestamps(batch, num_frames, num_clean, same_t, device, generator)


def interpolate(latents: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, sigma: float) -> torch.Tensor:
    """`FlowPath(sigma).interpolate`."""
    return FlowPath(sigma).interpolate(latents, noise, t)


def target_velocity(latents: torch.Tensor, noise: torch.Tensor, sigma: float) -> torch.Tensor:
    """`FlowPath(sigma).target_velocity`."""
    return FlowPath(sigma).target_velocity(latents, noise)


masked_loss = FlowPath.loss
