"""VideoDataset: random clips from HDF5 shards of either layout (original CAGE or chunked)."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from dataset.h5 import VideoShard, list_shards
from dataset.transforms import ClipTransform
from lutils.errors import CageError

log = logging.getLogger(__name__)


class ShortVideoError(CageError, ValueError):
    """A video with fewer frames than one clip needs."""


class VideoDataset(Dataset):
    """Clips of `frames_per_sample` frames, `skip_frames` apart, as float32 [frames_per_sample 3 crop crop] in [-1,1].

    Semantics of the original: the shorter side is resized to `input_size`, then a centre crop of `crop_size`; a flip
    (probability 0.5) and colour jitter (`aug`) are drawn once per clip and apply to all its frames. The clip start is
    uniform over every valid start (`random_time`) or 0. Shards are opened lazily in each process, so the dataset
    pickles and works with any DataLoader start method. Randomness comes from torch's RNG (seeded per worker).

    A video shorter than a clip is an error that names it, unless `skip_short_videos=True` leaves it out.
    `output_dtype="uint8"` returns the transformed clip as uint8 [frames 3 crop crop] instead: 4x less data through
    DataLoader workers and collation; convert on the device with `dataset.transforms.to_float`.
    """

    def __init__(
        self,
        data_path: str | os.PathLike,
        input_size: int,
        crop_size: int,
        frames_per_sample: int = 5,
        skip_frames: int = 0,
        random_time: bool = True,
        random_horizontal_flip: bool = True,
        aug: bool = False,
        albumentations: bool = False,
        frames_key: Optional[str] = None,
        total_videos: int = -1,
        skip_short_videos: bool = False,
        output_dtype: str = "float32",
    ):
        if frames_per_sample < 1 or skip_frames < 0:
            raise ValueError(f"need frames_per_sample >= 1 and skip_frames >= 0, got {frames_per_sample}, {skip_frames}")
        self.data_path = Path(data_path)
        self.frames_per_sample, self.skip_frames = frames_per_sample, skip_frames
        self.random_time, self.frames_key, self.total_videos = random_time, frames_key, total_videos
        self.transform = ClipTransform(input_size, crop_size, random_horizontal_flip, aug, albumentations, output_dtype)
        self.span = (skip_frames + 1) * (frames_per_sample - 1) + 1

        self.shard_paths = list_shards(self.data_path)
        self.shard_lengths: list = []
        self.layouts: list = []
        entries, short = [], []
        for shard_index, path in enumerate(self.shard_paths):
            with VideoShard(path, frames_key) as shard:
                self.shard_lengths.append(shard.lengths)
                self.layouts.append(shard.layout)
                for video, length in enumerate(shard.lengths):
                    (entries if length >= self.span else short).append((shard_index, video))
        if short:
            listing = "; ".join(
                f"{self.shard_paths[s]} video {v}: {self.shard_lengths[s][v]} frames" for s, v in short[:5]
            )
            message = (
                f"{len(short)} video(s) are shorter than one clip of {self.span} frames "
                f"(frames_per_sample={frames_per_sample}, skip_frames={skip_frames}): {listing}"
                + (" ..." if len(short) > 5 else "")
            )
            if not skip_short_videos:
                raise ShortVideoError(message + ". Pass skip_short_videos=True to leave them out.")
            log.warning("skipping %s", message)
        if not entries:
            raise ShortVideoError(f"{self.data_path}: no video has the {self.span} frames one clip needs")
        self.entries = np.asarray(entries, dtype=np.int64)  # [N 2]: (shard, local video)
        self._shards: dict = {}
        self._owner_pid = os.getpid()

    # Lazy, per-process file handles ------------------------------------------------------------------------------
    def _shard(self, index: int) -> VideoShard:
        if self._owner_pid != os.getpid():  # forked worker: never share the parent's HDF5 handles
            self._shards, self._owner_pid = {}, os.getpid()
        shard = self._shards.get(index)
        if shard is None:
            shard = VideoShard(self.shard_paths[index], self.frames_key, self.shard_lengths[index])
            self._shards[index] = shard
        return shard

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_shards"] = {}
        return state

    def close(self) -> None:
        for shard in self._shards.values():
            shard.close()
        self._shards = {}

    def __del__(self) -> None:
        if getattr(self, "_owner_pid", None) == os.getpid():
            self.close()

    # Dataset -----------------------------------------------------------------------------------------------------
    @property
    def num_videos(self) -> int:
        return len(self.entries)

    def __len__(self) -> int:
        return self.total_videos if self.total_videos > 0 else self.num_videos

    def video_length(self, index: int) -> int:
        shard, video = self.entries[index]
        return int(self.shard_lengths[shard][video])

    def read_clip(self, index: int, start: int) -> torch.Tensor:
        """The raw uint8 clip [frames_per_sample 3 H W] of video `index` starting at frame `start`."""
        return self._read_frames(index, start, self.frames_per_sample, self.skip_frames + 1)

    def _read_frames(self, index: int, start: int, count: int, step: int) -> torch.Tensor:
        """Raw uint8 frames [count 3 H W] start, start + step, ... of video `index`; a failed read names the shard."""
        shard_index, video = (int(i) for i in self.entries[index])
        shard = self._shard(shard_index)
        try:
            frames = shard.read(video, start, count, step)
        except Exception as error:
            raise RuntimeError(f"{shard.path}: cannot read video {video} frames from {start}: {error}") from error
        return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.sample(index)

    def sample(self, index: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """The clip of `index`, with its random start, flip and jitter drawn from `generator` (default: torch's RNG)."""
        return self.sample_with_start(index, generator)[0]

    def sample_with_start(self, index: int, generator: Optional[torch.Generator] = None) -> tuple:
        """(clip, video, first frame): `sample`'s clip and where it lies, for readers of per-frame data such as the
        latent cache."""
        video, start = self.draw_start(index, generator)
        return self.transform(self.read_clip(video, start), generator), video, start

    def draw_start(self, index: int, generator: Optional[torch.Generator] = None) -> tuple:
        """(video, first frame) of the clip of `index`, the start drawn from `generator`."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} videos")
        index %= len(self)
        if self.total_videos > 0:
            index = index * self.num_videos // self.total_videos
        num_starts = self.video_length(index) - self.span + 1
        start = int(torch.randint(num_starts, (1,), generator=generator).item()) if self.random_time else 0
        return index, start

    def read_video(self, index: int) -> torch.Tensor:
        """Every frame of video `index`, transformed (resize, centre crop; no random part): [L 3 crop crop]."""
        return self.transform.deterministic(self._read_frames(index, 0, self.video_length(index), 1))
