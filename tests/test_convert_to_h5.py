"""dataset/convert_to_h5.py: frame folders and video files -> HDF5 split folders, every bad input, the flag
spellings and exit statuses, and the staging folders that killed runs leave."""
from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

import dataset.convert_to_h5 as convert_mod
from conftest import ROOT, random_video, write_frame_folders
from dataset.convert_to_h5 import main, split_by_ratios
from dataset.h5 import VideoShard, list_shards
from dataset.staging import host_tag
from dataset.video_dataset import VideoDataset
from dataset.video_io import DecodeError, read_video

SPLITS = ("train", "val", "test")
SIZE = 16
NUM_FRAMES = 6


# Helpers ---------------------------------------------------------------------------------------------------------------
def run_cli(*args, processes: int = 1) -> int:
    return main([str(a) for a in args] + ["--processes", str(processes), "--quiet"])


def frames_cli(data_dir: Path, out_dir: Path, *extra, processes: int = 1) -> int:
    return run_cli("--data-dir", data_dir, "--out-dir", out_dir, "--extension", "png", *extra, processes=processes)


def read_split(split_dir: Path) -> tuple:
    """(videos, names) of every shard of a split folder, in shard order."""
    videos, names = [], []
    for path in list_shards(split_dir):
        with VideoShard(path) as shard:
            for v in range(shard.num_videos):
                videos.append(shard.read(v, 0, int(shard.lengths[v])))
            names += shard.names()
    return videos, names


def manifest(split_dir: Path) -> dict:
    return json.loads((split_dir / "manifest.json").read_text())


def assert_nothing_written(out_dir: Path) -> None:
    """No shard, no split folder, no hidden temporary left behind."""
    if out_dir.exists():
        assert list(out_dir.rglob("shard_*")) == []
        assert sorted(p.name for p in out_dir.iterdir()) == []


def make_frame_data(root: Path, rng, counts=(2, 1, 1), num_frames=NUM_FRAMES, size=SIZE) -> dict:
    videos = {
        split: [random_video(rng, num_frames, size, size) for _ in range(n)] for split, n in zip(SPLITS, counts)
    }
    write_frame_folders(root, videos)
    return videos


def to_uint8(clip: torch.Tensor) -> np.ndarray:
    """Dataset output [T 3 H W] in [-1, 1] back to uint8 [T H W 3]."""
    values = ((clip + 1.0) * 127.5).round()
    assert values.min() >= 0 and values.max() <= 255
    return values.to(torch.uint8).permute(0, 2, 3, 1).numpy()


# Flat-colour test videos, encoded here with PyAV --------------------------------------------------------------------------
_LEVELS = (30, 90, 150, 210)
PALETTE = np.array(list(itertools.product(_LEVELS, repeat=3)), dtype=np.uint8)
PALETTE = PALETTE[np.random.default_rng(0).permutation(len(PALETTE))]  # neighbours differ by >= 60 in some channel
SOURCE_FPS = 20
CODECS = {"mp4": "libx264", "webm": "libvpx-vp9"}


def _available(codec: str) -> bool:
    import av

    try:
        av.codec.Codec(codec, "w")
        return True
    except Exception:
        return False


if not _available(CODECS["webm"]):
    CODECS["webm"] = "libvpx"


