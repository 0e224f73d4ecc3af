"""dataset/video_dataset.py: reading both HDF5 layouts, clip semantics, transforms, augmentation and workers."""
from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from torch.utils.data import DataLoader

from conftest import random_video, write_original_layout
from dataset.h5 import H5FormatError, VideoShard, write_videos
from dataset.video_dataset import ShortVideoError, VideoDataset

SIZE = 16


# Helpers -------------------------------------------------------------------------------------------------------------------
def index_video(num_frames: int, height: int = 8, width: int = 8, offset: int = 0) -> np.ndarray:
    """Frame t is filled with the value t + offset, so the frame index can be read back from the pixels."""
    return (np.arange(num_frames, dtype=np.uint8)[:, None, None, None] + offset) * np.ones((1, height, width, 3), np.uint8)


def frame_indices(clip: torch.Tensor, offset: int = 0) -> list:
    values = ((clip + 1.0) * 127.5).round().to(torch.int64)
    assert bool((values == values[:, :1, :1, :1]).all()), "frames are not flat"
    return [int(v) - offset for v in values[:, 0, 0, 0]]


def to_float(frames: np.ndarray) -> torch.Tensor:
    """Expected dataset output of uint8 [T H W 3] without any transform."""
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def write_layout(folder: Path, videos: list, layout: str, shards: int = 1) -> Path:
    """`videos` split over `shards` shard files of the given layout ("chunked", "original", "epic")."""
    folder.mkdir(parents=True, exist_ok=True)
    if layout == "chunked":
        write_videos(folder, videos, num_per_shard=-(-len(videos) // shards))
        return folder
    per_shard = -(-len(videos) // shards)
    for s in range(shards):
        part = videos[s * per_shard:(s + 1) * per_shard]
        write_original_layout(folder / f"shard_{s + 1:04d}.hdf5", part, "videos" if layout == "epic" else None)
    return folder


def plain(path, frames_per_sample, **kwargs) -> VideoDataset:
    kwargs.setdefault("random_horizontal_flip", False)
    kwargs.setdefault("random_time", False)
    return VideoDataset(path, SIZE, SIZE, frames_per_sample=frames_per_sample, **kwargs)


@pytest.fixture
def videos(rng) -> list:
    return [random_video(rng, n, SIZE, SIZE) for n in (7, 9, 8, 10)]


# Layouts -------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "layout, frames_key, shards",
    [("original", None, 1), ("original", None, 2), ("epic", "videos", 1), ("epic", None, 1), ("epic", None, 2)],
)
def test_original_layout_reads_like_chunked(tmp_path, videos, layout, frames_key, shards):
    chunked = write_layout(tmp_path / "chunked", videos, "chunked")
    original = write_layout(tmp_path / layout, videos, layout, shards)
    kwargs = dict(frames_per_sample=4, skip_frames=1, random_time=True, random_horizontal_flip=True)
    ds_chunked = VideoDataset(chunked, SIZE, SIZE, **kwargs)
    ds_original = VideoDataset(original, SIZE, SIZE, frames_key=frames_key, **kwargs)
    assert ds_original.layouts == ["original"] * shards and ds_chunked.layouts == ["chunked"]
    assert len(ds_original) == len(ds_chunked) == len(videos)
    for i in range(len(videos)):
        for seed in range(3):
            torch.manual_seed(seed)
            a = ds_chunked[i]
            torch.manual_seed(seed)
            b = ds_original[i]
            assert torch.equal(a, b)
    # And both are the data that was written.
    ds = plain(original, 7, frames_key=frames_key)
    for i, frames in enumerate(videos):
        assert torch.equal(ds[i], to_float(frames[:7]))


def test_epic_layout_detection(tmp_path, videos):
    path = write_original_layout(tmp_path / "epic.hdf5", videos, frames_key="videos")
    with VideoShard(path) as shard:
        assert (shard.layout, shard.frames_key) == ("original", "videos")
        assert shard.lengths.tolist() == [len(v) for v in videos]
        np.testing.assert_array_equal(shard.read(1, 2, 3, 2), videos[1][2:7:2])
    path = write_original_layout(tmp_path / "plain.hdf5", videos)
    with VideoShard(path) as shard:
        assert (shard.layout, shard.frames_key) == ("original", None)
        np.testing.assert_array_equal(shard.read(3, 0, 10), videos[3])


def test_wrong_frames_key_is_named(tmp_path, videos):
    write_original_layout(tmp_path / "shard_0001.hdf5", videos)
    with pytest.raises(H5FormatError, match="shard_0001.hdf5") as info:
        VideoDataset(tmp_path, SIZE, SIZE, frames_key="frames")
    assert "frames" in str(info.value)


@pytest.mark.parametrize("compression", ["none", "lzf", "gzip"])
def test_chunked_compressions_read_back(tmp_path, videos, compression):
    write_videos(tmp_path / "split", videos, compression=compression)
    ds = plain(tmp_path / "split", 7)
    for i, frames in enumerate(videos):
        assert torch.equal(ds[i], to_float(frames[:7]))


# Clip semantics ------------------------------------------------------------------------------------------------------------
def test_output_format(tmp_path, videos):
    write_layout(tmp_path / "split", videos, "chunked")
    clip = plain(tmp_path / "split", 5)[2]
    assert clip.dtype == torch.float32 and clip.shape == (5, 3, SIZE, SIZE)
    expected = torch.from_numpy(videos[2][:5]).permute(0, 3, 1, 2).double() / 127.5 - 1.0
    assert torch.allclose(clip.double(), expected, atol=1e-6, rtol=0)
    assert clip.min() >= -1 and clip.max() <= 1


@pytest.mark.parametrize("layout", ["chunked", "original"])
def test_skip_frames_fixed_start(tmp_path, layout):
    write_layout(tmp_path / "split", [index_video(12)], layout)
    assert frame_indices(plain(tmp_path / "split", 3, skip_frames=2)[0]) == [0, 3, 6]
    assert frame_indices(plain(tmp_path / "split", 4, skip_frames=0)[0]) == [0, 1, 2, 3]
    assert frame_indices(plain(tmp_path / "split", 2, skip_frames=10)[0]) == [0, 11]


@pytest.mark.parametrize(
    "length, frames_per_sample, skip_frames",
    [(10, 4, 0), (12, 3, 2), (9, 2, 3), (6, 1, 0)],
)
def test_random_starts_cover_exactly_the_valid_starts(tmp_path, length, frames_per_sample, skip_frames):
    write_layout(tmp_path / "split", [index_video(length)], "chunked")
    ds = plain(tmp_path / "split", frames_per_sample, skip_frames=skip_frames, random_time=True)
    span = (skip_frames + 1) * (frames_per_sample - 1) + 1
    torch.manual_seed(0)
    starts = []
    for _ in range(200):
        indices = frame_indices(ds[0])
        start = indices[0]
        assert indices == [start + k * (skip_frames + 1) for k in range(frames_per_sample)]
        starts.append(start)
    assert set(starts) == set(range(length - span + 1))


@pytest.mark.parametrize("layout", ["chunked", "original"])
def test_video_of_exactly_one_span_is_accepted(tmp_path, layout):
    write_layout(tmp_path / "split", [index_video(7)], layout)
    ds = plain(tmp_path / "split", 3, skip_frames=2, random_time=True)  # span 7
    torch.manual_seed(0)
    for _ in range(5):
        assert frame_indices(ds[0]) == [0, 3, 6]


@pytest.mark.parametrize("layout", ["chunked", "original"])
def test_short_video_is_named_or_skipped(tmp_path, layout):
    videos = [index_video(8, offset=0), index_video(6, offset=50), index_video(9, offset=100)]
    write_layout(tmp_path / "split", videos, layout)
    with pytest.raises(ShortVideoError) as info:
        plain(tmp_path / "split", 4, skip_frames=1)  # span 7
    message = str(info.value)
    assert "shard_0001.hdf5" in message and "video 1" in message and "6 frames" in message
    assert "video 0" not in message and "video 2" not in message

    ds = plain(tmp_path / "split", 4, skip_frames=1, skip_short_videos=True)
    assert len(ds) == 2
    assert frame_indices(ds[0]) == [0, 2, 4, 6]
    assert frame_indices(ds[1], offset=100) == [0, 2, 4, 6]


def test_all_videos_short(tmp_path):
    write_layout(tmp_path / "split", [index_video(3)], "chunked")
    with pytest.raises(ShortVideoError):
        plain(tmp_path / "split", 4, skip_short_videos=True)


def test_total_videos_rescales_indices(tmp_path):
    write_layout(tmp_path / "split", [index_video(4, offset=0), index_video(4, offset=100)], "chunked")
    ds = plain(tmp_path / "split", 2, total_videos=6)
    assert len(ds) == 6
    assert [frame_indices(ds[i])[0] for i in range(6)] == [0, 0, 0, 100, 100, 100]
    with pytest.raises(IndexError):
        ds[6]


# Resizing ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("height, width, input_size, crop_size", [(20, 28, 12, 10), (24, 17, 9, 8), (16, 21, 16, 12), (20, 30, 10, 8)])
def test_resize_shorter_side_then_centre_crop(tmp_path, rng, height, width, input_size, crop_size):
    frames = random_video(rng, 3, height, width)
    write_videos(tmp_path / "split", [frames])
    ds = VideoDataset(tmp_path / "split", input_size, crop_size, frames_per_sample=3, random_time=False,
                      random_horizontal_flip=False)
    clip = torch.from_numpy(frames).permute(0, 3, 1, 2)
    resized = TF.resize(clip, input_size, interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    assert min(resized.shape[-2:]) == input_size
    expected = TF.center_crop(resized, [crop_size, crop_size]).float() / 127.5 - 1.0
    got = ds[0]
    assert got.shape == (3, 3, crop_size, crop_size)
    assert torch.allclose(got, expected, atol=1e-6, rtol=0)


def test_albumentations_path_keeps_size_and_floors_the_crop_offset(tmp_path, rng):
    frames = random_video(rng, 2, 16, 19)  # shorter side already 16; width margin 7 is odd: offset 3, not round(3.5)=4
    write_videos(tmp_path / "split", [frames])
    kwargs = dict(frames_per_sample=2, random_time=False, random_horizontal_flip=False)
    got = VideoDataset(tmp_path / "split", 16, 12, albumentations=True, **kwargs)[0]
    expected = to_float(frames[:, 2:14, 3:15])
    assert torch.equal(got, expected)
    # The torchvision path rounds the offset instead, so the two paths differ here.
    torchvision_path = VideoDataset(tmp_path / "split", 16, 12, **kwargs)[0]
    assert torch.equal(torchvision_path, to_float(frames[:, 2:14, 4:16]))
    # And with a real resize it still yields the crop size.
    resized = VideoDataset(tmp_path / "split", 8, 8, albumentations=True, **kwargs)[0]
    assert resized.shape == (2, 3, 8, 8)


def test_crop_larger_than_input_is_rejected(tmp_path, videos):
    write_videos(tmp_path / "split", videos)
    with pytest.raises(ValueError):
        VideoDataset(tmp_path / "split", 8, 12)


# Augmentation --------------------------------------------------------------------------------------------------------------
def test_augmentation_is_the_same_for_every_frame(tmp_path, rng):
    image = random_video(rng, 1, SIZE, SIZE)[0]
    write_videos(tmp_path / "split", [np.stack([image] * 6)])
    base = VideoDataset(tmp_path / "split", SIZE, SIZE, frames_per_sample=4, random_horizontal_flip=False)[0]
    ds = VideoDataset(tmp_path / "split", SIZE, SIZE, frames_per_sample=4, aug=True, random_horizontal_flip=True)
    torch.manual_seed(0)
    outputs = [ds[0] for _ in range(8)]
    for clip in outputs:
        for t in range(1, 4):
            assert torch.equal(clip[t], clip[0])
    assert any(not torch.equal(clip, base) for clip in outputs)
    # Colour jitter itself (not just the flip) changes the pixels.
    assert any(not torch.equal(clip, base) and not torch.equal(clip, base.flip(-1)) for clip in outputs)
    assert len({clip.numpy().tobytes() for clip in outputs}) > 1


def test_flip_applies_to_all_frames_or_none(tmp_path, rng):
    frames = random_video(rng, 5, SIZE, SIZE)
    write_videos(tmp_path / "split", [frames])
    base = to_float(frames)
    ds = VideoDataset(tmp_path / "split", SIZE, SIZE, frames_per_sample=5, random_time=False,
                      random_horizontal_flip=True)
    torch.manual_seed(0)
    seen = set()
    for _ in range(16):
        clip = ds[0]
        if torch.equal(clip, base):
            seen.add("none")
        else:
            assert torch.equal(clip, base.flip(-1)), "some frames flipped, others not"
            seen.add("all")
    assert seen == {"none", "all"}


def test_no_augmentation_is_deterministic(tmp_path, videos):
    write_videos(tmp_path / "split", videos)
    ds = VideoDataset(tmp_path / "split", SIZE, SIZE, frames_per_sample=5, random_time=False,
                      random_horizontal_flip=False, aug=False)
    assert torch.equal(ds[1], ds[1])
    assert torch.equal(ds[1], to_float(videos[1][:5]))


# Workers and pickling -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["chunked", "original"])
def test_dataloader_with_two_fork_workers(tmp_path, videos, layout):
    write_layout(tmp_path / "split", videos, layout, shards=2)
    ds = plain(tmp_path / "split", 5)
    expected = torch.stack([ds[i] for i in range(len(ds))])  # the parent has open handles before forking
    loader = DataLoader(ds, batch_size=2, num_workers=2, multiprocessing_context="fork")
    batches = list(loader)
    assert [b.shape for b in batches] == [(2, 5, 3, SIZE, SIZE)] * 2
    assert torch.equal(torch.cat(batches), expected)
    # Still readable in the parent afterwards.
    assert torch.equal(ds[3], expected[3])


def test_random_clips_in_workers(tmp_path):
    write_layout(tmp_path / "split", [index_video(12, offset=10 * v) for v in range(4)], "chunked")
    ds = plain(tmp_path / "split", 3, random_time=True)
    torch.manual_seed(0)
    loader = DataLoader(ds, batch_size=1, num_workers=2, multiprocessing_context="fork", shuffle=False)
    for epoch in range(2):
        for v, clip in enumerate(loader):
            indices = frame_indices(clip[0], offset=10 * v)
            assert indices == [indices[0], indices[0] + 1, indices[0] + 2] and 0 <= indices[0] <= 9


def test_dataset_pickles_after_reading(tmp_path, videos):
    write_layout(tmp_path / "split", videos, "original")
    ds = plain(tmp_path / "split", 5)
    first = ds[0]
    clone = pickle.loads(pickle.dumps(ds))
    assert torch.equal(clone[0], first)
    assert torch.equal(clone[2], ds[2])
    clone.close()
    assert torch.equal(ds[3], to_float(videos[3][:5]))


# Bad files -----------------------------------------------------------------------------------------------------------------
def test_garbage_shard_next_to_a_good_one_is_named(tmp_path, videos):
    write_layout(tmp_path / "split", videos, "chunked")
    (tmp_path / "split" / "shard_0002.hdf5").write_bytes(b"definitely not hdf5" * 100)
    with pytest.raises((H5FormatError, OSError)) as info:
        VideoDataset(tmp_path / "split", SIZE, SIZE)
    assert "shard_0002.hdf5" in str(info.value)


def test_truncated_shard_is_named(tmp_path, videos):
    write_layout(tmp_path / "split", videos, "original")
    good = (tmp_path / "split" / "shard_0001.hdf5").read_bytes()
    (tmp_path / "split" / "shard_0002.hdf5").write_bytes(good[: len(good) // 3])
    with pytest.raises((H5FormatError, OSError)) as info:
        VideoDataset(tmp_path / "split", SIZE, SIZE)
    assert "shard_0002.hdf5" in str(info.value)


def test_hdf5_file_that_is_not_a_cage_file(tmp_path):
    path = tmp_path / "split" / "shard_0001.hdf5"
    path.parent.mkdir()
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(H5FormatError, match="shard_0001.hdf5"):
        VideoDataset(tmp_path / "split", SIZE, SIZE)
    with pytest.raises(H5FormatError, match="shard_0001.hdf5"):
        VideoShard(path)


def test_missing_or_empty_dataset_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing_here"):
        VideoDataset(tmp_path / "nothing_here", SIZE, SIZE)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no shards")
    with pytest.raises(FileNotFoundError, match="empty"):
        VideoDataset(tmp_path / "empty", SIZE, SIZE)
