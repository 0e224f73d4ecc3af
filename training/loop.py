"""The generic training loop shared by train.py (CAGE) and train_autoencoder.py (our VQVAE).

One code path for CPU (fp32) and CUDA (bf16 autocast); DDP under torchrun or spawned processes; a run directory
runs/<name>_run-<run-name>/ with the resolved config, metrics.jsonl, log.txt, the resume state (checkpoints/) and
beside each of its files an inference snapshot (snapshots/), all written atomically; bit-exact resume
(model, EMA, optimizer, scheduler, step, every RNG state, data position); SIGTERM/SIGINT save and stop; non-finite
steps skipped, counted and stopping the run after N in a row. Subclasses say what the model and the loss are.

On CUDA a step waits for the device twice, on purpose: whether the loss and the gradient norm are finite decides
whether the step is taken. Metrics stay device tensors until a log window ends; batches come from pinned memory
(`pin_memory` on CUDA) with non-blocking copies; gradient clipping and the EMA work on the fp32 weights.
"""
from __future__ import annotations

import contextlib
import inspect
import math
import re
import signal
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from dataset.clips import clips_from_config
from dataset.h5 import DataNotFoundError
from dataset.transforms import to_float
from lutils import schema
from lutils.configuration import Configuration, ConfigurationError
from lutils.errors import CageError
from lutils.logger import Logger
from lutils.precision import autocast, resolve_precision, tf32_settings
from model.checkpoint import CheckpointError, save_file
from training import DEFAULT_SEED
from training.checkpointing import (
    checkpoint_path,
    load_training_checkpoint,
    rng_state,
    save_training_checkpoint,
    set_rng_state,
)
from training.distributed import DistInfo, any_rank, barrier, gather_objects
from training.ema import EMA
from training.sampler import ResumableSampler, SeededClips
from training.schedule import build_scheduler

# The `training` keys' defaults of a CAGE config (lutils/schema.py holds them, with their meanings).
DEFAULTS = schema.defaults("cage", "training")
VAL_SEED = 20240101
BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


class RunExistsError(CageError, FileExistsError):
    """A run directory that already has checkpoints, and no request to continue it."""


class TrainingStopped(CageError, RuntimeError):
    """The run cannot go on (e.g. too many non-finite losses in a row)."""


MAX_LISTED = 10  # config changes named in the resume warning


def config_changes(saved: Mapping, current: Mapping, prefix: str = "") -> list:
    """'dotted.key: saved -> current' for every leaf that differs between two plain config trees."""
    absent = object()
    changes = []
    for key in sorted(set(saved) | set(current), key=str):
        old, new = saved.get(key, absent), current.get(key, absent)
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            changes += config_changes(old, new, f"{prefix}{key}.")
        elif old != new:
            shown = ["(absent)" if value is absent else repr(value) for value in (old, new)]
            changes.append(f"{prefix}{key}: {shown[0]} -> {shown[1]}")
    return changes


def run_directory(config: Configuration, run_name: str) -> Path:
    runs_dir = config["training"].get("runs_dir", DEFAULTS["runs_dir"])  # the same default for both kinds
    return Path(runs_dir) / f"{config['name']}_run-{run_name}"