def encode_video(path: Path, indices, fps: int = SOURCE_FPS, width: int = 32, height: int = 32) -> Path:
    """A video whose frame i is the flat colour PALETTE[indices[i]]."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    container = av.open(str(path), "w")
    stream = container.add_stream(CODECS[path.suffix.lstrip(".")], rate=fps)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    for index in indices:
        image = np.empty((height, width, 3), np.uint8)
        image[:] = PALETTE[index]
        for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def nearest_colour(frame: np.ndarray, palette: np.ndarray = PALETTE) -> int:
    mean = frame.reshape(-1, 3).astype(np.float64).mean(0)
    return int(np.abs(palette.astype(np.float64) - mean).max(1).argmin())


def assert_flat(frame: np.ndarray, colour: np.ndarray) -> None:
    error = np.abs(frame.astype(np.float64) - colour.astype(np.float64)).mean()
    assert error < 10, f"mean abs error {error:.1f} against colour {colour.tolist()}"


def test_palette_is_separable():
    # The colour identification below relies on this.
    distances = np.abs(PALETTE[:, None].astype(int) - PALETTE[None].astype(int)).max(-1)
    assert distances[~np.eye(len(PALETTE), dtype=bool)].min() >= 60


# Frame folders -------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["chunked", "original"])
def test_frames_round_trip_pixel_exact_every_split(tmp_path, rng, layout):
    videos = make_frame_data(tmp_path / "frames", rng, counts=(2, 1, 2))
    out = tmp_path / "out"
    assert frames_cli(tmp_path / "frames", out, "--layout", layout) == 0

    assert sorted(p.name for p in out.iterdir()) == sorted(SPLITS)
    for split in SPLITS:
        split_dir = out / split
        assert (split_dir / "shard_0001.hdf5").is_file()
        info = manifest(split_dir)
        assert info["split"] == split and info["layout"] == layout
        assert info["num_videos"] == len(videos[split]) and info["skipped"] == []
        with VideoShard(split_dir / "shard_0001.hdf5") as shard:
            assert shard.layout == layout
        ds = VideoDataset(
            split_dir, SIZE, SIZE, frames_per_sample=NUM_FRAMES, random_time=False, random_horizontal_flip=False
        )
        assert len(ds) == len(videos[split])
        for i, source in enumerate(videos[split]):
            clip = ds[i]
            assert clip.dtype == torch.float32 and clip.shape == (NUM_FRAMES, 3, SIZE, SIZE)
            np.testing.assert_array_equal(to_uint8(clip), source)


def test_original_layout_output_matches_the_original_structure(tmp_path, rng):
    """What the original reader expects (spec section 6): /len/<v> scalars, empty /videos, lzf frames at /<v>/<t>."""
    videos = make_frame_data(tmp_path / "frames", rng, counts=(2, 1, 1))
    out = tmp_path / "out"
    assert frames_cli(tmp_path / "frames", out, "--layout", "original", "--splits", "train") == 0
    with h5py.File(out / "train" / "shard_0001.hdf5", "r") as f:
        assert "cage_format" not in f.attrs
        assert sorted(f["len"].keys()) == ["0", "1"]
        assert isinstance(f["videos"], h5py.Group) and len(f["videos"]) == 0
        for v, source in enumerate(videos["train"]):
            assert f["len"][str(v)].shape == () and int(f["len"][str(v)][()]) == NUM_FRAMES
            assert sorted(f[str(v)].keys(), key=int) == [str(t) for t in range(NUM_FRAMES)]
            for t in range(NUM_FRAMES):
                dataset = f[str(v)][str(t)]
                assert dataset.dtype == np.uint8 and dataset.compression == "lzf"
                np.testing.assert_array_equal(dataset[()], source[t])


def test_only_requested_splits_are_written(tmp_path, rng):
    videos = make_frame_data(tmp_path / "frames", rng, counts=(1, 1, 0))  # no test folder at all
    out = tmp_path / "out"
    assert frames_cli(tmp_path / "frames", out, "--splits", "val") == 0
    assert [p.name for p in out.iterdir()] == ["val"]
    got, names = read_split(out / "val")
    assert names == ["video_000"]
    np.testing.assert_array_equal(got[0], videos["val"][0])


def test_image_size_and_target_size_resize_with_pil_bicubic(tmp_path, rng):
    videos = make_frame_data(tmp_path / "frames", rng, counts=(1, 0, 0), num_frames=2)
    source = videos["train"][0]
    for flag, size in ((["--image-size", "8"], (8, 8)), (["--target-size", "12", "8"], (12, 8))):
        out = tmp_path / f"out_{size[0]}x{size[1]}"
        assert frames_cli(tmp_path / "frames", out, "--splits", "train", *flag) == 0
        (got,), _ = read_split(out / "train")
        width, height = size
        assert got.shape == (2, height, width, 3)
        expected = np.stack([np.asarray(Image.fromarray(f).resize(size, Image.BICUBIC)) for f in source])
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("sort, order", [("name", [1, 10, 2]), ("natural", [1, 2, 10])])
def test_frame_order(tmp_path, sort, order):
    folder = tmp_path / "frames" / "train" / "clip"
    folder.mkdir(parents=True)
    for t in (1, 2, 10):
        Image.fromarray(np.full((8, 8, 3), t * 20, np.uint8)).save(folder / f"f_{t}.png")
    out = tmp_path / "out"
    assert frames_cli(tmp_path / "frames", out, "--splits", "train", "--sort", sort) == 0
    (got,), _ = read_split(out / "train")
    assert [int(frame[0, 0, 0]) // 20 for frame in got] == order


@pytest.mark.parametrize("layout", ["chunked", "original"])
def test_two_processes_write_the_same_as_one(tmp_path, rng, layout):
    make_frame_data(tmp_path / "frames", rng, counts=(5, 1, 1), num_frames=4)
    outputs = []
    for processes in (1, 2):
        out = tmp_path / f"out{processes}"
        assert frames_cli(tmp_path / "frames", out, "--layout", layout, processes=processes) == 0
        outputs.append({split: read_split(out / split) for split in SPLITS})
    one, two = outputs
    for split in SPLITS:
        assert len(one[split][0]) == len(two[split][0])
        assert one[split][1] == two[split][1]
        for a, b in zip(one[split][0], two[split][0]):
            np.testing.assert_array_equal(a, b)


def test_num_per_shard_splits_into_numbered_shards(tmp_path, rng):
    videos = make_frame_data(tmp_path / "frames", rng, counts=(5, 0, 0), num_frames=3)
    out = tmp_path / "out"
    assert frames_cli(tmp_path / "frames", out, "--splits", "train", "--num-per-shard", "2") == 0
    assert sorted(p.name for p in (out / "train").glob("*.hdf5")) == [
        "shard_0001.hdf5", "shard_0002.hdf5", "shard_0003.hdf5"
    ]
    assert manifest(out / "train")["shards"] == ["shard_0001.hdf5", "shard_0002.hdf5", "shard_0003.hdf5"]
    ds = VideoDataset(out / "train", SIZE, SIZE, frames_per_sample=3, random_time=False, random_horizontal_flip=False)
    assert len(ds) == 5
    for i, source in enumerate(videos["train"]):
        np.testing.assert_array_equal(to_uint8(ds[i]), source)


# Video files ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ext", ["mp4", "webm"])
@pytest.mark.parametrize("fps", [None, 10, 8])
def test_video_colours_and_fps_resampling(tmp_path, ext, fps):
    num_source = 2 * SOURCE_FPS  # a 2 s video
    encode_video(tmp_path / "videos" / "train" / f"clip.{ext}", np.arange(num_source))
    out = tmp_path / "out"
    args = ["--data-dir", tmp_path / "videos", "--out-dir", out, "--splits", "train"]
    assert run_cli(*args, *(["--fps", fps] if fps else [])) == 0
    assert manifest(out / "train")["settings"]["mode"] == "videos"
    (frames,), names = read_split(out / "train")
    assert names == [f"clip.{ext}"]
    expected_count = num_source if fps is None else int(2 * fps)
    assert frames.shape == (expected_count, 32, 32, 3)
    for k, frame in enumerate(frames):
        source = k if fps is None else int(np.floor(k * SOURCE_FPS / fps + 1e-9))  # the frame shown at time k/fps
        assert nearest_colour(frame) == source, f"output frame {k}"
        assert_flat(frame, PALETTE[source])


@pytest.mark.parametrize("ext", ["mp4", "webm"])
def test_video_target_size_and_max_frames(tmp_path, ext):
    encode_video(tmp_path / "videos" / "train" / f"clip.{ext}", np.arange(10), width=32, height=16)
    out = tmp_path / "out"
    argv = ["--data-dir", tmp_path / "videos", "--out-dir", out, "--splits", "train", "--target-size", 24, 12,
            "--max-frames", 7]
    assert run_cli(*argv) == 0
    (frames,), _ = read_split(out / "train")
    assert frames.shape == (7, 12, 24, 3)
    for k, frame in enumerate(frames):
        assert nearest_colour(frame) == k
        assert_flat(frame, PALETTE[k])


def test_video_split_subfolders(tmp_path):
    data = tmp_path / "videos"
    layout = {"train": ["a.mp4", "sub/b.webm"], "val": ["c.webm"], "test": ["d.mp4"]}
    colour = {}
    for split, files in layout.items():
        for name in files:
            first = len(colour) * 4
            colour[name] = first
            encode_video(data / split / name, np.arange(first, first + 4))
    out = tmp_path / "out"
    assert run_cli("--data-dir", data, "--out-dir", out) == 0
    for split, files in layout.items():
        videos, names = read_split(out / split)
        assert names == sorted(files)
        for name, frames in zip(names, videos):
            assert len(frames) == 4
            assert [nearest_colour(f) for f in frames] == list(range(colour[name], colour[name] + 4))


def _flat_split(out: Path) -> dict:
    return {split: read_split(out / split)[1] for split in SPLITS if (out / split).is_dir()}


def test_flat_folder_split_by_ratios_is_deterministic(tmp_path):
    data = tmp_path / "videos"
    files = [f"v{i}.{'mp4' if i % 2 else 'webm'}" for i in range(6)]
    for i, name in enumerate(files):
        encode_video(data / name, np.arange(i, i + 2))
    argv = ["--data-dir", data, "--split-ratios", 0.6, 0.2, 0.2, "--split-seed", 3]
    assert run_cli(*argv, "--out-dir", tmp_path / "a") == 0
    assert run_cli(*argv, "--out-dir", tmp_path / "b", processes=2) == 0
    first, second = _flat_split(tmp_path / "a"), _flat_split(tmp_path / "b")
    assert first == second
    assert {split: len(names) for split, names in first.items()} == {"train": 4, "val": 1, "test": 1}
    assert sorted(itertools.chain(*first.values())) == sorted(files)
    # The content follows the name.
    for split, names in first.items():
        videos, _ = read_split(tmp_path / "a" / split)
        for name, frames in zip(names, videos):
            i = files.index(name)
            assert [nearest_colour(f) for f in frames] == [i, i + 1]


def test_split_by_ratios_depends_on_the_seed_only():
    files = [f"f{i:02d}.mp4" for i in range(20)]
    splits = [split_by_ratios(files, [0.5, 0.25, 0.25], seed) for seed in range(4)]
    assert split_by_ratios(files, [0.5, 0.25, 0.25], 2) == splits[2]
    assert len({json.dumps(s, sort_keys=True) for s in splits}) > 1
    for s in splits:
        assert sorted(itertools.chain(*s.values())) == files


def test_read_video_garbage_file_names_it(tmp_path):
    path = tmp_path / "broken.mp4"
    path.write_bytes(b"this is not a video" * 50)
    with pytest.raises(DecodeError, match="broken.mp4"):
        read_video(path)


@pytest.mark.parametrize("processes", [1, 2])
def test_garbage_video_file_fails_naming_it(tmp_path, capsys, processes):
    data = tmp_path / "videos"
    encode_video(data / "train" / "good.mp4", np.arange(3))
    (data / "train" / "zz_broken.mp4").write_bytes(b"\x00garbage" * 100)
    out = tmp_path / "out"
    rc = run_cli("--data-dir", data, "--out-dir", out, "--splits", "train", processes=processes)
    assert rc != 0
    assert "zz_broken.mp4" in capsys.readouterr().err
    assert_nothing_written(out)

    assert run_cli("--data-dir", data, "--out-dir", out, "--splits", "train", "--skip-bad", processes=processes) == 0
    info = manifest(out / "train")
    assert info["num_videos"] == 1
    assert [entry["name"] for entry in info["skipped"]] == ["zz_broken.mp4"]
    assert "zz_broken.mp4" in info["skipped"][0]["error"]
    assert read_split(out / "train")[1] == ["good.mp4"]


# Bad input -----------------------------------------------------------------------------------------------------------------
def check_failure(capsys, rc: int, out_dir: Path, *needles: str) -> str:
    err = capsys.readouterr().err
    assert rc != 0
    for needle in needles:
        assert needle in err, f"{needle!r} not in stderr:\n{err}"
    assert "Traceback" not in err
    assert_nothing_written(out_dir)
    return err


@pytest.mark.parametrize("processes", [1, 2])
def test_missing_data_dir(tmp_path, capsys, processes):
    missing = tmp_path / "no_such_dir"
    rc = frames_cli(missing, tmp_path / "out", processes=processes)
    check_failure(capsys, rc, tmp_path / "out", str(missing))


@pytest.mark.parametrize("processes", [1, 2])
def test_empty_data_dir(tmp_path, capsys, processes):
    (tmp_path / "frames").mkdir()
    rc = frames_cli(tmp_path / "frames", tmp_path / "out", processes=processes)
    check_failure(capsys, rc, tmp_path / "out", str(tmp_path / "frames"), "empty")


@pytest.mark.parametrize("processes", [1, 2])
def test_missing_split_folder(tmp_path, rng, capsys, processes):
    make_frame_data(tmp_path / "frames", rng, counts=(1, 1, 0), num_frames=2)
    rc = frames_cli(tmp_path / "frames", tmp_path / "out", processes=processes)
    check_failure(capsys, rc, tmp_path / "out", str(tmp_path / "frames" / "test"))


@pytest.mark.parametrize("processes", [1, 2])
def test_split_without_video_folders(tmp_path, rng, capsys, processes):
    make_frame_data(tmp_path / "frames", rng, counts=(1, 1, 0), num_frames=2)
    (tmp_path / "frames" / "test").mkdir()
    rc = frames_cli(tmp_path / "frames", tmp_path / "out", processes=processes)
    check_failure(capsys, rc, tmp_path / "out", str(tmp_path / "frames" / "test"))


@pytest.mark.parametrize("processes", [1, 2])
def test_video_folder_without_frames_of_the_extension(tmp_path, rng, capsys, processes):
    write_frame_folders(tmp_path / "frames", {"train": [random_video(rng, 2, 8, 8)] * 2}, extension="jpg")
    rc = frames_cli(tmp_path / "frames", tmp_path / "out", "--splits", "train", processes=processes)
    err = check_failure(capsys, rc, tmp_path / "out", str(tmp_path / "frames" / "train" / "video_000"), ".jpg")
    assert "png" in err


@pytest.mark.parametrize("processes", [1, 2])
def test_empty_video_folder(tmp_path, rng, capsys, processes):
    make_frame_data(tmp_path / "frames", rng, counts=(1, 0, 0), num_frames=2)
    (tmp_path / "frames" / "train" / "video_001").mkdir()
    rc = frames_cli(tmp_path / "frames", tmp_path / "out", "--splits", "train", processes=processes)
    check_failure(capsys, rc, tmp_path / "out", str(tmp_path / "frames" / "train" / "video_001"))


@pytest.mark.parametrize("processes", [1, 2])
def test_unreadable_frame_is_named(tmp_path, rng, capsys, processes):
    make_frame_data(tmp_path / "frames", rng, counts=(3, 0, 0), num_frames=3)
    bad = tmp_path / "frames" / "train" / "video_001" / "0001.png"
    bad.write_bytes(b"not a png at all" * 10)
    rc = frames_cli(tmp_path / "frames", tmp_path / "out", "--splits", "train", processes=processes)
    check_failure(capsys, rc, tmp_path / "out", str(bad))


@pytest.mark.parametrize("processes", [1, 2])
@pytest.mark.parametrize("size_flag", [[], ["--image-size", "8"], ["--target-size", "12", "8"]])
def test_mixed_frame_sizes_are_refused_with_or_without_a_size(tmp_path, rng, capsys, processes, size_flag):
    """Frames of one video must share one size: resizing each frame on its own would hide broken input."""
    make_frame_data(tmp_path / "frames", rng, counts=(2, 0, 0), num_frames=3)
    odd = tmp_path / "frames" / "train" / "video_001" / "0002.png"
    Image.fromarray(random_video(rng, 1, 10, 12)[0]).save(odd)
    rc = frames_cli(tmp_path / "frames", tmp_path / "out", "--splits", "train", *size_flag, processes=processes)
    check_failure(capsys, rc, tmp_path / "out", str(odd), "12x10", "16x16")


def _video_with_one_odd_frame(root: Path, rng) -> Path:
    """train/video_000 and video_002 of 64x64 frames; video_001's frame 0001.png is 48 wide, 64 high."""
    videos = {"train": [random_video(rng, 3, 64, 64) for _ in range(3)]}
    videos["train"][1] = list(videos["train"][1])
    videos["train"][1][1] = random_video(rng, 1, 64, 48)[0]
    write_frame_folders(root, videos)
    return root / "train" / "video_001" / "0001.png"


