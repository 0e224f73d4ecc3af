"""One way to build clip datasets and one way to pick clips: `clips_from_config` and `evenly_spaced`.

Every consumer of clips (the trainer, its validation, evaluation, the control-accuracy check, the demos, `train.py
--dry-run`) builds its `VideoDataset` here from the config's `data` block and says what the clips are for; the
purpose fixes what may differ between consumers (start frame, augmentation, dtype):

| purpose      | clip start                          | flip / colour jitter | dtype   |
|--------------|-------------------------------------|----------------------|---------|
| train        | uniform over valid starts           | as the config says   | uint8   |
| validation   | uniform, from fixed seeds           | never                | uint8   |
| evaluation   | frame 0                             | never                | uint8   |
| demo         | frame 0                             | never                | float32 |
| stored       | frame 0; read raw with `read_clip`  | never                | uint8   |

Size, resizing method, frame spacing and which videos are used (`frames_key`, `skip_short_videos`) always come from
the config, so all consumers see the same frames; `total_videos` (an epoch's length) applies to training only.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch

from dataset.h5 import DataNotFoundError
from dataset.video_dataset import VideoDataset
from lutils import schema
from lutils.configuration import ConfigurationError, to_plain

REQUIRED_KEYS = ("data_root", "input_size", "crop_size", "frames_per_sample", "skip_frames")
# `stored` clips are only read with `read_clip` (raw stored frames); their resize/crop never runs.
UNUSED_SIZE = 10**6


@dataclass(frozen=True)
class Purpose:
    """What a consumer's clips are for: their start, augmentation and dtype."""

    random_time: bool
    augment: bool
    output_dtype: str


PURPOSES = {
    "train": Purpose(random_time=True, augment=True, output_dtype="uint8"),
    "validation": Purpose(random_time=True, augment=False, output_dtype="uint8"),
    "evaluation": Purpose(random_time=False, augment=False, output_dtype="uint8"),
    "demo": Purpose(random_time=False, augment=False, output_dtype="float32"),
    "stored": Purpose(random_time=False, augment=False, output_dtype="uint8"),
}


def split_path(data_config: Mapping, split: str) -> Path:
    """`data_root/<split>`, which must exist."""
    path = Path(str(data_config["data_root"])) / split
    if not path.exists():
        raise DataNotFoundError(
            f"data split '{split}' not found: {path} (from data.data_root={data_config['data_root']!r}); "
            f"convert your data with dataset/convert_to_h5.py"
        )
    return path


def clips_from_config(
    data_config: Optional[Mapping],
    split: str,
    purpose: str,
    *,
    path: Optional[str | Path] = None,
    frames_per_sample: Optional[int] = None,
    random_time: Optional[bool] = None,
    skip_short_videos: Optional[bool] = None,
    output_dtype: Optional[str] = None,
) -> VideoDataset:
    """The `VideoDataset` of `split` for `purpose` (see the module docstring).

    data_config: the config's `data` block (the original keys data_root, input_size, crop_size, frames_per_sample,
    skip_frames, plus the optional ones); it may be None only for `stored` clips with an explicit `path`.
    path: a split folder or shard to read instead of data_root/<split>. The keyword arguments override the
    config's clip length and skip_short_videos, and the purpose's start and dtype, for consumers that need other
    clips (an evaluation of N frames, a demo that needs only one frame).
    """
    if purpose not in PURPOSES:
        raise ValueError(f"clip purpose must be one of {sorted(PURPOSES)}, got {purpose!r}")
    rule = PURPOSES[purpose]
    data = {**schema.defaults("cage", "data"), **to_plain(data_config or {})}  # absent optional keys: their defaults
    if purpose == "stored":
        if path is None and data_config is None:
            raise ValueError("stored clips need a data config or a path")
        sizes = {"input_size": UNUSED_SIZE, "crop_size": UNUSED_SIZE}
    else:
        missing = [key for key in REQUIRED_KEYS if key not in data and not (key == "data_root" and path is not None)]
        if missing:
            raise ConfigurationError(f"config 'data' block lacks required key(s): {', '.join(missing)}")
        sizes = {"input_size": int(data["input_size"]), "crop_size": int(data["crop_size"])}
    augment = rule.augment
    return VideoDataset(
        data_path=Path(path) if path is not None else split_path(data, split),
        **sizes,
        frames_per_sample=int(frames_per_sample if frames_per_sample is not None else data.get("frames_per_sample", 1)),
        skip_frames=int(data.get("skip_frames", 0)),  # both required, but absent for `stored` clips from a path
        random_time=rule.random_time if random_time is None else random_time,
        random_horizontal_flip=bool(data["random_horizontal_flip"]) and augment,
        aug=bool(data["aug"]) and augment,
        albumentations=bool(data["albumentations"]),
        frames_key=data["frames_key"],
        total_videos=int(data["total_videos"]) if purpose == "train" else -1,  # an epoch's length
        skip_short_videos=bool(data["skip_short_videos"] if skip_short_videos is None else skip_short_videos),
        output_dtype=output_dtype or rule.output_dtype,
    )


def evenly_spaced(available: int, count: Optional[int]) -> list:
    """`count` distinct indices spread evenly over range(available), in order, first and last included (all of
    them for None): index i is floor(i (available - 1) / (count - 1)), in integer maths so that it is exact."""
    if count is None or count == available:
        return list(range(available))
    if not 1 <= count <= available:
        raise ValueError(f"asked for {count} videos, but the split has {available}")
    if count == 1:
        return [0]
    return [(i * (available - 1)) // (count - 1) for i in range(count)]


def seeded_pick(dataset: VideoDataset, count: int, seed: int) -> list:
    """`count` clips (at most all videos) picked by `evenly_spaced`, clip k's start drawn from seed + k: the same
    clips in every run and on every machine (the trainers' fixed validation clips)."""
    indices = evenly_spaced(dataset.num_videos, min(int(count), dataset.num_videos))
    return [dataset.sample(index, torch.Generator().manual_seed(seed + k)) for k, index in enumerate(indices)]
