"""dataset/clips.py: one clip factory (purposes fix start, augmentation, dtype) and one picker."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dataset.clips import PURPOSES, clips_from_config, evenly_spaced, seeded_pick
from dataset.h5 import DataNotFoundError, write_videos
from lutils.configuration import ConfigurationError


def index_videos(count: int, num_frames: int, size: int = 8) -> list:
    """uint8 [T H W 3] videos whose pixel values encode (video, frame): 10 v + t (video v, frame t)."""
    return [np.full((num_frames, size, size, 3), 10 * v + np.arange(num_frames)[:, None, None, None], dtype=np.uint8)
            for v in range(count)]


@pytest.fixture
def data_config(tmp_path) -> dict:
    write_videos(tmp_path / "train", index_videos(5, 9))
    write_videos(tmp_path / "val", index_videos(7, 9))
    return {"data_root": str(tmp_path), "input_size": 8, "crop_size": 8, "frames_per_sample": 3, "skip_frames": 1,
            "random_horizontal_flip": True, "aug": True}


@pytest.mark.parametrize("purpose", sorted(PURPOSES))
def test_each_purpose_gets_its_start_augmentation_and_dtype(data_config, purpose):
    clips = clips_from_config(data_config, "train", purpose)
    rule = PURPOSES[purpose]
    assert clips.random_time == rule.random_time
    assert clips.transform.random_horizontal_flip == (rule.augment and purpose == "train")
    assert clips.transform.aug == (rule.augment and purpose == "train")
    assert clips.frames_per_sample == 3 and clips.skip_frames == 1
    assert clips.transform.output_dtype == rule.output_dtype
    if purpose != "stored":  # stored clips are only read raw (read_clip): their transform never runs
        assert clips[0].dtype == (torch.uint8 if rule.output_dtype == "uint8" else torch.float32)


def test_evaluation_clips_start_at_frame_zero_with_the_configs_spacing(data_config):
    clips = clips_from_config(data_config, "val", "evaluation", frames_per_sample=4)
    clip = clips[3]  # video 3, frames 0, 2, 4, 6 (skip_frames 1)
    assert clip.shape == (4, 3, 8, 8)
    assert clip[:, 0, 0, 0].tolist() == [30, 32, 34, 36]


def test_stored_clips_need_no_sizes(data_config, tmp_path):
    clips = clips_from_config(None, "val", "stored", path=tmp_path / "val")
    assert clips.read_clip(2, 5)[0, 0, 0, 0].item() == 25  # raw stored frame 5 of video 2
    with pytest.raises(ValueError, match="stored clips need"):
        clips_from_config(None, "val", "stored")


def test_missing_keys_and_splits_are_named(data_config):
    with pytest.raises(ConfigurationError, match="crop_size"):
        clips_from_config({k: v for k, v in data_config.items() if k != "crop_size"}, "train", "train")
    with pytest.raises(DataNotFoundError, match="'test' not found"):
        clips_from_config(data_config, "test", "evaluation")
    with pytest.raises(ValueError, match="purpose"):
        clips_from_config(data_config, "train", "training")


@pytest.mark.parametrize("available,count", [(10, 4), (100, 8), (7, 7), (5, 1), (2, 2), (1000, 3), (1000, 256), (7, 6)])
def test_evenly_spaced_is_the_floor_of_the_linear_spacing(available, count):
    chosen = evenly_spaced(available, count)
    expected = [int(np.floor(i * (available - 1) / (count - 1))) for i in range(count)] if count > 1 else [0]
    assert chosen == expected
    assert len(set(chosen)) == count and chosen[0] == 0 and chosen[-1] == (available - 1 if count > 1 else 0)


def test_evenly_spaced_all_and_too_many():
    assert evenly_spaced(5, None) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="asked for 6"):
        evenly_spaced(5, 6)


def test_seeded_pick_is_reproducible_and_spread(data_config):
    clips = clips_from_config(data_config, "val", "validation")
    first, second = seeded_pick(clips, 3, seed=11), seeded_pick(clips, 3, seed=11)
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    videos = [int(clip[0, 0, 0, 0]) // 10 for clip in first]
    assert videos == evenly_spaced(7, 3) == [0, 3, 6]
    assert len(seeded_pick(clips, 50, seed=11)) == 7  # at most every video once
