"""The sampling stage of an evaluation: generated clips written to a resumable, sharded store (`<out>.parts/`).

Owns the store's format and its identity check, and the generation of its batches; it computes no metric (those
read the store: evaluation/metrics.py), as in DiT's sample_ddp.py, where sampling writes samples and a separate step
scores them.

The store is a folder with identity.json (what made the samples: the protocol's sampling fields, the data folder, the
checkpoint and the model config) and one batch_NNNNN.npz per finished batch: the clips' indices, the real clips and
the generated ones (uint8 [b K+F 3 H W]; the first K generated frames are the real conditioning frames) and the
seconds generation took. Batches are written atomically as they finish, so an interrupted run resumes where it
stopped; under torchrun, batch b belongs to rank b mod world size, and the folder must be one all processes see.
Batch b is generated from `torch.Generator().manual_seed(seed * 1000003 + b)`, whoever generates it: the same
protocol gives the same samples with any number of processes.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from evaluation.errors import EvaluationError
from evaluation.protocol import Protocol, sampling_differences

log = logging.getLogger("evaluate")
PARTS_VERSION = 1
SEED_STRIDE = 1_000_003  # batch b draws from seed * SEED_STRIDE + b


def batch_generator(protocol: Protocol, batch_index: int) -> torch.Generator:
    """The CPU generator of every random draw of one batch (control masks first, then the sampler's noise)."""
    return torch.Generator().manual_seed(protocol.seed * SEED_STRIDE + batch_index)


class SampleStore:
    """`<out>.parts/`: identity.json and the batches of one sampling protocol (see the module docstring)."""

    def __init__(self, folder: str | Path, num_batches: int):
        self.folder = Path(folder)
        self.num_batches = int(num_batches)

    def __repr__(self) -> str:
        return f"SampleStore({str(self.folder)!r}, num_batches={self.num_batches})"

    @property
    def identity_path(self) -> Path:
        return self.folder / "identity.json"

    def batch_path(self, index: int) -> Path:
        return self.folder / f"batch_{index:05d}.npz"

    def has(self, index: int) -> bool:
        return self.batch_path(index).is_file()

    def done(self) -> int:
        """How many of the batches are on disk."""
        return sum(self.has(b) for b in range(self.num_batches))

    # Identity ----------------------------------------------------------------------------------------------------
    def prepare(self, identity: dict, restart: bool = False) -> None:
        """Create the folder with identity.json, or check that the samples in it were made by the same sampling
        (EvaluationError naming what changed). `restart` deletes the folder first."""
        if restart and self.folder.exists():
            shutil.rmtree(self.folder)
        if self.identity_path.is_file():
            self.check(identity)
        else:
            from lutils.io import write_json

            write_json(self.identity_path, identity, sort_keys=True)

    def check(self, identity: dict) -> None:
        """EvaluationError unless the folder holds samples of `identity` (all its keys equal; the protocol compared
        on its sampling fields, so that older stores, written with the whole protocol, stay usable)."""
        if not self.identity_path.is_file():
            raise EvaluationError(f"{self.folder} holds no samples (no identity.json): generate them first "
                                  f"(--stage sample or all)")
        previous = json.loads(self.identity_path.read_text())
        changed = identity_differences(previous, identity)
        if changed:
            raise EvaluationError(f"{self.folder} holds batches of another evaluation ({'; '.join(changed)}); "
                                  f"use another --out or --restart")

    # Batches -----------------------------------------------------------------------------------------------------
    def save(self, index: int, **arrays) -> None:
        from lutils.io import atomic_path

        with atomic_path(self.batch_path(index)) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)

    def load(self, index: int) -> dict:
        path = self.batch_path(index)
        if not path.is_file():
            raise EvaluationError(f"{path} is missing: a process stopped early; run the same command again with "
                                  f"--stage all (or sample) to generate it")
        with np.load(path) as batch:
            return {key: batch[key] for key in batch.files}

    def batches(self) -> Iterator[dict]:
        """Every batch in order (a dict of arrays); a missing one is an EvaluationError."""
        for index in range(self.num_batches):
            yield self.load(index)


