"""The training loop: CPU (fp32) and CUDA (bf16 autocast) from one code path, DDP, exact resume, EMA, validation."""
from __future__ import annotations

import inspect
import math
import re
import signal
import time
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from dataset.transforms import to_float
from lutils.configuration import Configuration
from lutils.logger import Logger
from model.checkpoint import CheckpointError
from model.flow_matching import masked_loss
from model.model import Model
from training.checkpointing import (
    checkpoint_path,
    load_training_checkpoint,
    rng_state,
    save_training_checkpoint,
    set_rng_state,
)
from training.data import dataset_from_config
from training.distributed import DistInfo, any_rank, barrier, gather_objects
from training.ema import EMA
from training.sampler import ResumableSampler, SeededClips
from training.schedule import build_scheduler

# Optional `training` keys (the original's keys are read as they are).
DEFAULTS = {
    "ema_decay": 0.9999,
    "log_every": 100,
    "save_latest_every": 5000,
    "save_every": 20000,
    "validate_every": 5000,
    "val_clips": 16,
    "grad_clip": 1.0,
    "max_nonfinite_steps": 10,
    "auto_resume": False,
    "runs_dir": "runs",
    "record_samples": False,
    "sample_every": 20000,
    "sample_clips": 2,
    "sample_frames": 6,
    "sample_steps": 20,
}
VAL_SEED = 20240101
BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


class TrainingStopped(RuntimeError):
    """The run cannot go on (e.g. too many non-finite losses in a row)."""


def run_directory(config: Configuration, run_name: str) -> Path:
    runs_dir = config["training"].get("runs_dir", DEFAULTS["runs_dir"])
    return Path(runs_dir) / f"{config['name']}_run-{run_name}"


