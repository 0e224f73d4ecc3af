"""The frozen autoencoder's latents of every frame of a split, computed once and stored beside the dataset.

Training encodes the same frames again at every epoch through a frozen autoencoder. Where the data has no random
transform (no flip, no colour jitter) a frame's latent never changes, so `training.latent_cache: true` encodes each
video once, stores the latents in `<data_root>/latent_cache/<split>-<key>.h5`, and then reads them instead.

The key is a hash of everything the latents depend on: the autoencoder's weights and config, the frame size
settings, and the split's shard files (names, sizes, modification times). A change in any of them gives another
key, so a stale cache is never used: the new one is built. A file whose stored identity does not match its name is
rebuilt. Files are written under a temporary name and renamed when complete, so an interrupted build never leaves a file
under the final name.

The latents are those of `autoencoder.encode` (before the model's latent_scale), float32, one dataset per video
[L s h w]; training gathers the clip's frames from them exactly where it would have encoded them.

With `training.feature_cache: true` the same file also holds every frame's control features (the frozen DINOv2's
features of the whole frame at state_res, [L F h w] per video), and the key also covers the backbone's weights and
its config. Training then reads no frames at all. Only valid where the control features of a frame never change:
`model.no_scale_inv: true` (no random crops), which the trainer checks.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Callable, NamedTuple, Optional

import h5py
import numpy as np
import torch
from tqdm import tqdm

from lutils.io import atomic_path

log = logging.getLogger(__name__)

VERSION = 1
FOLDER = "latent_cache"


def weights_sha256(module: torch.nn.Module) -> str:
    """sha256 of a module's state dict (names, dtypes, shapes and bytes, in key order)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


class FeatureSource(NamedTuple):
    """The frozen feature backbone whose per-frame outputs are cached beside the latents."""

    backbone: torch.nn.Module  # its weights are part of the cache's key
    config: dict  # the settings its features depend on (architecture, layers, input size, output resolution)
    extract: Callable[[torch.Tensor], torch.Tensor]  # frames [n 3 H W] in [-1, 1] -> features [n F h w]


def identity(dataset, autoencoder: torch.nn.Module, autoencoder_config,
             features: Optional[FeatureSource] = None) -> dict:
    """Everything the cached arrays depend on (the cache's key is a hash of it)."""
    transform = dataset.transform
    shards = [{"name": path.name, "bytes": path.stat().st_size, "mtime_ns": path.stat().st_mtime_ns}
              for path in dataset.shard_paths]
    config = {k: v for k, v in dict(autoencoder_config).items() if k not in ("ckpt_path", "random_init")}
    ident = {
        "version": VERSION,
        "autoencoder": {"sha256": weights_sha256(autoencoder), "config": config},
        "frames": {"input_size": transform.input_size, "crop_size": transform.crop_size,
                   "albumentations": transform.albumentations, "frames_key": dataset.frames_key},
        "videos": [[int(s), int(v)] for s, v in dataset.entries],
        "shards": shards,
    }
    if features is not None:  # absent otherwise, so that latent-only caches keep their key
        ident["features"] = {"sha256": weights_sha256(features.backbone), "config": features.config}
    return ident


def canonical(ident: dict) -> str:
    """The identity as the JSON text that is hashed into the key and stored in the file."""
    return json.dumps(ident, sort_keys=True, default=str)


def cache_path(data_path: Path, ident: dict) -> Path:
    key = hashlib.sha256(canonical(ident).encode()).hexdigest()[:16]
    return Path(data_path).parent / FOLDER / f"{Path(data_path).name}-{key}.h5"


def stored_identity(path: Path) -> Optional[dict]:
    try:
        with h5py.File(path, "r") as f:
            return json.loads(f.attrs["identity"])
    except (OSError, KeyError, ValueError):
        return None