@pytest.mark.parametrize("processes", [1, 2])
def test_narrower_frame_among_square_frames_is_refused_even_with_image_size(tmp_path, rng, capsys, processes):
    odd = _video_with_one_odd_frame(tmp_path / "frames", rng)
    rc = frames_cli(tmp_path / "frames", tmp_path / "out", "--splits", "train", "--image-size", "32",
                    processes=processes)
    err = check_failure(capsys, rc, tmp_path / "out", str(odd), "48x64", "64x64", "video_001")
    assert str(odd.parent) in err


@pytest.mark.parametrize("processes", [1, 2])
def test_skip_bad_skips_and_records_a_video_with_mixed_frame_sizes(tmp_path, rng, capsys, processes):
    odd = _video_with_one_odd_frame(tmp_path / "frames", rng)
    out = tmp_path / "out"
    assert frames_cli(tmp_path / "frames", out, "--splits", "train", "--image-size", "32", "--skip-bad",
                      processes=processes) == 0
    assert str(odd) in capsys.readouterr().err
    info = manifest(out / "train")
    assert info["num_videos"] == 2
    assert [entry["name"] for entry in info["skipped"]] == ["video_001"]
    assert str(odd) in info["skipped"][0]["error"] and "48x64" in info["skipped"][0]["error"]
    videos, names = read_split(out / "train")
    assert names == ["video_000", "video_002"]
    assert [v.shape for v in videos] == [(3, 32, 32, 3)] * 2


