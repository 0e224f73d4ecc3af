"""The CAGE model: frozen VQ autoencoder + frozen DINOv2 features + the flow-matching vector-field regressor.

`Model(config["model"])` builds it from the original config schema without changing the config; its state dict
keys are the original's (`ae.*`, `dino.*`, `vector_field_regressor.*`), so original checkpoints load unchanged.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from lutils.configuration import to_plain
from lutils.dict_wrapper import DictWrapper
from model import rng
from model.autoencoder import build_autoencoder
from model.checkpoint import CheckpointError, extract_state_dict, key_diff, load_file, strip_prefix
from model.dino import build_dino
from model.flow_matching import FlowPath
from model.regressor import LEGACY_UNUSED_PREFIXES, VectorFieldRegressor

log = logging.getLogger(__name__)

CROP_SCALE_RANGE = (0.5, 1.0)  # per axis, anisotropic
CROP_SHIFT_RANGE = (-0.75, 0.75)
INVERSE_EPS = 1e-9
REGRESSOR_KEYS = (
    "state_size", "state_res", "inner_dim", "depth", "mid_depth", "fc_dim", "num_heads", "dropout",
    "max_relative_position", "masking_ratio", "causal",
)


class Model(nn.Module):
    """CAGE: encode frames, extract control features, and predict flow-matching velocities in latent space."""

    def __init__(self, config: Mapping):
        super().__init__()
        config = to_plain(config)  # a copy: the caller's config is never modified
        self.config = config
        self.sigma = float(config["sigma"])
        self.path = FlowPath(self.sigma)  # timestamps, x_t, target velocity, loss; the sampler's times
        self.num_target_frames = int(config["num_target_frames"])
        self.num_context_frames = int(config["num_context_frames"])
        self.num_frames = self.num_context_frames + 1 + self.num_target_frames
        self.no_context_p = float(config["no_context_p"])
        self.no_reference_p = float(config["no_reference_p"])
        self.feats_select_prob = float(config["feats_select_prob"])
        self.no_scale_inv = bool(config.get("no_scale_inv", False))
        # Latents are multiplied by this after encoding (divided before decoding) so that they have about the unit
        # variance of the flow's noise. 1 (the original's behaviour) unless the config sets it, e.g. for our VQVAE.
        self.latent_scale = float(config.get("latent_scale", 1.0))
        if not self.latent_scale > 0:
            raise ValueError(f"model.latent_scale must be a positive number, got {config.get('latent_scale')!r}")
        self.same_t = bool(config.get("same_t", False))
        backbone = config.get("feature_backbone", "dino")
        if backbone != "dino":
            raise NotImplementedError(
                f"model.feature_backbone '{backbone}' is not supported: only 'dino' is (the original's 'mae' and "
                f"'clip' paths are broken, see the compatibility notes)"
            )
        self.num_dino_layers = int(config["num_dino_layers"])
        self.ae = build_autoencoder(config["autoencoder"], trust=bool(config.get("trust_checkpoints", False)))
        self.dino = build_dino(config)
        vfr = config["vector_field_regressor"]
        self.state_res = tuple(int(v) for v in vfr["state_res"])
        self.vector_field_regressor = VectorFieldRegressor(
            **{key: vfr[key] for key in REGRESSOR_KEYS},
            feats_dim=self.feats_dim,
            num_frames=self.num_frames,
            attention=vfr.get("attention", "sdpa"),
        )

    @property
    def feats_dim(self) -> int:
        """F, the channels of the control features: DINO width x number of concatenated blocks."""
        return self.dino.embed_dim * self.num_dino_layers

    @property
    def state_size(self) -> int:
        return int(self.config["vector_field_regressor"]["state_size"])

    # Frozen parts ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames [b l 3 H W] in [-1, 1] -> unquantized latents [b l s h w], times latent_scale."""
        return self.scale_latents(self.ae.encode(frames))

    def scale_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """The autoencoder's latents times latent_scale (no operation at the original's scale of 1)."""
        return latents if self.latent_scale == 1.0 else latents * self.latent_scale

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents [b l s h w] -> frames [b l 3 H W] (quantized first; always with the autoencoder in eval mode)."""
        return self.ae.decode(latents if self.latent_scale == 1.0 else latents / self.latent_scale)

    @torch.no_grad()
    def get_features(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames [b l 3 H W] (or [n 3 H W]) in [-1, 1] -> DINOv2 features [b l F h w] at state_res."""
        flat = frames.ndim == 4
        x = frames if flat else rearrange(frames, "b l c h w -> (b l) c h w")
        feats = self.dino.get_features(x, self.num_dino_layers, self.state_res)
        return feats if flat else rearrange(feats, "(b l) f h w -> b l f h w", b=frames.shape[0])

    def sparsify(self, allowed: torch.Tensor, select_prob: Optional[float] = None,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Control masks: each cell revealed with probability select_prob * allowed (same shape as `allowed`)."""
        prob = self.feats_select_prob if select_prob is None else select_prob
        draw = rng.uniform(allowed.shape, 0.0, 1.0, allowed.device, generator)
        return (draw < prob * allowed).to(allowed.dtype)

    # Training step -----------------------------------------------------------------------------------------------
    def sample_frame_indices(self, batch: int, num_observations: int, device=None,
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
        """[count 4] crop parameters (s_x, s_y, t_x, t_y): scales U[0.5,1) and shifts U[-0.75,0.75) per axis."""
        if self.no_scale_inv:
            return torch.tensor([1.0, 1.0, 0.0, 0.0], device=device).expand(count, 4).clone()
        scales = rng.uniform((count, 2), *CROP_SCALE_RANGE, device, generator)
        shifts = rng.uniform((count, 2), *CROP_SHIFT_RANGE, device, generator)
        return torch.cat([scales, shifts], dim=1)

    def control_features(self, frames: torch.Tensor, generator: Optional[torch.Generator] = None) -> tuple:
        """Features of randomly cropped frames warped back to the full frame: (feats [n F h w], allowed [n 1 h w]).

        frames [n 3 H W]; `allowed` marks the latent cells that the crop window covers.
        """
        n = frames.shape[0]
        s_x, s_y, t_x, t_y = self.random_crops(n, frames.device, generator).unbind(1)
        zero = torch.zeros_like(s_x)
        crop = torch.stack([torch.stack([s_x, zero, t_x], 1), torch.stack([zero, s_y, t_y], 1)], 1)  # [n 2 3]
        grid = F.affine_grid(crop, list(frames.shape), align_corners=False)
        cropped = F.grid_sample(frames, grid, mode="bilinear", padding_mode="border", align_corners=False)
        feats = self.get_features(cropped)  # [n F h w]
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

    def forward(self, observations: torch.Tensor, generator: Optional[torch.Generator] = None,
                latents: Optional[torch.Tensor] = None, features: Optional[torch.Tensor] = None) -> DictWrapper:
        """One training step's prediction on clips [b O 3 H W] in [-1, 1] (reference-compat §4).

        Returns a DictWrapper (a dict with attribute access, as the original) of reconstructed_vectors and
        target_vectors [b T s h w], selected_masks [b T 1 h w] (tokens the network saw) and num_controls (mean revealed
        control cells per target frame). The loss is
        `model.path.loss(reconstructed_vectors, target_vectors, selected_masks)`. `latents` [b O s h w]:
        the autoencoder's latents of the observations, when they are cached, instead of encoding the frames.
        `features` [b O F h w]: the control features of the whole observations, when they are cached (only with
        no_scale_inv, where no crop changes them); with both, `observations` may be a placeholder [b O ...].
        """
        b, num_obs = observations.shape[:2]
        device, cc, t = observations.device, self.num_context_frames, self.num_target_frames
        indices = self.sample_frame_indices(b, num_obs, device, generator)  # [b l]
        batch_index = torch.arange(b, device=device)[:, None]
        frames = observations[batch_index, indices]  # [b l 3 H W]
        if latents is None:
            latents = self.encode(frames)
        else:  # the autoencoder's latents of every observation, cached (dataset/latent_cache.py): [b O s h w]
            latents = self.scale_latents(latents.to(device)[batch_index, indices])

        if features is None:
            feats, allowed = self.control_features(rearrange(frames[:, -t:], "b l c h w -> (b l) c h w"), generator)
            feats = rearrange(feats, "(b l) f h w -> b l f h w", b=b)
            allowed = rearrange(allowed, "(b l) 1 h w -> b l 1 h w", b=b)
        else:  # cached (dataset/latent_cache.py): every cell is allowed, as with the identity crop of no_scale_inv
            if not self.no_scale_inv:
                raise ValueError("cached control features need model.no_scale_inv: true (random crops change them)")
            feats = features.to(device)[batch_index, indices][:, -t:]
            allowed = feats.new_ones(b, t, 1, *feats.shape[-2:])
        masks = self.sparsify(allowed, generator=generator)

        noise = rng.normal(latents.shape, latents.device, generator, dtype=latents.dtype)
        timestamps = self.path.sample_timestamps(b, self.num_frames, cc + 1, self.same_t,
                                                 device=rng.draw_device(generator, device), generator=generator).to(device)
        inputs = self.path.interpolate(latents, noise, timestamps)
        targets = self.path.target_velocity(latents, noise)
        inputs = self.drop_conditioning(inputs, generator)

        vectors, kept = self.vector_field_regressor(inputs, indices, timestamps, feats, masks, generator=generator)
        return DictWrapper(
            reconstructed_vectors=vectors[:, -t:],
            target_vectors=targets[:, -t:],
            selected_masks=kept[:, -t:],
            num_controls=masks.sum(dim=(2, 3, 4)).float().mean(),
        )

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

    # Inference ---------------------------------------------------------------------------------------------------
    def predict_vector_field(self, x: torch.Tensor, t: torch.Tensor, indices: torch.Tensor, feats: torch.Tensor,
                             feats_masks: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Velocity [b l s h w] for latents x [b l s h w] at timestamps t [b l], with all tokens kept."""
        velocity, _ = self.vector_field_regressor(x, indices, t, feats, feats_masks, masking_ratio=0.0, generator=generator)
        return velocity

    # Checkpoints -------------------------------------------------------------------------------------------------
    def load_from_ckpt(self, path: str | Path, trust: bool = False, use_ema: bool = True) -> "Model":
        """Load a CAGE checkpoint: `{"model": state_dict}` or a bare state dict, with or without DDP's `module.`
        prefix and the legacy `dino_project_in` name. Regressor keys must match exactly; `ae.*` and `dino.*` are
        loaded when the file has them (all of them) and otherwise left as they are. Checkpoints of our trainer also
        hold EMA weights, which are used unless `use_ema=False`."""
        content = load_file(path, trust=trust)
        state = extract_state_dict(content, path, keys=("model",))
        ema = content.get("ema") if isinstance(content, Mapping) and use_ema else None
        if ema is not None:
            state.update(ema["shadow"])
            log.info("%s: using the EMA weights (%d updates)", path, ema["num_updates"])
        if any(key.startswith("module.") for key in state):
            state = strip_prefix(state, "module.")
        state = {key.replace("dino_project_in", "feats_project_in"): value for key, value in state.items()}
        legacy = tuple("vector_field_regressor." + p for p in LEGACY_UNUSED_PREFIXES)
        state = {key: value for key, value in state.items() if not key.startswith(legacy)}
        expected = self.state_dict()
        skipped = [section for section in ("ae.", "dino.") if not any(key.startswith(section) for key in state)]
        expected = {key: value for key, value in expected.items() if not key.startswith(tuple(skipped))}
        diff = key_diff(expected, state)
        if diff is not None:
            raise CheckpointError(f"{path}: checkpoint does not match the model built from this config:\n{diff}")
        self.load_state_dict(state, strict=False)
        loaded = sorted({key.split(".")[0] for key in state})
        log.info("loaded %s from %s%s", ", ".join(loaded), path,
                 f" (not in file, kept as they were: {', '.join(s.rstrip('.') for s in skipped)})" if skipped else "")
        return self
