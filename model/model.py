"""The CAGE model: frozen VQ autoencoder + frozen DINOv2 features + the flow-matching vector-field regressor.

`Model` is the network and its frozen parts: it checks its config (the schema, state_size against the autoencoder,
`check_frame_size`), encodes, decodes, extracts features and predicts velocities; `forward` is the training step's
recipe, whose random corruption lives in model/corruption.py and whose path maths in model/flow_matching.py.
`Model.from_config` builds it from a whole config and loads a checkpoint (key rules: model/checkpoint.py).

`Model(config["model"])` builds it from the original config schema without changing the config; its state dict
keys are the original's (`ae.*`, `dino.*`, `vector_field_regressor.*`), so original checkpoints load unchanged.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Optional

import torch
from einops import rearrange
from torch import nn

from lutils import schema
from lutils.configuration import ConfigurationError
from lutils.dict_wrapper import DictWrapper
from model import rng
from model.autoencoder import build_autoencoder
from model.checkpoint import CheckpointError, cage_state_dict, key_diff, load_file
from model.corruption import Corruption, CorruptionSetting
from model.dino import build_dino
from model.flow_matching import FlowPath
from model.regressor import VectorFieldRegressor

log = logging.getLogger(__name__)

REGRESSOR_KEYS = (
    "state_size", "state_res", "inner_dim", "depth", "mid_depth", "fc_dim", "num_heads", "dropout",
    "max_relative_position", "masking_ratio", "causal",
)


class Model(nn.Module):
    """CAGE: encode frames, extract control features, and predict flow-matching velocities in latent space."""

    feats_select_prob = CorruptionSetting()
    no_context_p = CorruptionSetting()
    no_reference_p = CorruptionSetting()
    no_scale_inv = CorruptionSetting()

    def __init__(self, config: Mapping):
        super().__init__()
        # A validated copy with every default filled in (lutils/schema.py): the caller's config is never modified.
        config = schema.complete("model", config)
        self.config = config
        self.sigma = float(config["sigma"])
        self.path = FlowPath(self.sigma)  # timestamps, x_t, target velocity, loss; the sampler's times
        self.num_target_frames = int(config["num_target_frames"])
        self.num_context_frames = int(config["num_context_frames"])
        self.num_frames = self.num_context_frames + 1 + self.num_target_frames
        # frames, crops, revealed controls and dropped conditioning of training examples (model/corruption.py)
        self.corruption = Corruption(self.num_context_frames, self.num_target_frames, config["feats_select_prob"],
                                     config["no_context_p"], config["no_reference_p"], config["no_scale_inv"])
        # Latents are multiplied by this after encoding (divided before decoding) so that they have about the unit
        # variance of the flow's noise. 1 (the original's behaviour) unless the config sets it, e.g. for our VQVAE.
        self.latent_scale = float(config["latent_scale"])
        if not self.latent_scale > 0:
            raise ConfigurationError(f"model.latent_scale must be a positive number, got {config['latent_scale']!r}")
        self.same_t = bool(config["same_t"])
        backbone = config["feature_backbone"]
        if backbone != "dino":
            raise ConfigurationError(
                f"model.feature_backbone '{backbone}' is not supported: only 'dino' is (the original's 'mae' and "
                f"'clip' paths are broken, see the compatibility notes)"
            )
        self.num_dino_layers = int(config["num_dino_layers"])
        self.ae = build_autoencoder(config["autoencoder"], trust=bool(config["trust_checkpoints"]))
        self.dino = build_dino(config)
        vfr = config["vector_field_regressor"]
        self.state_res = tuple(int(v) for v in vfr["state_res"])
        if int(vfr["state_size"]) != self.ae.latent_channels:
            raise ConfigurationError(
                f"model.vector_field_regressor.state_size is {vfr['state_size']}, but the autoencoder "
                f"(model.autoencoder, type {config['autoencoder']['type']!r}) has {self.ae.latent_channels} latent "
                f"channels: set state_size to {self.ae.latent_channels}")
        self.vector_field_regressor = VectorFieldRegressor(
            **{key: vfr[key] for key in REGRESSOR_KEYS},
            feats_dim=self.feats_dim,
            num_frames=self.num_frames,
            attention=vfr["attention"],
            activation_checkpointing=vfr["activation_checkpointing"],  # acts only where gradients are taken
        )

    @classmethod
    def from_config(cls, config: Mapping, ckpt: Optional[str | Path] = None, trust: bool = False,
                    use_ema: bool = True) -> "Model":
        """The model of a whole config (`model` and `data` sections), its frame size checked against state_res, with
        the checkpoint `ckpt` loaded when given (see load_from_ckpt)."""
        model = cls(config["model"])
        crop_size = config["data"].get("crop_size") if "data" in config else None
        if crop_size is not None:
            model.check_frame_size(crop_size, f"{getattr(config, 'path', '<config>')}: data.crop_size")
        return model if ckpt is None else model.load_from_ckpt(ckpt, trust=trust, use_ema=use_ema)

    def check_frame_size(self, crop_size: int, source: str = "data.crop_size") -> None:
        """Frames of crop_size pixels must encode to the state_res latent grid (crop size / the autoencoder's
        downsampling); fails naming the key to fix instead of deep inside the regressor."""
        factor = self.ae.downsample_factor
        grid = (int(crop_size) // factor,) * 2
        if int(crop_size) % factor or grid != self.state_res:
            raise ConfigurationError(
                f"{source} is {crop_size}, which the autoencoder (downsampling {factor}) encodes to a "
                f"{int(crop_size) / factor:g} x {int(crop_size) / factor:g} grid, but "
                f"model.vector_field_regressor.state_res is {list(self.state_res)}: set state_res to "
                f"[{int(crop_size) // factor}, {int(crop_size) // factor}] or crop_size to "
                f"{self.state_res[0] * factor}")

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

    # Training step -----------------------------------------------------------------------------------------------
    def sample_frame_indices(self, batch: int, num_observations: int, device=None,
                             generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """`Corruption.frame_indices`: [b l] clip indices of context, reference and targets."""
        return self.corruption.frame_indices(batch, num_observations, device, generator)

    def random_crops(self, count: int, device, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """`Corruption.random_crops`: [count 4] crop parameters."""
        return self.corruption.random_crops(count, device, generator)

    def control_features(self, frames: torch.Tensor, generator: Optional[torch.Generator] = None) -> tuple:
        """`Corruption.control_features` with this model's features: (feats [n F h w], allowed [n 1 h w])."""
        return self.corruption.control_features(frames, self.get_features, generator)

    @torch.no_grad()
    def revealed_controls(self, frames: torch.Tensor, select_prob: Optional[float] = None,
                          generator: Optional[torch.Generator] = None) -> tuple:
        """Controls made from real frames [b l 3 H W]: (their features [b l F h w], masks [b l 1 h w] revealing each
        cell with probability select_prob, default feats_select_prob), as training samples and evaluation use."""
        feats = self.get_features(frames)
        allowed = torch.ones(*feats.shape[:2], 1, *feats.shape[3:], device=feats.device)  # fp32: the same draws
        return feats, self.sparsify(allowed, select_prob, generator)

    def sparsify(self, allowed: torch.Tensor, select_prob: Optional[float] = None,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """`Corruption.sparsify`: each allowed cell revealed with probability select_prob (feats_select_prob)."""
        return self.corruption.sparsify(allowed, select_prob, generator)

    def drop_conditioning(self, inputs: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """`Corruption.drop_conditioning`: context / reference latents replaced by noise per sample."""
        return self.corruption.drop_conditioning(inputs, generator)

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
        device, t = observations.device, self.num_target_frames
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
        timestamps = self.path.sample_timestamps(b, self.num_frames, self.corruption.num_clean, self.same_t,
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
        state, ema_updates = cage_state_dict(load_file(path, trust=trust), path, use_ema)
        if ema_updates is not None:
            log.info("%s: using the EMA weights (%d updates)", path, ema_updates)
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