@pytest.mark.parametrize("processes", [1, 2])
def test_skip_bad_skips_and_records_an_unreadable_video(tmp_path, rng, capsys, processes):
    videos = make_frame_data(tmp_path / "frames", rng, counts=(3, 0, 0), num_frames=3)
    bad = tmp_path / "frames" / "train" / "video_001" / "0002.png"
    bad.write_bytes(b"\x89PNG garbage")
    out = tmp_path / "out"
    assert frames_cli(tmp_path / "frames", out, "--splits", "train", "--skip-bad", processes=processes) == 0
    assert "video_001" in capsys.readouterr().err
    info = manifest(out / "train")
    assert info["num_videos"] == 2
    assert [entry["name"] for entry in info["skipped"]] == ["video_001"]
    assert str(bad) in info["skipped"][0]["error"]
    got, names = read_split(out / "train")
    assert names == ["video_000", "video_002"]
    np.testing.assert_array_equal(got[0], videos["train"][0])
    np.testing.assert_array_equal(got[1], videos["train"][2])


def test_skip_bad_records_a_video_folder_without_frames(tmp_path, rng):
    make_frame_data(tmp_path / "frames", rng, counts=(2, 0, 0), num_frames=2)
    (tmp_path / "frames" / "train" / "video_000b").mkdir()
    (tmp_path / "frames" / "train" / "video_000b" / "0000.jpg").write_bytes(b"x")
    out = tmp_path / "out"
    assert frames_cli(tmp_path / "frames", out, "--splits", "train", "--skip-bad") == 0
    info = manifest(out / "train")
    assert info["num_videos"] == 2
    assert read_split(out / "train")[1] == ["video_000", "video_001"]
    assert [entry["name"] for entry in info["skipped"]] == ["video_000b"]


