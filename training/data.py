"""Compatibility name for `dataset.clips.clips_from_config` (clips for training or validation)."""
from __future__ import annotations

from collections.abc import Mapping

from dataset.clips import clips_from_config
from dataset.video_dataset import VideoDataset


def dataset_from_config(data_config: Mapping, split: str, train: bool = True, output_dtype: str = "float32") -> VideoDataset:
    """`clips_from_config(data_config, split, "train" if train else "validation")` with float32 clips by default."""
    return clips_from_config(data_config, split, "train" if train else "validation", output_dtype=output_dtype)
