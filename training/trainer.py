"""CAGE training: the flow-matching regressor of a Model, on top of the generic loop (training/loop.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from dataset.clips import seeded_pick
from dataset.transforms import to_float
from lutils.configuration import ConfigurationError, to_plain
from model.checkpoint import export_for_original, load_strict, select_prefix
from model.model import Model
from training.distributed import barrier
from training.loop import DEFAULTS, VAL_SEED, BaseTrainer, TrainingStopped, run_directory

# The model settings that a frame's control features depend on (with the backbone's weights): the feature cache's key.
FEATURE_SETTINGS = ("feature_backbone", "dino_version", "dino_arch", "num_dino_layers", "dino_input_size")

REGRESSOR_PREFIX = "vector_field_regressor."

__all__ = ["Trainer", "TrainingStopped", "DEFAULTS", "run_directory"]


class Trainer(BaseTrainer):
    """Trains the vector-field regressor of a Model on HDF5 clips; see train.py for the command line."""

    def build_model(self) -> Model:
        self.loss_weight = float(self.options["loss_weights"]["flow_matching_loss"])
        model = Model.from_config(self.config)  # with model.vector_field_regressor.activation_checkpointing if set
        if self.options["compile"]:  # off by default (lutils/schema.py, README "Training")
            model.vector_field_regressor.compile()  # in place: parameter names, EMA and checkpoints are unchanged
        return model

    # Resume state: what the config cannot rebuild; snapshot: everything to sample -----------------------------------
    def state_dict_for_checkpoint(self) -> dict:
        """The regressor's raw weights (its EMA weights are saved under "ema"), and a frozen part only when it has
        random weights (no file in the config to load them from again)."""
        kept = (REGRESSOR_PREFIX,) + tuple(f"{name}." for name, part in (("ae", self.model.ae), ("dino", self.model.dino))
                                           if not part.weights.loaded)
        return {key: value for key, value in self.model.state_dict().items() if key.startswith(kept)}

    def load_model_state(self, state: dict) -> None:
        """The regressor's weights; files written before resume state and snapshots were apart also hold the frozen
        parts, which are loaded as they were then."""
        load_strict(self.model.vector_field_regressor, select_prefix(state, REGRESSOR_PREFIX), "resume state")
        frozen = {key: value for key, value in state.items() if not key.startswith(REGRESSOR_PREFIX)}
        if frozen:
            self.model.load_state_dict(frozen, strict=False)

    def snapshot(self) -> dict:
        """EMA regressor plus the frozen autoencoder and DINOv2 in the original's layout (`{"model": ...}`, with its
        dead time_projection weights as zeros): loads with `Model.load_from_ckpt` here and in the original code."""
        inner_dim = int(self.config["model"]["vector_field_regressor"]["inner_dim"])
        ema = self.ema.shadow if self.ema is not None else None
        return {**export_for_original(self.model.state_dict(), inner_dim, ema), "global_step": self.global_step,
                "ema_weights": self.ema is not None, "config": self.config.to_dict()}

    def check_weights(self) -> None:
        for part in (self.model.ae, self.model.dino):
            part.weights.require()  # missing autoencoder / backbone weights: fail before any work
            if part.weights.allow_random and not part.weights.loaded:
                self.logger.warning(f"{part.weights.what} uses random weights (allowed by the config)")

    def training_clips(self):
        """Clips with their cached latents when `training.latent_cache` is on (rank 0 builds the cache)."""
        if not self.options["latent_cache"]:
            if self.options["feature_cache"]:
                raise ConfigurationError("training.feature_cache needs training.latent_cache: true (both live in one file)")
            return super().training_clips()
        from dataset.latent_cache import CachedClips, FeatureSource, open_or_build
        ae, model_config = self.model.ae, to_plain(self.config["model"])  # as written: the caches' identity
        features = None
        if self.options["feature_cache"]:
            if not self.model.no_scale_inv:
                raise ConfigurationError("training.feature_cache needs model.no_scale_inv: true (with random crops a frame's "
                                 "control features change at every step); set one or drop the other")
            settings = {key: model_config.get(key) for key in FEATURE_SETTINGS}
            settings["state_res"] = list(self.model.state_res)
            features = FeatureSource(self.model.dino, settings,
                                     lambda frames: self.model.get_features(frames.to(self.device)))
        cache = open_or_build(self.train_set, ae, model_config["autoencoder"],
                              lambda frames: ae.encode(frames.to(self.device)[None])[0],
                              build_here=self.info.is_main, progress=self.info.is_main, features=features)
        barrier(self.info)  # the other ranks read the cache rank 0 has built
        self.logger.info(f"latent cache: {cache.path}" + (" (latents and control features; frames are not read)"
                                                          if features is not None else ""))
        return CachedClips(self.train_set, cache, features=features is not None)

    def forward_loss(self, observations: torch.Tensor, latents: Optional[torch.Tensor] = None,
                     features: Optional[torch.Tensor] = None) -> tuple:
        if latents is not None:
            latents = latents[:, : self.num_observations].to(self.device, non_blocking=True)
        if features is not None:
            features = features[:, : self.num_observations].to(self.device, non_blocking=True)
        out = self.ddp_model(observations, generator=self.generator, latents=latents, features=features)
        fm_loss = self.model.path.loss(out["reconstructed_vectors"], out["target_vectors"], out["selected_masks"])
        return self.loss_weight * fm_loss, {"Training/Loss/flow_matching_loss": fm_loss,
                                            "Training/Stats/num_controls": out["num_controls"]}

    @torch.no_grad()
    def validate(self) -> Optional[dict]:
        """Mean loss of the EMA weights on fixed validation clips with fixed randomness (comparable across runs).

        Also the same loss with every control hidden: `Validation/control_gain` (loss without controls minus loss
        with them) shows whether the model has learned to use its control features at all; it stays near 0 until it
        does."""
        if self.val_set is None:
            return None
        values = None
        if self.info.is_main:
            clips = seeded_pick(self.val_set, self.options["val_clips"], VAL_SEED)
            with self.inference_weights():
                self.model.eval()
                loss = self._validation_loss(clips)
                select_prob = self.model.feats_select_prob
                try:
                    self.model.feats_select_prob = 0.0  # same draws, so the two losses differ only by the controls
                    loss_without = self._validation_loss(clips)
                finally:
                    self.model.feats_select_prob = select_prob
            values = {"Validation/loss": loss, "Validation/loss_without_controls": loss_without,
                      "Validation/control_gain": loss_without - loss}
        barrier(self.info)
        return values

    def _validation_loss(self, clips: list) -> float:
        generator = torch.Generator(self.device).manual_seed(VAL_SEED)
        total, batches = 0.0, 0
        for start in range(0, len(clips), self.batch_size):
            batch = to_float(torch.stack(clips[start:start + self.batch_size]).to(self.device))
            with self.autocast:
                out = self.model(batch[:, : self.num_observations], generator=generator)
                total += self.model.path.loss(out["reconstructed_vectors"], out["target_vectors"], out["selected_masks"]).item()
            batches += 1
        return total / batches

    @torch.no_grad()
    def sample(self) -> Optional[Path]:
        """Sample videos with the EMA weights on fixed validation clips: the first frame as input, the ground truth's
        features revealed sparsely (feats_select_prob) as controls. Writes samples/step_N.png (rows: real, generated)
        and samples/step_N.gif."""
        from lutils.media import save_contact_sheet, write_video
        from model.generation import generate

        written = None
        if self.info.is_main and self.val_set is not None:
            clips = seeded_pick(self.val_set, self.options["sample_clips"], VAL_SEED)
            real = to_float(torch.stack(clips).to(self.device))
            frames = min(int(self.options["sample_frames"]), real.shape[1] - 1)
            real = real[:, : frames + 1]
            with self.inference_weights(), self.autocast:
                feats, masks = self.model.revealed_controls(real[:, 1:],
                                                            generator=torch.Generator(self.device).manual_seed(VAL_SEED))
                video = generate(self.model, frames, self.device, initial_frames=real[:, :1], feats=feats,
                                 feats_masks=masks, num_steps=int(self.options["sample_steps"]), seed=VAL_SEED)
            folder = self.run_dir / "samples"
            rows = torch.stack([row for pair in zip(real.cpu(), video.clamp(-1, 1)) for row in pair])
            written = save_contact_sheet(folder / f"step_{self.global_step}.png", rows)
            write_video(folder / f"step_{self.global_step}.gif", torch.cat(list(video.clamp(-1, 1)), dim=-1), fps=4)
            self.logger.info(f"step {self.global_step}: samples written to {written} and .gif")
        barrier(self.info)
        return written