def test_every_video_bad_with_skip_bad_is_an_error(tmp_path, rng, capsys):
    make_frame_data(tmp_path / "frames", rng, counts=(1, 0, 0), num_frames=2)
    (tmp_path / "frames" / "train" / "video_000" / "0000.png").write_bytes(b"junk")
    rc = frames_cli(tmp_path / "frames", tmp_path / "out", "--splits", "train", "--skip-bad")
    check_failure(capsys, rc, tmp_path / "out", "train")


def test_existing_output_needs_force(tmp_path, rng, capsys):
    make_frame_data(tmp_path / "frames", rng, counts=(1, 1, 1), num_frames=2)
    out = tmp_path / "out"
    (out / "val").mkdir(parents=True)
    (out / "val" / "stale.txt").write_text("old")
    rc = frames_cli(tmp_path / "frames", out)
    err = capsys.readouterr().err
    assert rc != 0 and str(out / "val") in err and "--force" in err
    assert sorted(p.name for p in out.iterdir()) == ["val"]  # nothing else written, the old output untouched
    assert [p.name for p in (out / "val").iterdir()] == ["stale.txt"]

    assert frames_cli(tmp_path / "frames", out, "--force") == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(SPLITS)
    assert sorted(p.name for p in (out / "val").iterdir()) == ["manifest.json", "shard_0001.hdf5"]


