"""Training-time corruption of a clip (reference-compat §4): everything random about a training example except the
flow's own noise and times (model/flow_matching.py).

- which frames: sorted context frames before a random reference, then the T targets after it;
- which control features: the targets' DINOv2 features of a random crop, pasted back where the crop came from, and
  the cells the crop covers (`allowed`);
- which controls the network sees: each allowed cell revealed with probability feats_select_prob;
- which conditioning is dropped: per sample, the context (and then the reference) replaced by noise.

`Model.forward` runs these in this order (the order of the random draws is part of the golden parity).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F

from model import rng

CROP_SCALE_RANGE = (0.5, 1.0)  # per axis, anisotropic
CROP_SHIFT_RANGE = (-0.75, 0.75)
INVERSE_EPS = 1e-9


class Corruption:
    """The corruption settings of `model` (num_context_frames, num_target_frames, feats_select_prob, no_context_p,
    no_reference_p, no_scale_inv) and the random draws that use them."""

    def __init__(self, num_context_frames: int, num_target_frames: int, feats_select_prob: float,
                 no_context_p: float, no_reference_p: float, no_scale_inv: bool = False):
        self.num_context_frames, self.num_target_frames = int(num_context_frames), int(num_target_frames)
        self.feats_select_prob = float(feats_select_prob)
        self.no_context_p, self.no_reference_p = float(no_context_p), float(no_reference_p)
        self.no_scale_inv = bool(no_scale_inv)

    @property
    def num_clean(self) -> int:
        """Frames given clean to the network: the context frames and the reference."""
        return self.num_context_frames + 1

    def frame_indices(self, batch: int, num_observations: int, device=None,
                      generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """[b l] clip indices: sorted context frames in [0, r), reference r in [Cc, O-T-1], targets r+1 .. r+T."""
        cc, t = self.num_context_frames, self.num_target_frames
        if num_observations < cc + t + 1:
            raise ValueError(f"need at least {cc + t + 1} observations per clip, got {num_observations}")
        gen_device = rng.draw_device(generator, "cpu")
        reference = torch.randint(cc, num_observations - t, (batch,), device=gen_device, generator=generator)
        context = (torch.rand(batch, cc, device=gen_device, generator=generator) * reference[:, None]).long()
        context = context.sort(dim=1).values
        targets = reference[:, None] + torch.arange(1, t + 1, device=gen_device)
        return torch.cat([context, reference[:, None], targets], dim=1).to(device)

    def random_crops(self, count: int, device, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """[count 4] crop parameters (s_x, s_y, t_x, t_y): scales U[0.5,1) and shifts U[-0.75,0.75) per axis
        (the identity with no_scale_inv)."""
        if self.no_scale_inv:
            return torch.tensor([1.0, 1.0, 0.0, 0.0], device=device).expand(count, 4).clone()
        scales = rng.uniform((count, 2), *CROP_SCALE_RANGE, device, generator)
        shifts = rng.uniform((count, 2), *CROP_SHIFT_RANGE, device, generator)
        return torch.cat([scales, shifts], dim=1)

    def control_features(self, frames: torch.Tensor, features_of: Callable[[torch.Tensor], torch.Tensor],
                         generator: Optional[torch.Generator] = None) -> tuple:
        """Features of randomly cropped frames warped back to the full frame: (feats [n F h w], allowed [n 1 h w]).

        frames [n 3 H W]; features_of: frames [n 3 H W] -> features [n F h w]; `allowed` marks the latent cells that
        the crop window covers.
        """
        n = frames.shape[0]
        s_x, s_y, t_x, t_y = self.random_crops(n, frames.device, generator).unbind(1)
        zero = torch.zeros_like(s_x)
        crop = torch.stack([torch.stack([s_x, zero, t_x], 1), torch.stack([zero, s_y, t_y], 1)], 1)  # [n 2 3]
        grid = F.affine_grid(crop, list(frames.shape), align_corners=False)
        cropped = F.grid_sample(frames, grid, mode="bilinear", padding_mode="border", align_corners=False)
        feats = features_of(cropped)  # [n F h w]
        inv_x, inv_y = 1.0 / (s_x + INVERSE_EPS), 1.0 / (s_y + INVERSE_EPS)
        inverse = torch.stack([torch.stack([inv_x, zero, -t_x * inv_x], 1), torch.stack([zero, inv_y, -t_y * inv_y], 1)], 1)
        h, w = feats.shape[-2:]
        # The grid is built and sampled in fp32 whatever the features' dtype: a bf16 grid coordinate can round
        # across a cell boundary, and nearest sampling would then copy a neighbouring cell. The round trip of
        # the features through fp32 is exact.
        with torch.autocast(feats.device.type, enabled=False):  # autocast would run affine_grid's bmm in bf16
            back = F.affine_grid(inverse.float(), [n, feats.shape[1], h, w], align_corners=False)
            sampled = F.grid_sample(feats.float(), back, mode="nearest", padding_mode="zeros", align_corners=False)
            ones = torch.ones(n, 1, h, w, device=feats.device, dtype=torch.float32)
            allowed = F.grid_sample(ones, back, mode="nearest", padding_mode="zeros", align_corners=False)
        return sampled.to(feats.dtype), allowed.to(feats.dtype)

    def sparsify(self, allowed: torch.Tensor, select_prob: Optional[float] = None,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Control masks: each cell revealed with probability select_prob * allowed (same shape as `allowed`)."""
        prob = self.feats_select_prob if select_prob is None else select_prob
        draw = rng.uniform(allowed.shape, 0.0, 1.0, allowed.device, generator)
        return (draw < prob * allowed).to(allowed.dtype)

    def drop_conditioning(self, inputs: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Per sample: with no_context_p replace the context latents by noise, and then with no_reference_p also the
        reference latent (the original draws one coin per batch; per sample has the same expectation, less variance)."""
        b, cc = inputs.shape[0], self.num_context_frames
        drop_context = rng.uniform((b,), 0.0, 1.0, inputs.device, generator) < self.no_context_p
        drop_reference = drop_context & (rng.uniform((b,), 0.0, 1.0, inputs.device, generator) < self.no_reference_p)
        replaced = rng.normal(inputs[:, : cc + 1].shape, inputs.device, generator, dtype=inputs.dtype)
        frame = torch.arange(inputs.shape[1], device=inputs.device)
        drop = (frame[None, :] < cc) & drop_context[:, None] | (frame[None, :] == cc) & drop_reference[:, None]  # [b l]
        drop = drop[:, : cc + 1, None, None, None]
        inputs = inputs.clone()
        inputs[:, : cc + 1] = torch.where(drop, replaced.to(inputs.dtype), inputs[:, : cc + 1])
        return inputs


class CorruptionSetting:
    """A `Model` attribute that is one of its corruption's settings: read from and written to `model.corruption`
    (so `model.feats_select_prob = 0` changes what training reveals, as in the original)."""

    def __set_name__(self, owner, name: str) -> None:
        self.name = name

    def __get__(self, obj, owner=None):
        return self if obj is None else getattr(obj.corruption, self.name)

    def __set__(self, obj, value) -> None:
        setattr(obj.corruption, self.name, value)