def sampling_identity(protocol: Protocol, data_folder: Path, checkpoint: Path, ema: bool, model_config: dict) -> dict:
    """What decides the samples: the protocol's sampling fields, the data, the checkpoint file, the model config."""
    stat = checkpoint.stat()
    return {"parts_version": PARTS_VERSION, "protocol": protocol.sampling_dict(), "data": str(data_folder.resolve()),
            "checkpoint": str(checkpoint.resolve()), "checkpoint_bytes": stat.st_size,
            "checkpoint_mtime": stat.st_mtime, "ema": ema, "model_config": model_config}


def identity_differences(previous: dict, identity: dict) -> list:
    """'key: old -> new' for what differs. The protocols are compared on the sampling fields only
    (evaluation.protocol.sampling_differences): older stores hold the whole protocol, with fvd_* fields that do not
    change samples and the retired clip_start, which only ever held 0."""
    changed = []
    for key, value in identity.items():
        if key == "protocol":
            changed += sampling_differences(previous.get("protocol") or {}, value)
        elif previous.get(key) != value:
            changed.append(f"{key}: {previous.get(key)!r} -> {value!r}")
    return changed


# Generation ------------------------------------------------------------------------------------------------------
@torch.no_grad()
def generate_batch(model, clips: torch.Tensor, protocol: Protocol, batch_index: int, device) -> np.ndarray:
    """Generated clips uint8 [b K+F 3 H W] for real clips uint8 [b K+F 3 H W]; the first K frames are the real ones.

    With protocol.controls_prob > 0, the real future frames' DINOv2 features are the controls, each cell revealed
    with that probability by `Model.sparsify` (drawn from the batch's generator before the sampler's noise)."""
    from dataset.transforms import to_float
    from lutils.logging import to_video
    from lutils.precision import autocast
    from model.generation import generate

    k, f = protocol.cond_frames, protocol.gen_frames
    generator = batch_generator(protocol, batch_index)
    frames = to_float(clips).to(device)
    feats = masks = None
    if protocol.controls_prob > 0:
        feats, masks = model.revealed_controls(frames[:, k:], protocol.controls_prob, generator)
    with autocast(device, protocol.precision):
        video = generate(model, f, device, initial_frames=frames[:, :k] if k else None, feats=feats,
                         feats_masks=masks, batch_size=len(clips), method=protocol.method,
                         odesolver=protocol.solver, num_steps=protocol.steps, gamma=protocol.gamma, generator=generator)
    generated = to_video(video[:, -f:])
    return np.concatenate([clips[:, :k].numpy(), generated], axis=1)


def generate_all(model, dataset, indices: list, protocol: Protocol, store: SampleStore, info) -> None:
    """Generate this process's batches that are not in the store yet (batch b belongs to rank b mod world size).
    `indices`: the dataset indices of the evaluated clips, in order; batch b holds those of b * batch_size on."""
    from tqdm import tqdm

    mine = [b for b in range(protocol.num_batches) if b % info.world_size == info.rank]
    todo = [b for b in mine if not store.has(b)]
    if info.is_main:
        log.info("generating %d clips in %d batches of %d (%d done before, %d processes)", protocol.num_videos,
                 protocol.num_batches, protocol.batch_size, store.done(), info.world_size)
    for b in tqdm(todo, desc="generate", disable=not info.is_main, dynamic_ncols=True):
        chosen = indices[b * protocol.batch_size:(b + 1) * protocol.batch_size]
        clips = torch.stack([dataset[i] for i in chosen])
        start = time.perf_counter()
        generated = generate_batch(model, clips, protocol, b, info.device)
        seconds = time.perf_counter() - start
        store.save(b, indices=np.asarray(chosen), real=clips.numpy(), generated=generated, seconds=np.asarray(seconds))