def test_force_replaces_a_previous_conversion(tmp_path, rng, capsys):
    make_frame_data(tmp_path / "old", rng, counts=(1, 0, 0), num_frames=2)
    new = make_frame_data(tmp_path / "new", rng, counts=(2, 0, 0), num_frames=2)
    out = tmp_path / "out"
    assert frames_cli(tmp_path / "old", out, "--splits", "train") == 0
    assert frames_cli(tmp_path / "new", out, "--splits", "train") != 0
    assert len(read_split(out / "train")[0]) == 1
    assert frames_cli(tmp_path / "new", out, "--splits", "train", "--force") == 0
    got, _ = read_split(out / "train")
    assert len(got) == 2
    for a, b in zip(got, new["train"]):
        np.testing.assert_array_equal(a, b)
    assert [p.name for p in out.iterdir()] == ["train"]  # no hidden leftovers of the swap


@pytest.mark.parametrize("processes", [1, 2])
@pytest.mark.parametrize("layout", ["chunked", "original"])
def test_corrupt_frame_in_second_video_leaves_no_shard(tmp_path, rng, capsys, processes, layout):
    make_frame_data(tmp_path / "frames", rng, counts=(4, 0, 0), num_frames=3)
    (tmp_path / "frames" / "train" / "video_001" / "0002.png").write_bytes(b"corrupt")
    out = tmp_path / "out"
    rc = frames_cli(tmp_path / "frames", out, "--splits", "train", "--layout", layout, "--num-per-shard", "1",
                    processes=processes)
    check_failure(capsys, rc, out, "0002.png")


