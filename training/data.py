"""Datasets and loaders built from the `data` block of a config."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from dataset.video_dataset import VideoDataset


def dataset_from_config(data_config: Mapping, split: str, train: bool = True, output_dtype: str = "float32") -> VideoDataset:
    """VideoDataset for `data_root/<split>`; augmentation (aug, flip) only when `train`.

    Reads the original keys (data_root, input_size, crop_size, frames_per_sample, skip_frames,
    random_horizontal_flip, aug, albumentations, frames_key) plus our optional skip_short_videos and total_videos.
    """
    missing = [k for k in ("data_root", "input_size", "crop_size", "frames_per_sample", "skip_frames") if k not in data_config]
    if missing:
        raise KeyError(f"config 'data' block lacks required key(s): {', '.join(missing)}")
    path = Path(data_config["data_root"]) / split
    if not path.exists():
        raise FileNotFoundError(
            f"data split '{split}' not found: {path} (from data.data_root={data_config['data_root']!r}); "
            f"convert your data with dataset/convert_to_h5.py"
        )
    return VideoDataset(
        data_path=path,
        input_size=int(data_config["input_size"]),
        crop_size=int(data_config["crop_size"]),
        frames_per_sample=int(data_config["frames_per_sample"]),
        skip_frames=int(data_config["skip_frames"]),
        random_time=True,
        random_horizontal_flip=bool(data_config.get("random_horizontal_flip", False)) and train,
        aug=bool(data_config.get("aug", False)) and train,
        albumentations=bool(data_config.get("albumentations", False)),
        frames_key=data_config.get("frames_key", None),
        total_videos=int(data_config.get("total_videos", -1)),
        skip_short_videos=bool(data_config.get("skip_short_videos", False)),
        output_dtype=output_dtype,
    )