class Trainer:
    """Trains the vector-field regressor of a Model on HDF5 clips; see train.py for the command line."""

    def __init__(self, config: Configuration, run_name: str, info: DistInfo, seed: int = 1543,
                 use_wandb: bool = False, resume_step: Optional[int] = None):
        self.config, self.info, self.seed = config, info, seed
        training = config["training"]
        self.options = {key: training.get(key, default) for key, default in DEFAULTS.items()}
        optim = training["optimizer"]
        self.batch_size = int(training["batching"]["batch_size"])
        self.num_workers = int(training["batching"]["num_workers"])
        self.warmup_steps = int(optim["num_warmup_steps"])
        self.total_steps = int(optim["num_training_steps"])
        self.num_observations = int(training["num_observations"])
        self.loss_weight = float(training["loss_weights"]["flow_matching_loss"])
        self.run_dir = run_directory(config, run_name)
        self.device = info.device
        self.autocast = torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda")

        self.logger = Logger("cage", self.run_dir.name, use_wandb, config.to_dict(), info.rank, self.run_dir)
        log = self.logger.info
        log(f"run directory {self.run_dir}; {info.world_size} process(es) on {self.device}")

        # Data first: a missing split is an error before any model is built.
        data = config["data"]
        self.train_set = dataset_from_config(data, "train", train=True, output_dtype="uint8")
        if self.num_observations > int(data["frames_per_sample"]):
            raise ValueError(f"training.num_observations ({self.num_observations}) exceeds data.frames_per_sample "
                             f"({data['frames_per_sample']})")
        self.val_set = None
        if int(self.options["validate_every"]) > 0:
            try:
                self.val_set = dataset_from_config(data, "val", train=False, output_dtype="uint8")
            except FileNotFoundError as error:
                raise FileNotFoundError(f"{error}. Validation needs it; set training.validate_every=0 to train "
                                        f"without validation") from error
        log(f"data: {self.train_set.num_videos} train videos" +
            (f", {self.val_set.num_videos} val videos" if self.val_set is not None else ""))

        # Model, optimizer, schedule, EMA: identical initialisation on every rank.
        torch.manual_seed(seed)
        self.model = Model(config["model"]).to(self.device)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.trainable, lr=float(optim["learning_rate"]), betas=BETAS, eps=ADAM_EPS,
                                           weight_decay=float(optim["weight_decay"]))
        self.scheduler = build_scheduler(self.optimizer, self.warmup_steps, self.total_steps)
        self.ema = EMA(self.model, float(self.options["ema_decay"]))
        rank_seed = seed * info.world_size + info.rank
        torch.manual_seed(rank_seed)
        np.random.seed(rank_seed % 2**32)
        self.generator = torch.Generator(self.device).manual_seed(rank_seed)
        self.global_step = 0
        self.nonfinite = {"nan": 0, "inf": 0, "in_a_row": 0, "skipped": 0}
        log(f"model: {sum(p.numel() for p in self.trainable) / 1e6:.2f}M trainable parameters "
            f"({sum(p.numel() for p in self.model.parameters()) / 1e6:.2f}M in all)")

        resume = self._resume_path(resume_step)
        if resume is not None:
            self._load(resume)
        for part in (self.model.ae, self.model.dino):
            part.weights.require()  # missing autoencoder / backbone weights: fail before any work
            if part.weights.allow_random and not part.weights.loaded:
                self.logger.warning(f"{part.weights.what} uses random weights (allowed by the config)")

        self.ddp_model = self.model
        if info.distributed:
            # The only buffers are the frozen autoencoder's: no need to sync them every step.
            no_buffer_sync = ({"forward_sync_buffers": False}
                              if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                              else {"broadcast_buffers": False})
            self.ddp_model = DistributedDataParallel(
                self.model, device_ids=[info.local_rank] if self.device.type == "cuda" else None, **no_buffer_sync
            )
        if info.is_main:
            config.save(self.run_dir / "config.yaml")
        self.stop_signal: Optional[int] = None

    # Resume ------------------------------------------------------------------------------------------------------
    def _resume_path(self, resume_step: Optional[int]) -> Optional[Path]:
        if resume_step is not None:
            path = checkpoint_path(self.run_dir, resume_step)
            if not path.is_file():
                raise CheckpointError(f"cannot resume: {path} does not exist")
            return path
        latest = checkpoint_path(self.run_dir, -1)
        if latest.is_file():
            if self.options["auto_resume"]:
                return latest
            raise FileExistsError(f"{self.run_dir} already has checkpoints; continue it with --resume-step -1 (or "
                                  f"training.auto_resume=true), or choose another --run-name")
        return None

    def _load(self, path: Path) -> None:
        state = load_training_checkpoint(path)
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["lr_scheduler"])
        self.global_step = int(state["global_step"])
        self.nonfinite.update(state.get("nonfinite", {}))
        rngs = state.get("rng", [])
        if len(rngs) == self.info.world_size:
            set_rng_state(rngs[self.info.rank], self.generator)
        else:
            self.logger.warning(f"checkpoint has RNG states of {len(rngs)} process(es), this run has "
                                f"{self.info.world_size}: the random stream is reseeded (resume is not bit-exact)")
        sampler = state.get("sampler", {})
        if sampler.get("world_size", self.info.world_size) != self.info.world_size:
            self.logger.warning("different number of processes than the checkpoint: data order differs from an "
                                "uninterrupted run")
        self.logger.info(f"resumed from {path} at step {self.global_step}")

    def _save(self, name: str) -> Optional[Path]:
        """Write checkpoints/<name> on rank 0 (atomically); every rank contributes its RNG state."""
        rngs = gather_objects(rng_state(self.generator), self.info)
        if not self.info.is_main:
            return None
        state = {
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.scheduler.state_dict(),
            "global_step": self.global_step,
            "rng": rngs,
            "sampler": {"position": self.global_step * self.batch_size, "world_size": self.info.world_size,
                        "seed": self.seed},
            "nonfinite": dict(self.nonfinite),
            "config": self.config.to_dict(),
        }
        path = self.run_dir / "checkpoints" / name
        try:
            save_training_checkpoint(path, state)
        except OSError as error:  # e.g. disk full: the previous file of that name is untouched
            self.logger.error(f"could not save {path}: {error}")
            return None
        return path

    def save(self, final: bool = False) -> Optional[Path]:
        names = []
        if final:
            names.append(f"final_step_{self.global_step}.pth")
        elif self.global_step % int(self.options["save_every"]) == 0:
            names.append(f"step_{self.global_step}.pth")
        names.append("latest.pth")
        saved = None
        for name in names:
            saved = self._save(name) or saved
        if saved is not None:
            self.logger.info(f"step {self.global_step}: saved {', '.join(names)}")
        return saved

    # Steps -------------------------------------------------------------------------------------------------------
    def loader(self) -> DataLoader:
        sampler = ResumableSampler(len(self.train_set), self.info.rank, self.info.world_size, self.seed,
                                   start=self.global_step * self.batch_size)
        # Its own generator: creating the iterator must not draw from the global RNG (that would break exact resume).
        return DataLoader(SeededClips(self.train_set), batch_size=self.batch_size, sampler=sampler,
                          num_workers=self.num_workers, pin_memory=self.device.type == "cuda", drop_last=True,
                          persistent_workers=self.num_workers > 0,
                          generator=torch.Generator().manual_seed(self.seed * self.info.world_size + self.info.rank))

    def train_step(self, batch: torch.Tensor) -> dict:
        """One optimisation step on a uint8 batch [b O 3 H W]; returns its metrics."""
        self.ddp_model.train()
        observations = to_float(batch[:, : self.num_observations].to(self.device, non_blocking=True))
        lr = self.scheduler.get_last_lr()[0]
        with self.autocast:
            out = self.ddp_model(observations, generator=self.generator)
            fm_loss = masked_loss(out["reconstructed_vectors"], out["target_vectors"], out["selected_masks"])
            loss = self.loss_weight * fm_loss
        metrics = {"loss": loss.detach(), "flow_matching_loss": fm_loss.detach(), "num_controls": out["num_controls"],
                   "learning_rate": lr, "skipped": False}
        if any_rank(not bool(torch.isfinite(loss)), self.info):
            self.nonfinite["nan" if torch.isnan(loss) else "inf"] += 1
            metrics["skipped"] = True
        else:
            loss.backward()
            max_norm = float(self.options["grad_clip"]) if self.global_step >= self.warmup_steps else math.inf
            grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, max_norm)
            metrics["grad_norm"] = grad_norm.detach()
            if torch.isfinite(grad_norm):  # gradients are all-reduced, so every rank agrees
                self.optimizer.step()
                self.ema.update(self.model)
            else:
                self.nonfinite["inf"] += 1
                metrics["skipped"] = True
        self.optimizer.zero_grad(set_to_none=True)
        with warnings.catch_warnings():  # a skipped step still advances the schedule, on purpose
            warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler.step()`"))
            self.scheduler.step()
        self.global_step += 1
        if metrics["skipped"]:
            self.nonfinite["in_a_row"] += 1
            self.nonfinite["skipped"] += 1
            if self.nonfinite["in_a_row"] >= int(self.options["max_nonfinite_steps"]):
                raise TrainingStopped(f"{self.nonfinite['in_a_row']} non-finite steps in a row at step "
                                      f"{self.global_step}; stopping (training.max_nonfinite_steps)")
        else:
            self.nonfinite["in_a_row"] = 0
        return metrics

    @torch.no_grad()
    def validate(self) -> Optional[float]:
        """Mean loss of the EMA weights on fixed validation clips with fixed randomness (comparable across runs)."""
        if self.val_set is None:
            return None
        loss = None
        if self.info.is_main:
            count = min(int(self.options["val_clips"]), self.val_set.num_videos)
            indices = np.linspace(0, self.val_set.num_videos - 1, count).round().astype(int).tolist()
            clips = [self.val_set.sample(i, torch.Generator().manual_seed(VAL_SEED + k)) for k, i in enumerate(indices)]
            generator = torch.Generator(self.device).manual_seed(VAL_SEED)
            total, batches = 0.0, 0
            with self.ema.swapped_in(self.model):
                self.model.eval()
                for start in range(0, len(clips), self.batch_size):
                    batch = to_float(torch.stack(clips[start:start + self.batch_size]).to(self.device))
                    with self.autocast:
                        out = self.model(batch[:, : self.num_observations], generator=generator)
                        total += masked_loss(out["reconstructed_vectors"], out["target_vectors"],
                                             out["selected_masks"]).item()
                    batches += 1
            loss = total / batches
        barrier(self.info)
        return loss

    @torch.no_grad()
    def sample(self) -> Optional[Path]:
        """Sample videos with the EMA weights on fixed validation clips: the first frame as input, the ground truth's
        features revealed sparsely (feats_select_prob) as controls. Writes samples/step_N.png (rows: real, generated)
        and samples/step_N.gif."""
        from lutils.media import save_contact_sheet, write_video
        from model.generation import generate

        written = None
        if self.info.is_main and self.val_set is not None:
            count = min(int(self.options["sample_clips"]), self.val_set.num_videos)
            clips = [self.val_set.sample(i, torch.Generator().manual_seed(VAL_SEED + i)) for i in range(count)]
            real = to_float(torch.stack(clips).to(self.device))
            frames = min(int(self.options["sample_frames"]), real.shape[1] - 1)
            real = real[:, : frames + 1]
            with self.ema.swapped_in(self.model), self.autocast:
                feats = self.model.get_features(real[:, 1:])
                masks = self.model.sparsify(torch.ones(count, frames, 1, *self.model.state_res, device=self.device),
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

    # Loop --------------------------------------------------------------------------------------------------------
    def _on_signal(self, signum, frame) -> None:
        self.stop_signal = signum
        self.logger.warning(f"received {signal.Signals(signum).name}: saving a checkpoint after this step")

    def train(self, max_steps: Optional[int] = None) -> int:
        """Train until num_training_steps (or `max_steps`); returns a process exit code."""
        handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            return self._loop(max_steps)
        except TrainingStopped as error:
            self.logger.error(str(error))
            self.save()
            return 1
        finally:
            for s, handler in handlers.items():
                signal.signal(s, handler)
            self.logger.close()

    def _loop(self, max_steps: Optional[int]) -> int:
        end = self.total_steps if max_steps is None else min(self.total_steps, max_steps)
        log_every = int(self.options["log_every"])
        validate_every = int(self.options["validate_every"])
        record = open(self.run_dir / f"samples_rank{self.info.rank}.txt", "a") if self.options["record_samples"] else None
        progress = tqdm(total=end, initial=self.global_step, desc="train", disable=not self.info.is_main, dynamic_ncols=True)
        window: dict = {"loss": [], "flow_matching_loss": [], "num_controls": [], "grad_norm": []}
        window_start, clips = time.perf_counter(), 0
        self.logger.info(f"training from step {self.global_step} to {end} (global batch "
                         f"{self.batch_size * self.info.world_size})")
        iterator = iter(self.loader())
        if self.global_step >= end:
            self.logger.info("nothing to do: already at the last step")
        while self.global_step < end:
            batch, indices = next(iterator)
            if record is not None:  # which clips this rank trained on, one line per step
                record.write(f"{self.global_step} {' '.join(map(str, indices.tolist()))}\n")
            metrics = self.train_step(batch)
            clips += batch.shape[0] * self.info.world_size
            for key in window:
                if key in metrics and not metrics["skipped"]:
                    window[key].append(float(metrics[key]))
            progress.update()
            if self.global_step % log_every == 0 or self.global_step == end:
                elapsed = time.perf_counter() - window_start
                self._log_window(window, metrics["learning_rate"], clips / max(elapsed, 1e-9))
                progress.set_postfix(loss=f"{np.mean(window['loss']) if window['loss'] else float('nan'):.4f}")
                window = {key: [] for key in window}
                window_start, clips = time.perf_counter(), 0
            if validate_every > 0 and self.global_step % validate_every == 0:
                val = self.validate()
                if val is not None:
                    self.logger.log("Validation/loss", val)
                    self.logger.finalize_logs(self.global_step)
                    self.logger.info(f"step {self.global_step}: validation loss (EMA) {val:.5f}")
            sample_every = int(self.options["sample_every"])
            if sample_every > 0 and self.global_step % sample_every == 0:
                self.sample()
            periodic = self.global_step % int(self.options["save_latest_every"]) == 0 or \
                self.global_step % int(self.options["save_every"]) == 0
            if periodic and self.global_step < self.total_steps:  # the last step gets the final save below
                self.save()
            if any_rank(self.stop_signal is not None, self.info):
                self.save()
                self.logger.info(f"stopped by signal at step {self.global_step}; continue with --resume-step -1")
                progress.close()
                return 0
        progress.close()
        if record is not None:
            record.close()
        self.check_consistency()
        if self.global_step >= self.total_steps:
            saved = self.save(final=True)
            self.logger.info(f"finished {self.global_step} steps")
            return 0 if saved is not None or not self.info.is_main else 1
        self.save()
        self.logger.info(f"stopped at step {self.global_step} (max steps); continue with --resume-step -1")
        return 0

    def check_consistency(self) -> None:
        """Distributed runs: every rank must hold the same trainable weights (fails loudly otherwise)."""
        if not self.info.distributed:
            return
        checksum = torch.stack([p.detach().double().sum() for p in self.trainable]).cpu()
        checksums = gather_objects(checksum, self.info)
        if any(not torch.equal(checksums[0], other) for other in checksums[1:]):
            raise TrainingStopped("DDP consistency check failed: ranks hold different weights")
        self.logger.info(f"DDP consistency check passed: {self.info.world_size} ranks hold identical weights")

    def _log_window(self, window: dict, lr: float, clips_per_second: float) -> None:
        mean = {key: float(np.mean(values)) if values else float("nan") for key, values in window.items()}
        log = self.logger.log
        log("Training/Loss/total_loss", mean["loss"])
        log("Training/Loss/flow_matching_loss", mean["flow_matching_loss"])
        log("Training/Stats/learning_rate", lr)
        log("Training/Stats/grad_norm", mean["grad_norm"])
        log("Training/Stats/num_controls", mean["num_controls"])
        log("Training/Stats/clips_per_second", clips_per_second)
        log("Training/Stats/total_loss_is_nan", self.nonfinite["nan"])
        log("Training/Stats/total_loss_is_inf", self.nonfinite["inf"])
        log("Training/Stats/skipped_steps", self.nonfinite["skipped"])
        self.logger.finalize_logs(self.global_step)