def _interrupting_reader(real):
    calls = []

    def reader(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    return reader


def test_interrupted_conversion_leaves_no_shard(tmp_path, rng, monkeypatch, capsys):
    make_frame_data(tmp_path / "frames", rng, counts=(3, 0, 0), num_frames=2)
    monkeypatch.setattr(convert_mod, "read_frame_folder", _interrupting_reader(convert_mod.read_frame_folder))
    out = tmp_path / "out"
    rc = frames_cli(tmp_path / "frames", out, "--splits", "train", "--num-per-shard", "1")
    assert rc != 0
    assert_nothing_written(out)


def test_crash_in_reader_leaves_no_shard(tmp_path, rng, monkeypatch):
    make_frame_data(tmp_path / "frames", rng, counts=(3, 0, 0), num_frames=2)
    real = convert_mod.read_frame_folder
    calls = []

    def reader(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise MemoryError("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(convert_mod, "read_frame_folder", reader)
    out = tmp_path / "out"
    with pytest.raises(MemoryError):
        frames_cli(tmp_path / "frames", out, "--splits", "train", "--num-per-shard", "1")
    assert_nothing_written(out)


@pytest.mark.parametrize("processes", [1, 2])
def test_failure_in_a_later_split_leaves_no_split_folder(tmp_path, rng, capsys, processes):
    """A failed run writes nothing: earlier splits must not be left behind either (a rerun would need --force)."""
    make_frame_data(tmp_path / "frames", rng, counts=(2, 1, 2), num_frames=2)
    bad = tmp_path / "frames" / "test" / "video_001" / "0001.png"
    bad.write_bytes(b"corrupt")
    rc = frames_cli(tmp_path / "frames", tmp_path / "out", processes=processes)
    check_failure(capsys, rc, tmp_path / "out", str(bad))


def test_script_reports_errors_with_exit_code(tmp_path):
    missing = tmp_path / "nowhere"
    result = subprocess.run(
        [sys.executable, "dataset/convert_to_h5.py", "--data_dir", str(missing), "--out_dir", str(tmp_path / "out"),
         "--extension", "png", "--processes", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 1
    assert "error:" in result.stderr and str(missing) in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_script_runs_the_originals_command_as_a_file(tmp_path, rng):
    """`python dataset/convert_to_h5.py` with the original's underscore flags, through the installed project."""
    videos = make_frame_data(tmp_path / "frames", rng, counts=(1, 1, 0), num_frames=2)
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "dataset/convert_to_h5.py", "--out_dir", str(out), "--data_dir", str(tmp_path / "frames"),
         "--image_size", str(SIZE), "--extension", "png", "--splits", "train", "val", "--processes", "1", "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    for split in ("train", "val"):
        got, _ = read_split(out / split)
        np.testing.assert_array_equal(got[0], videos[split][0])


# Command line: flag spellings and exit statuses ------------------------------------------------------------------------
def test_underscore_flags_are_aliases_of_the_hyphenated_ones():
    parser = convert_mod.build_parser()
    hyphenated = parser.parse_args([
        "--data-dir", "d", "--out-dir", "o", "--image-size", "64", "--resize-mode", "center_crop", "--split-ratios",
        "1", "2", "3", "--split-seed", "4", "--max-frames", "5", "--video-extensions", "avi", "--num-per-shard", "6",
        "--skip-bad",
    ])
    underscore = parser.parse_args([
        "--data_dir", "d", "--out_dir", "o", "--image_size", "64", "--resize_mode", "center_crop", "--split_ratios",
        "1", "2", "3", "--split_seed", "4", "--max_frames", "5", "--video_extensions", "avi", "--num_per_shard", "6",
        "--skip_bad",
    ])
    assert vars(hyphenated) == vars(underscore)
    assert (underscore.data_dir, underscore.out_dir, underscore.image_size, underscore.resize_mode) == \
        ("d", "o", 64, "center_crop")
    assert (underscore.split_ratios, underscore.split_seed, underscore.max_frames) == ([1.0, 2.0, 3.0], 4, 5)
    assert (underscore.video_extensions, underscore.num_per_shard, underscore.skip_bad) == (["avi"], 6, True)
    target = parser.parse_args(["--data_dir", "d", "--out_dir", "o", "--target_size", "8", "6"])
    assert target.target_size == [8, 6] and target.image_size is None


@pytest.mark.parametrize("flags, needle", [
    (["--image-size", "0"], "image size must be positive"),
    (["--target-size", "12", "0"], "image size must be positive"),
    (["--processes", "0"], "--processes"),
    (["--num-per-shard", "0"], "--num-per-shard"),
    (["--fps", "0"], "--fps"),
    (["--max-frames", "0"], "--max-frames"),
    (["--split-ratios", "1", "-1", "0"], "--split-ratios"),
    (["--layout", "flat"], "--layout"),
    (["--no-such-flag"], "--no-such-flag"),
])
def test_bad_flag_values_are_usage_errors(tmp_path, rng, capsys, flags, needle):
    make_frame_data(tmp_path / "frames", rng, counts=(1, 0, 0), num_frames=2)
    with pytest.raises(SystemExit) as exit_info:
        main(["--data-dir", str(tmp_path / "frames"), "--out-dir", str(tmp_path / "out"), "--extension", "png",
              "--splits", "train", "--quiet", *flags])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert needle in err and "error:" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_a_bug_is_not_reported_as_bad_input(tmp_path, rng, monkeypatch):
    """Only the project's errors become one `error:` line; anything else keeps its traceback."""
    make_frame_data(tmp_path / "frames", rng, counts=(1, 0, 0), num_frames=2)

    def buggy_plan(args):
        raise KeyError("a bug")

    monkeypatch.setattr(convert_mod, "plan", buggy_plan)
    with pytest.raises(KeyError, match="a bug"):
        frames_cli(tmp_path / "frames", tmp_path / "out", "--splits", "train")


# Staging folders of killed runs ------------------------------------------------------------------------------------------
KILLABLE_RUN = """
import sys, time
import dataset.convert_to_h5 as convert
real, calls = convert.read_frame_folder, []
def reader(*args):
    calls.append(1)
    if len(calls) == 2:  # the first video is in the shard: say so, then hang until killed
        print("one video written", flush=True)
        time.sleep(120)
    return real(*args)
convert.read_frame_folder = reader
sys.exit(convert.main(sys.argv[1:]))
"""


def test_rerun_removes_the_staging_folder_of_a_killed_run(tmp_path, rng, capsys):
    videos = make_frame_data(tmp_path / "frames", rng, counts=(3, 0, 0), num_frames=2)
    out = tmp_path / "out"
    argv = ["--data-dir", str(tmp_path / "frames"), "--out-dir", str(out), "--extension", "png", "--splits", "train",
            "--processes", "1", "--quiet"]
    killed = subprocess.Popen([sys.executable, "-c", KILLABLE_RUN, *argv], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert killed.stdout.readline().strip() == "one video written"
    finally:
        killed.kill()
        killed.wait()
    (leftover,) = out.iterdir()  # what the kill left: a hidden staging folder named after the killed process
    assert leftover.name.startswith(".train.") and f"-pid{killed.pid}." in leftover.name and any(leftover.iterdir())

    assert main(argv) == 0
    err = capsys.readouterr().err
    assert f"note: removed {leftover}" in err and f"process {killed.pid} has ended" in err
    assert sorted(p.name for p in out.iterdir()) == ["train"]
    got, _ = read_split(out / "train")
    assert len(got) == 3
    for a, b in zip(got, videos["train"]):
        np.testing.assert_array_equal(a, b)


def test_staging_folders_of_running_conversions_are_left_alone(tmp_path, rng, capsys):
    make_frame_data(tmp_path / "frames", rng, counts=(1, 1, 0), num_frames=2)
    out = tmp_path / "out"
    out.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    try:
        here = host_tag()
        running = out / f".val.{here}-pid{sleeper.pid}.abc123.tmp"
        stale = out / f".val.{here}-pid{ended.pid}.def456.tmp"
        for folder in (running, stale):
            folder.mkdir()
            (folder / "shard_0001.hdf5").write_bytes(b"partial")
        assert frames_cli(tmp_path / "frames", out, "--splits", "train", "val") == 0
    finally:
        sleeper.kill()
        sleeper.wait()
    err = capsys.readouterr().err
    assert f"note: removed {stale}" in err and f"note: kept {running}" in err
    assert sorted(p.name for p in out.iterdir()) == sorted(["train", "val", running.name])