def build(dataset, encode: Callable[[torch.Tensor], torch.Tensor], path: Path, ident: dict,
          batch_frames: int = 64, progress: bool = True, extract: Optional[Callable] = None) -> Path:
    """Encode every frame of every video of `dataset` with `encode` ([n 3 H W] in [-1, 1] -> [n s h w]) into `path`,
    and, with `extract`, its features ([n 3 H W] -> [n F h w]) too."""
    functions = {"latents": encode, **({"features": extract} if extract is not None else {})}
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["identity"] = canonical(ident)
        groups = {name: f.create_group(name) for name in functions}
        for index in tqdm(range(dataset.num_videos), desc="latent cache", unit="video", disable=not progress):
            frames = dataset.read_video(index)  # [L 3 H W] float32 in [-1, 1]
            for name, function in functions.items():
                with torch.no_grad():
                    values = torch.cat([function(frames[k:k + batch_frames]).float().cpu()
                                        for k in range(0, len(frames), batch_frames)])
                groups[name].create_dataset(str(index), data=values.numpy())
    return path


class LatentCache:
    """Read access to a built cache; opens its file lazily in each process (safe with DataLoader workers)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._file, self._pid = None, None

    def read(self, video: int, start: int, count: int, step: int, name: str = "latents") -> torch.Tensor:
        """Latents [count s h w] (or, with name="features", features [count F h w]) of frames start, start + step,
        ... of `video`."""
        if self._file is None or self._pid != os.getpid():
            self._file, self._pid = h5py.File(self.path, "r"), os.getpid()
        data = self._file[name][str(video)][start:start + (count - 1) * step + 1:step]
        return torch.from_numpy(np.ascontiguousarray(data))

    @property
    def has_features(self) -> bool:
        with h5py.File(self.path, "r") as f:
            return "features" in f

    def __getstate__(self) -> dict:
        return {"path": self.path, "_file": None, "_pid": None}


def open_or_build(dataset, autoencoder: torch.nn.Module, autoencoder_config, encode: Callable,
                  build_here: bool = True, progress: bool = True,
                  features: Optional[FeatureSource] = None) -> LatentCache:
    """The cache of `dataset` for this autoencoder (and `features`' backbone): reused when its identity matches, else
    built (by the process with `build_here`; the others must wait for it, e.g. at a barrier, before reading)."""
    if dataset.transform.random_horizontal_flip or dataset.transform.aug:
        raise ValueError("training.latent_cache needs data without random transforms: set data.random_horizontal_flip "
                         "and data.aug to false (a flipped or jittered frame has other latents)")
    ident = identity(dataset, autoencoder, autoencoder_config, features)
    path = cache_path(dataset.data_path, ident)
    if build_here:
        if path.is_file() and stored_identity(path) == json.loads(canonical(ident)):
            log.info("latent cache: reusing %s", path)
        else:
            if path.exists():
                log.warning("latent cache: %s does not match its data or autoencoder; rebuilding it", path)
            log.info("latent cache: encoding %d videos into %s%s", dataset.num_videos, path,
                     " (latents and control features)" if features is not None else "")
            build(dataset, encode, path, ident, progress=progress,
                  extract=features.extract if features is not None else None)
    return LatentCache(path)


class CachedClips(torch.utils.data.Dataset):
    """Like training.sampler.SeededClips, with the clip's cached latents: (index, seed) -> (clip, index, latents
    [frames s h w]). The clip and its randomness are exactly those SeededClips gives.

    With `features`: (placeholder, index, latents, features [frames F h w]). Everything a training step needs is then
    cached, so the frames are not read; the placeholder is an empty uint8 tensor [frames 0] that keeps the batch's
    leading axes. The clip's start is drawn exactly as when the frames are read."""

    def __init__(self, dataset, cache: LatentCache, features: bool = False):
        self.dataset, self.cache, self.features = dataset, cache, features

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item) -> tuple:
        index, seed = item
        count, step = self.dataset.frames_per_sample, self.dataset.skip_frames + 1
        generator = torch.Generator().manual_seed(seed)
        if not self.features:
            clip, video, start = self.dataset.sample_with_start(index, generator)
            return clip, index, self.cache.read(video, start, count, step)
        video, start = self.dataset.draw_start(index, generator)
        return (torch.empty(count, 0, dtype=torch.uint8), index, self.cache.read(video, start, count, step),
                self.cache.read(video, start, count, step, "features"))