class BaseTrainer:
    """Runs the optimisation loop; subclasses implement build_model and forward_loss (and may add validation,
    samples and a per-step hook)."""

    loss_name = "Training/Loss/total_loss"
    schema_kind = "cage"  # which config schema the `training` section follows (lutils/schema.py)

    def __init__(self, config: Configuration, run_name: str, info: DistInfo, seed: int = DEFAULT_SEED,
                 use_wandb: bool = False, resume_step: Optional[int] = None, precision: Optional[str] = None):
        self.config, self.info, self.seed = config, info, seed
        # every `training` key, absent ones at their schema defaults (which differ between the two trainers)
        training = schema.complete("training", config["training"], kind=self.schema_kind,
                                   source=f"{getattr(config, 'path', '<config>')}: training")
        self.options = training
        if precision is not None:  # the command line's --precision wins over training.precision
            self.options["precision"] = precision
        optim = training["optimizer"]
        self.batch_size = int(training["batching"]["batch_size"])
        self.num_workers = int(training["batching"]["num_workers"])
        self.warmup_steps = int(optim["num_warmup_steps"])
        self.total_steps = int(optim["num_training_steps"])
        data = config["data"]
        observations = training["num_observations"]
        self.num_observations = int(observations if observations is not None else data["frames_per_sample"])
        self.run_dir = run_directory(config, run_name)
        self.device = info.device
        self.precision = resolve_precision(str(self.options["precision"]), self.device)
        self.autocast = autocast(self.device, self.precision)

        self.logger = Logger("cage", self.run_dir.name, use_wandb, config.to_dict(), info.rank, self.run_dir)
        log = self.logger.info
        tf32 = tf32_settings() if self.device.type == "cuda" else None  # autocast() above has set them
        log(f"run directory {self.run_dir}; {info.world_size} process(es) on {self.device}, {self.precision}" +
            (f", TF32 matmul {tf32['tf32_matmul']}, cudnn {tf32['tf32_cudnn']}" if tf32 is not None else ""))

        # Data first: a missing split is an error before any model is built.
        self.train_set = clips_from_config(data, "train", "train")
        if self.num_observations > int(data["frames_per_sample"]):
            raise ConfigurationError(f"training.num_observations ({self.num_observations}) exceeds data.frames_per_sample "
                             f"({data['frames_per_sample']})")
        self.val_set = None
        if int(self.options["validate_every"]) > 0:
            try:
                self.val_set = clips_from_config(data, "val", "validation")
            except DataNotFoundError as error:
                raise DataNotFoundError(f"{error}. Validation needs it; set training.validate_every=0 to train "
                                        f"without validation") from error
        log(f"data: {self.train_set.num_videos} train videos" +
            (f", {self.val_set.num_videos} val videos" if self.val_set is not None else ""))

        # Model, optimizer, schedule, EMA: identical initialisation on every rank.
        torch.manual_seed(seed)
        self.model = self.build_model().to(self.device)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        # The fused kernel: the same AdamW update in one pass over all tensors (3x faster on the CPU than the
        # per-tensor loop for the toy's 168 tensors: 1.6 against 5.3 ms a step).
        self.optimizer = torch.optim.AdamW(self.trainable, lr=float(optim["learning_rate"]), betas=BETAS, eps=ADAM_EPS,
                                           weight_decay=float(optim["weight_decay"]), fused=True)
        # Optional: the power of the polynomial decay after warm-up (the original's is 0.5; 1 is linear to lr_end).
        decay_power = float(optim["lr_decay_power"])
        if not decay_power > 0:
            raise ConfigurationError(f"training.optimizer.lr_decay_power must be a positive number, got {decay_power}")
        self.scheduler = build_scheduler(self.optimizer, self.warmup_steps, self.total_steps, power=decay_power)
        self.ema = EMA(self.model, float(self.options["ema_decay"])) if float(self.options["ema_decay"]) > 0 else None
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
        self.check_weights()

        self.ddp_model = self.model
        if info.distributed:
            # Frozen buffers (e.g. the autoencoder's BatchNorm statistics) need no syncing every step.
            no_buffer_sync = ({"forward_sync_buffers": False}
                              if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                              else {"broadcast_buffers": False})
            self.ddp_model = DistributedDataParallel(
                self.model, device_ids=[info.local_rank] if self.device.type == "cuda" else None, **no_buffer_sync
            )
        if info.is_main:
            config.save(self.run_dir / "config.yaml")
        self.stop_signal: Optional[int] = None

    # What subclasses provide -------------------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        raise NotImplementedError

    def forward_loss(self, observations: torch.Tensor) -> tuple:
        """(loss, {log name: scalar tensor}) of float observations [b O 3 H W] in [-1, 1], through self.ddp_model."""
        raise NotImplementedError

    def check_weights(self) -> None:
        """Called after resuming: fail before any work when frozen parts lack weights."""

    def after_step(self) -> None:
        """Called after each optimizer update (e.g. codebook restarts)."""

    def validate(self) -> Optional[dict]:
        """{log name: value} on the val split, or None."""
        return None

    def sample(self) -> None:
        """Write sample media for the current step (optional)."""

    def inference_weights(self):
        """Context in which the model holds the weights to sample and validate with: the EMA's, or the raw ones
        when the run keeps no EMA (training.ema_decay: 0)."""
        return self.ema.swapped_in(self.model) if self.ema is not None else contextlib.nullcontext(self.model)

    def state_dict_for_checkpoint(self) -> dict:
        """What goes under "model" in the resume state (checkpoints/)."""
        return self.model.state_dict()

    def load_model_state(self, state: dict) -> None:
        self.model.load_state_dict(state)

    def snapshot(self) -> Optional[dict]:
        """The inference file written beside each checkpoint into snapshots/ (None: none), built on rank 0."""
        return None

    def extra_state(self) -> dict:
        """Further state a subclass needs for exact resume (saved under "extra")."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    # Resume and checkpoints --------------------------------------------------------------------------------------
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
            raise RunExistsError(f"{self.run_dir} already has checkpoints; continue it with --resume-step -1 (or "
                                  f"training.auto_resume=true), or choose another --run-name")
        return None

    def _load(self, path: Path) -> None:
        state = load_training_checkpoint(path)
        self.load_model_state(state["model"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["lr_scheduler"])
        self.global_step = int(state["global_step"])
        self.nonfinite.update(state.get("nonfinite", {}))
        self.load_extra_state(state.get("extra", {}))
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
        changed = config_changes(state.get("config") or {}, self.config.to_dict())
        if changed:  # e.g. a same-name run directory left by an earlier experiment, resumed by auto_resume
            self.logger.warning(f"{path} was written with other settings; resuming with the current ones: "
                                + "; ".join(changed[:MAX_LISTED]) + (" ..." if len(changed) > MAX_LISTED else ""))
        self.logger.info(f"resumed from {path} at step {self.global_step}")

    def _save(self, name: str) -> Optional[Path]:
        """Write the resume state checkpoints/<name> and the inference file snapshots/<name> on rank 0 (each
        atomically); every rank contributes its RNG state."""
        rngs = gather_objects(rng_state(self.generator), self.info)
        if not self.info.is_main:
            return None
        state = {
            "model": self.state_dict_for_checkpoint(),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.scheduler.state_dict(),
            "global_step": self.global_step,
            "rng": rngs,
            "sampler": {"position": self.global_step * self.batch_size, "world_size": self.info.world_size,
                        "seed": self.seed},
            "nonfinite": dict(self.nonfinite),
            "config": self.config.to_dict(),
            "extra": self.extra_state(),
        }
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        path = self.run_dir / "checkpoints" / name
        try:
            save_training_checkpoint(path, state)
            del state
            snapshot = self.snapshot()
            if snapshot is not None:
                save_file(snapshot, self.run_dir / "snapshots" / name)
        except OSError as error:  # e.g. disk full: the previous file of that name is untouched
            self.logger.error(f"could not save {name}: {error}")
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
        # All ranks leave a save together: after the final one, a rank that returned while rank 0 was still writing
        # could tear down the process group under it (seen as a gloo abort at exit).
        barrier(self.info)
        return saved

    # Steps -------------------------------------------------------------------------------------------------------
    def loader(self) -> DataLoader:
        sampler = ResumableSampler(len(self.train_set), self.info.rank, self.info.world_size, self.seed,
                                   start=self.global_step * self.batch_size)
        # Its own generator: creating the iterator must not draw from the global RNG (that would break exact resume).
        return DataLoader(self.training_clips(), batch_size=self.batch_size, sampler=sampler,
                          num_workers=self.num_workers, pin_memory=self.device.type == "cuda", drop_last=True,
                          persistent_workers=self.num_workers > 0,
                          generator=torch.Generator().manual_seed(self.seed * self.info.world_size + self.info.rank))

    def training_clips(self):
        """The dataset the loader draws (index, seed) items from: items are (clip, index, *extras)."""
        return SeededClips(self.train_set)

    def train_step(self, batch: torch.Tensor, *extras) -> dict:
        """One optimisation step on a uint8 batch [b O 3 H W] (and the loader's extras); returns its metrics."""
        self.ddp_model.train()
        observations = to_float(batch[:, : self.num_observations].to(self.device, non_blocking=True))
        lr = self.scheduler.get_last_lr()[0]
        with self.autocast:
            loss, logged = self.forward_loss(observations, *extras)
        metrics = {self.loss_name: loss.detach(), **{k: v.detach() if torch.is_tensor(v) else v for k, v in logged.items()},
                   "learning_rate": lr, "skipped": False}
        if any_rank(not bool(torch.isfinite(loss)), self.info):
            self.nonfinite["nan" if torch.isnan(loss) else "inf"] += 1
            metrics["skipped"] = True
        else:
            loss.backward()
            # clipping starts at the first step after warm-up, as the original (global_step > num_warmup_steps)
            max_norm = float(self.options["grad_clip"]) if self.global_step > self.warmup_steps else math.inf
            grad_norm = torch.nn.utils.clip_grad_norm_(self.trainable, max_norm)
            metrics["Training/Stats/grad_norm"] = grad_norm.detach()
            if torch.isfinite(grad_norm):  # gradients are all-reduced, so every rank agrees
                self.optimizer.step()
                if self.ema is not None:
                    self.ema.update(self.model)
                self.after_step()
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
        record = open(self.run_dir / f"samples_rank{self.info.rank}.txt", "a") if self.options["record_samples"] else None
        try:
            stopped = self._steps(max_steps, record)
        finally:  # also on the signal path and on errors: the record of the steps taken so far is kept
            if record is not None:
                record.close()
        if stopped:
            return 0
        self.check_consistency()
        if self.global_step >= self.total_steps:
            saved = self.save(final=True)
            self.logger.info(f"finished {self.global_step} steps")
            return 0 if saved is not None or not self.info.is_main else 1
        self.save()
        self.logger.info(f"stopped at step {self.global_step} (max steps); continue with --resume-step -1")
        return 0

    def _steps(self, max_steps: Optional[int], record) -> bool:
        """Train up to max_steps (or the end); True when a signal stopped it (after saving)."""
        end = self.total_steps if max_steps is None else min(self.total_steps, max_steps)
        log_every = int(self.options["log_every"])
        validate_every = int(self.options["validate_every"])
        sample_every = int(self.options["sample_every"])
        progress = tqdm(total=end, initial=self.global_step, desc="train", disable=not self.info.is_main, dynamic_ncols=True)
        window: dict = {}
        window_start, clips = time.perf_counter(), 0
        self.logger.info(f"training from step {self.global_step} to {end} (global batch "
                         f"{self.batch_size * self.info.world_size})")
        iterator = iter(self.loader())
        if self.global_step >= end:
            self.logger.info("nothing to do: already at the last step")
        while self.global_step < end:
            batch, indices, *extras = next(iterator)
            if record is not None:  # which clips this rank trained on, one line per step
                record.write(f"{self.global_step} {' '.join(map(str, indices.tolist()))}\n")
            metrics = self.train_step(batch, *extras)
            clips += batch.shape[0] * self.info.world_size
            if not metrics["skipped"]:
                for key, value in metrics.items():
                    if key.startswith("Training/"):  # device tensors: read once per log window, not every step
                        window.setdefault(key, []).append(value)
            progress.update()
            if self.global_step % log_every == 0 or self.global_step == end:
                window = {key: [float(v) for v in values] for key, values in window.items()}
                elapsed = time.perf_counter() - window_start
                self._log_window(window, metrics["learning_rate"], clips / max(elapsed, 1e-9))
                losses = window.get(self.loss_name, [])
                progress.set_postfix(loss=f"{np.mean(losses) if losses else float('nan'):.4f}")
                window = {}
                window_start, clips = time.perf_counter(), 0
            if validate_every > 0 and self.global_step % validate_every == 0:
                values = self.validate()
                if values:
                    for key, value in values.items():
                        self.logger.log(key, value)
                    self.logger.finalize_logs(self.global_step)
                    self.logger.info(f"step {self.global_step}: " + ", ".join(f"{k} {v:.5f}" for k, v in values.items()))
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
                return True
        progress.close()
        return False

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
        log = self.logger.log
        for key, values in window.items():
            log(key, float(np.mean(values)) if values else float("nan"))
        log("Training/Stats/learning_rate", lr)
        log("Training/Stats/clips_per_second", clips_per_second)
        log("Training/Stats/total_loss_is_nan", self.nonfinite["nan"])
        log("Training/Stats/total_loss_is_inf", self.nonfinite["inf"])
        log("Training/Stats/skipped_steps", self.nonfinite["skipped"])
        self.logger.finalize_logs(self.global_step)
