"""dataset/acquisition: videos -> PVG frame folders -> train/val/test folders -> HDF5, every bad input, PVG's flag
spellings beside ours, exit statuses, and the staging folders that killed runs leave."""
from __future__ import annotations

import csv
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from dataset.acquisition import convert_video_directory, train_val_test_split
from dataset.convert_to_h5 import main as convert_to_h5
from dataset.h5 import VideoShard, list_shards
from dataset.staging import host_tag
from test_convert_to_h5 import PALETTE, SOURCE_FPS, assert_flat, encode_video, nearest_colour

WIDTH, HEIGHT = 24, 16  # the --target_size of the tests: not square, so width and height cannot be swapped unseen


# Helpers ---------------------------------------------------------------------------------------------------------------
def acquire(video_directory: Path, output_directory: Path, *extra, processes: int = 1) -> int:
    argv = ["--video-directory", video_directory, "--output-directory", output_directory,
            "--target-size", WIDTH, HEIGHT, "--processes", processes, "--quiet", *extra]
    return convert_video_directory.main([str(a) for a in argv])


def split(input_directory: Path, output_directory: Path, *extra) -> int:
    argv = ["--input-directory", input_directory, "--output-directory", output_directory, "--quiet", *extra]
    return train_val_test_split.main([str(a) for a in argv])


def to_h5(data_dir: Path, out_dir: Path, *extra) -> int:
    argv = ["--data-dir", data_dir, "--out-dir", out_dir, "--extension", "png", "--processes", 1, "--quiet", *extra]
    return convert_to_h5([str(a) for a in argv])


def read_png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.mode == "RGB"
        return np.asarray(image)


def png_frames(folder: Path) -> np.ndarray:
    return np.stack([read_png(p) for p in sorted(folder.glob("*.png"))])


def read_csv(path: Path) -> list:
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def tree(folder: Path) -> dict:
    """{relative path: bytes} of every file below folder."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_not_written(out: Path) -> None:
    """No output folder and no hidden temporary beside it."""
    assert not out.exists()
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")] == []


def check_error(capsys, rc: int, *needles: str, status: int = 1) -> str:
    err = capsys.readouterr().err
    assert rc == status, err
    assert "error: " in err and "Traceback" not in err
    for needle in needles:
        assert needle in err, f"{needle!r} not in stderr:\n{err}"
    return err


def check_usage_error(capsys, tool, *args_and_needles) -> str:
    """`tool(*args)` is a bad command line: one `error:` line and exit status 2 (args, then the needles after '|')."""
    cut = args_and_needles.index("|")
    with pytest.raises(SystemExit) as exit_info:
        tool(*args_and_needles[:cut])
    err = check_error(capsys, exit_info.value.code, *args_and_needles[cut + 1:], status=2)
    assert len(err.strip().splitlines()) == 1, err
    return err


def write_sequences(root: Path, count: int, rng, frames: int = 2, size: int = 8) -> dict:
    """root/00000 ... as convert_video_directory writes them, with random frames: {name: [T H W 3]}."""
    sequences = {}
    for i in range(count):
        folder = root / f"{i:05d}"
        folder.mkdir(parents=True)
        video = rng.integers(0, 256, size=(frames, size, size, 3), dtype=np.uint8)
        for t, frame in enumerate(video):
            Image.fromarray(frame).save(folder / f"{t:05d}.png")
        sequences[folder.name] = video
    return sequences


class _CreatesMarkerWhenUnpickled:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


# The source videos: (path below D, first palette colour, number of frames at 20 fps, width, height) -----------------
VIDEOS = [
    ("clip_b.mp4", 0, 20, 32, 32),
    ("Zed.mp4", 20, 10, 32, 32),
    ("sub/c.mp4", 30, 10, 48, 24),
    ("zz.mp4", 40, 8, 32, 32),
]
# Sorted by full path string as PVG sorts: "Z" < "c" < "s" < "z", and sub/c.mp4 before zz.mp4.
ORDER = ["Zed.mp4", "clip_b.mp4", "sub/c.mp4", "zz.mp4"]
# Too deep, another extension, hidden, and the extension in another case (PVG's glob is case-sensitive: taking
# Upper.MP4 would renumber the sequences, and a PVG splits.csv would then pick other videos).
IGNORED = ["sub/deep/too_deep.mp4", "other.webm", "notes.txt", ".hidden.mp4", "Upper.MP4"]


def make_video_directory(root: Path) -> dict:
    """The videos of VIDEOS and IGNORED under root; {source name: (first colour, frames at 20 fps)}."""
    sources = {}
    for name, first, count, width, height in VIDEOS:
        encode_video(root / name, np.arange(first, first + count), width=width, height=height)
        sources[name] = (first, count)
    encode_video(root / "sub" / "deep" / "too_deep.mp4", np.arange(50, 54))
    encode_video(root / "other.webm", np.arange(54, 58))
    encode_video(root / ".hidden.mp4", np.arange(58, 62))
    encode_video(root / "Upper.mp4", np.arange(60, 64)).rename(root / "Upper.MP4")
    (root / "notes.txt").write_text("not a video")
    return sources


# End to end ------------------------------------------------------------------------------------------------------------
def test_videos_to_frames_to_splits_to_hdf5(tmp_path, capsys):
    videos, frames, splits, h5 = (tmp_path / name for name in ("videos", "frames", "splits", "h5"))
    sources = make_video_directory(videos)

    assert acquire(videos, frames, processes=2) == 0  # PVG's default --fps 10
    assert "Upper.MP4" in capsys.readouterr().err  # a warning names the file left out for its extension's case
    assert sorted(p.name for p in frames.iterdir()) == ["00000", "00001", "00002", "00003", "videos.csv"]
    expected_counts = {name: count * 10 // SOURCE_FPS for name, (_, count) in sources.items()}
    assert read_csv(frames / "videos.csv") == [["sequence", "source", "frames"]] + [
        [f"{i:05d}", name, str(expected_counts[name])] for i, name in enumerate(ORDER)
    ]
    for i, name in enumerate(ORDER):
        folder = frames / f"{i:05d}"
        count = expected_counts[name]
        assert sorted(p.name for p in folder.iterdir()) == [f"{t:05d}.png" for t in range(count)]  # no .pkl files
        first = sources[name][0]
        for t in range(count):
            with Image.open(folder / f"{t:05d}.png") as image:
                assert image.size == (WIDTH, HEIGHT)
            frame = read_png(folder / f"{t:05d}.png")
            colour = first + t * SOURCE_FPS // 10  # the source frame shown at time t/10
            assert nearest_colour(frame) == colour, f"{name} frame {t}"
            assert_flat(frame, PALETTE[colour])

    csv_file = tmp_path / "splits.csv"
    csv_file.write_text("sequence,split\n3,train\n0,validation\n2,train\n1,test\n")
    assert split(frames, splits, "--splits-csv", csv_file) == 0
    assert sorted(p.name for p in splits.iterdir()) == ["sequences.csv", "test", "train", "val"]
    placed = {"train": ["00003", "00002"], "val": ["00000"], "test": ["00001"]}  # CSV row order within each split
    for split_name, names in placed.items():
        assert sorted(p.name for p in (splits / split_name).iterdir()) == [f"{k:05d}" for k in range(len(names))]
        for k, name in enumerate(names):
            assert tree(splits / split_name / f"{k:05d}") == tree(frames / name)
    assert read_csv(splits / "sequences.csv") == [
        ["split", "sequence", "source", "video"],
        ["train", "00000", "00003", "zz.mp4"], ["train", "00001", "00002", "sub/c.mp4"],
        ["val", "00000", "00000", "Zed.mp4"], ["test", "00000", "00001", "clip_b.mp4"],
    ]

    assert to_h5(splits, h5) == 0
    from dataset import VideoDataset

    for split_name, names in placed.items():
        ds = VideoDataset(h5 / split_name, HEIGHT, HEIGHT, frames_per_sample=4, random_time=False,
                          random_horizontal_flip=False, output_dtype="uint8")
        assert len(ds) == len(names)
        with VideoShard(list_shards(h5 / split_name)[0]) as shard:
            assert shard.names() == [f"{k:05d}" for k in range(len(names))]
            for k in range(len(names)):
                pngs = png_frames(splits / split_name / f"{k:05d}")
                np.testing.assert_array_equal(shard.read(k, 0, len(pngs)), pngs)  # every frame, pixel for pixel
                np.testing.assert_array_equal(ds.read_clip(k, 0).permute(0, 2, 3, 1).numpy(), pngs[:4])
                left = (WIDTH - HEIGHT) // 2
                np.testing.assert_array_equal(ds[k].permute(0, 2, 3, 1).numpy(), pngs[:4, :, left:left + HEIGHT])


def test_fps_and_output_extension(tmp_path):
    encode_video(tmp_path / "videos" / "a.mp4", np.arange(20))  # 1 s at 20 fps
    assert acquire(tmp_path / "videos", tmp_path / "frames", "--fps", 4, "--output-extension", "jpg") == 0
    names = sorted(p.name for p in (tmp_path / "frames" / "00000").iterdir())
    assert names == [f"{t:05d}.jpg" for t in range(4)]
    for t, name in enumerate(names):
        with Image.open(tmp_path / "frames" / "00000" / name) as image:
            assert image.format == "JPEG" and image.size == (WIDTH, HEIGHT)
            assert nearest_colour(np.asarray(image.convert("RGB"))) == t * 5


# Splitting -------------------------------------------------------------------------------------------------------------
def test_ratio_split_is_deterministic_and_covers_every_sequence_once(tmp_path, rng):
    sequences = write_sequences(tmp_path / "frames", 10, rng)
    (tmp_path / "frames" / "videos.csv").write_text("sequence,source,frames\n")  # a file: not a sequence
    results = {}
    for run, seed in (("a", 3), ("b", 3), ("c", 4), ("d", 5)):
        assert split(tmp_path / "frames", tmp_path / run, "--ratios", 0.6, 0.2, 0.2, "--seed", seed) == 0
        results[run] = read_csv(tmp_path / run / "sequences.csv")[1:]
    assert results["a"] == results["b"]
    assert results["a"] != results["c"] or results["a"] != results["d"]
    for run, rows in results.items():
        assert sorted(source for _, _, source, _ in rows) == sorted(sequences)  # each sequence exactly once
        by_split = {}
        for split_name, sequence, source, _ in rows:
            by_split.setdefault(split_name, []).append((sequence, source))
        assert {name: len(items) for name, items in by_split.items()} == {"train": 6, "val": 2, "test": 2}
        for split_name, items in by_split.items():
            assert [sequence for sequence, _ in items] == [f"{k:05d}" for k in range(len(items))]
            assert [source for _, source in items] == sorted(source for _, source in items)
            assert sorted(p.name for p in (tmp_path / run / split_name).iterdir()) == [s for s, _ in items]
            for sequence, source in items:
                np.testing.assert_array_equal(png_frames(tmp_path / run / split_name / sequence), sequences[source])


@pytest.mark.parametrize("link", ["copy", "symlink", "hardlink"])
def test_link_modes(tmp_path, rng, link):
    write_sequences(tmp_path / "frames", 3, rng)
    assert split(tmp_path / "frames", tmp_path / "splits", "--ratios", 1, 1, 1, "--link", link) == 0
    rows = read_csv(tmp_path / "splits" / "sequences.csv")[1:]
    assert len(rows) == 3
    for split_name, sequence, source, _ in rows:
        folder = tmp_path / "splits" / split_name / sequence
        assert folder.is_dir() and not folder.is_symlink()
        for original in sorted((tmp_path / "frames" / source).iterdir()):
            placed = folder / original.name
            assert placed.read_bytes() == original.read_bytes()
            if link == "symlink":
                assert placed.is_symlink() and placed.resolve() == original.resolve()
            else:
                assert not placed.is_symlink()
                assert os.path.samefile(placed, original) == (link == "hardlink")


def test_pickle_files_are_copied_and_never_unpickled(tmp_path, rng, capsys):
    write_sequences(tmp_path / "frames", 2, rng, frames=3)
    trap = pickle.dumps(_CreatesMarkerWhenUnpickled(tmp_path / "unpickled"))
    pickle.loads(pickle.dumps(_CreatesMarkerWhenUnpickled(tmp_path / "trap_works")))
    assert (tmp_path / "trap_works").exists()  # the trap does fire when unpickled
    for folder in (tmp_path / "frames").iterdir():
        for name in ("actions.pkl", "rewards.pkl", "dones.pkl", "metadata.pkl"):  # PVG's metadata files
            (folder / name).write_bytes(trap)
    csv_file = tmp_path / "splits.csv"
    csv_file.write_text("sequence,split\n0,train\n1,val\n")
    assert split(tmp_path / "frames", tmp_path / "splits", "--splits-csv", csv_file) == 0
    assert (tmp_path / "splits" / "train" / "00000" / "actions.pkl").read_bytes() == trap
    assert to_h5(tmp_path / "splits", tmp_path / "h5", "--splits", "train", "val") == 0
    capsys.readouterr()
    for split_name in ("train", "val"):
        with VideoShard(list_shards(tmp_path / "h5" / split_name)[0]) as shard:
            assert list(shard.lengths) == [3]  # only the png frames
    assert not (tmp_path / "unpickled").exists()


def test_unlisted_sequences_are_reported_and_left_out(tmp_path, rng, capsys):
    write_sequences(tmp_path / "frames", 4, rng)
    csv_file = tmp_path / "splits.csv"
    csv_file.write_text("split,sequence\nval,2\n\ntrain,00000\n")  # any column order, blank lines, zero padding
    assert split(tmp_path / "frames", tmp_path / "splits", "--splits-csv", csv_file) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "00001, 00003" in err and str(csv_file) in err
    assert sorted(p.name for p in (tmp_path / "splits").iterdir()) == ["sequences.csv", "train", "val"]
    assert [row[2] for row in read_csv(tmp_path / "splits" / "sequences.csv")[1:]] == ["00000", "00002"]


# Bad input -------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("processes", [1, 2])
def test_undecodable_video_is_named_and_nothing_is_written(tmp_path, capsys, processes):
    videos = tmp_path / "videos"
    encode_video(videos / "a.mp4", np.arange(4))
    (videos / "sub").mkdir()
    (videos / "sub" / "broken.mp4").write_bytes(b"\x00not a video" * 64)
    encode_video(videos / "z.mp4", np.arange(4))
    out = tmp_path / "frames"
    check_error(capsys, acquire(videos, out, processes=processes), str(videos / "sub" / "broken.mp4"), "--skip-bad")
    assert_not_written(out)

    out.mkdir()
    (out / "keep.txt").write_text("previous output")
    check_error(capsys, acquire(videos, out, "--force", processes=processes), "broken.mp4")
    assert tree(out) == {"keep.txt": b"previous output"}  # an existing output is never damaged
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("processes", [1, 2])
def test_skip_bad_numbers_the_converted_videos_without_gaps(tmp_path, capsys, processes):
    videos = tmp_path / "videos"
    encode_video(videos / "a.mp4", np.arange(0, 4))
    (videos / "b_broken.mp4").write_bytes(b"garbage" * 100)
    encode_video(videos / "c.mp4", np.arange(10, 14))
    out = tmp_path / "frames"
    assert acquire(videos, out, "--skip-bad", processes=processes) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and str(videos / "b_broken.mp4") in err and "1 video(s) skipped: b_broken.mp4" in err
    assert sorted(p.name for p in out.iterdir()) == ["00000", "00001", "videos.csv"]
    assert read_csv(out / "videos.csv")[1:] == [["00000", "a.mp4", "2"], ["00001", "c.mp4", "2"]]
    assert nearest_colour(read_png(out / "00001" / "00000.png")) == 10
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("failure", [KeyboardInterrupt, MemoryError])
def test_interrupted_or_crashed_runs_leave_the_old_output(tmp_path, rng, monkeypatch, capsys, failure):
    for name in ("a", "b", "c"):
        encode_video(tmp_path / "videos" / f"{name}.mp4", np.arange(4))
    out = tmp_path / "frames"
    out.mkdir()
    (out / "keep.txt").write_text("previous output")
    real, calls = convert_video_directory.iter_video, []

    def iter_video(*args, **kwargs):
        calls.append(args[0])
        for t, frame in enumerate(real(*args, **kwargs)):
            if len(calls) == 2 and t == 1:
                raise failure("simulated")
            yield frame

    monkeypatch.setattr(convert_video_directory, "iter_video", iter_video)
    if failure is KeyboardInterrupt:
        assert acquire(tmp_path / "videos", out, "--force") == 130
    else:
        with pytest.raises(MemoryError):
            acquire(tmp_path / "videos", out, "--force")
    assert tree(out) == {"keep.txt": b"previous output"}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    monkeypatch.undo()
    write_sequences(tmp_path / "sequences", 3, rng)
    real_place, placed = train_val_test_split.place_tree, []

    def place_tree(*args):
        placed.append(args)
        if len(placed) == 2:
            raise failure("simulated")
        return real_place(*args)

    monkeypatch.setattr(train_val_test_split, "place_tree", place_tree)
    if failure is KeyboardInterrupt:
        assert split(tmp_path / "sequences", out, "--ratios", 1, 1, 1, "--force") == 130
    else:
        with pytest.raises(MemoryError):
            split(tmp_path / "sequences", out, "--ratios", 1, 1, 1, "--force")
    assert tree(out) == {"keep.txt": b"previous output"}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_existing_outputs_need_force(tmp_path, rng, capsys):
    encode_video(tmp_path / "videos" / "a.mp4", np.arange(4))
    out = tmp_path / "frames"
    out.mkdir()
    (out / "old.txt").write_text("old")
    check_error(capsys, acquire(tmp_path / "videos", out), str(out), "--force")
    assert tree(out) == {"old.txt": b"old"}
    assert acquire(tmp_path / "videos", out, "--force") == 0
    assert sorted(p.name for p in out.iterdir()) == ["00000", "videos.csv"]

    splits = tmp_path / "splits"
    splits.mkdir()
    (splits / "old.txt").write_text("old")
    check_error(capsys, split(out, splits, "--ratios", 1, 0, 0), str(splits), "--force")
    assert tree(splits) == {"old.txt": b"old"}
    assert split(out, splits, "--ratios", 1, 0, 0, "--force") == 0
    assert sorted(p.name for p in splits.iterdir()) == ["sequences.csv", "train"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    check_error(capsys, split(out, out / "inside", "--ratios", 1, 0, 0), str(out / "inside"))
    check_error(capsys, acquire(tmp_path / "videos", tmp_path, "--force"), "--video-directory")
    assert (tmp_path / "videos" / "a.mp4").is_file()


@pytest.mark.parametrize("content, needles", [
    ("sequence,split\n0,train\n1,training\n", ["line 3", "'training'", "validation"]),
    ("0,train\n1,val\n", ["line 1", "header", "sequence,split"]),
    ("sequence,split\n0,train\n7,test\n", ["line 3", "sequence 7", "00007"]),
    ("sequence,split\n0,train\n1,val\n0,test\n", ["line 4", "sequence 0", "line 2"]),
    ("sequence,split\nseq1,train\n", ["line 2", "'seq1'"]),
    ("sequence,split\n", ["no sequence"]),
])
def test_bad_splits_csv(tmp_path, rng, capsys, content, needles):
    write_sequences(tmp_path / "frames", 2, rng)
    csv_file = tmp_path / "splits.csv"
    csv_file.write_text(content)
    rc = split(tmp_path / "frames", tmp_path / "splits", "--splits-csv", csv_file)
    check_error(capsys, rc, str(csv_file), *needles)
    assert_not_written(tmp_path / "splits")


def test_bad_arguments(tmp_path, capsys):
    out = tmp_path / "frames"
    missing = tmp_path / "missing"
    check_error(capsys, acquire(missing, out), str(missing))
    (tmp_path / "file.mp4").write_bytes(b"x")
    check_error(capsys, acquire(tmp_path / "file.mp4", out), "not a folder")

    videos = tmp_path / "videos"
    encode_video(videos / "a.webm", np.arange(2))
    encode_video(videos / "b.webm", np.arange(2))
    encode_video(videos / "x" / "y" / "deep.mp4", np.arange(2))
    err = check_error(capsys, acquire(videos, out), ".mp4", "2 .webm", "1 .mp4 file(s) lie deeper", "--video-extension")
    assert len(err.strip().splitlines()) == 1
    assert acquire(videos, out, "--video-extension", "webm") == 0
    capsys.readouterr()
    # Values no input could make work are a bad command line: exit status 2, before anything is read or written.
    for argv in (["--target-size", 0, 8], ["--fps", 0], ["--processes", 0], ["--output-extension", "mp3"]):
        check_usage_error(capsys, acquire, missing, tmp_path / "other", *argv, "|", argv[0], "--help")
    assert_not_written(tmp_path / "other")

    check_error(capsys, split(missing, tmp_path / "splits", "--ratios", 1, 1, 1), str(missing))
    check_error(capsys, split(tmp_path / "frames", tmp_path / "splits", "--ratios", 1, 1, 1), "--ratios", "'train'")
    check_usage_error(capsys, split, out, tmp_path / "splits", "--ratios", 1, 0, 0, "--splits-csv", "x.csv", "|",
                      "--ratios", "--splits-csv")
    check_usage_error(capsys, split, out, tmp_path / "splits", "--ratios", 1, -1, 0, "|", "--ratios", "non-negative")
    check_usage_error(capsys, split, out, tmp_path / "splits", "--splits-csv", "x.csv", "--seed", 1, "|", "--seed")
    check_usage_error(capsys, split, out, tmp_path / "splits", "--splits-csv", "", "|", "--splits-csv")
    check_usage_error(capsys, acquire, videos, out, "--no-such-flag", "|", "--no-such-flag")
    assert_not_written(tmp_path / "splits")


# Command line ----------------------------------------------------------------------------------------------------------
def run_module(module: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_help_shows_hyphenated_and_pvg_flags():
    result = run_module("dataset.acquisition.convert_video_directory", "--help")
    assert result.returncode == 0, result.stderr
    for flag in ("--video-directory", "--video_directory", "--output-directory", "--output_directory", "--target-size",
                 "--target_size", "--fps", "--processes", "--video-extension", "--video_extension",
                 "--output-extension", "--output_extension", "--skip-bad", "--skip_bad", "--force"):
        assert flag in result.stdout
    result = run_module("dataset.acquisition.train_val_test_split", "--help")
    assert result.returncode == 0, result.stderr
    for flag in ("--input-directory", "--input_directory", "--output-directory", "--output_directory", "--splits-csv",
                 "--splits_csv", "--ratios", "--seed", "--link"):
        assert flag in result.stdout


@pytest.mark.parametrize("tool, hyphenated, pvg, expected", [
    (convert_video_directory, ["--video-directory", "v", "--output-directory", "o", "--target-size", "4", "3",
                               "--video-extension", "avi", "--output-extension", "jpg", "--skip-bad"],
     ["--video_directory", "v", "--output_directory", "o", "--target_size", "4", "3",
      "--video_extension", "avi", "--output_extension", "jpg", "--skip_bad"],
     {"video_directory": "v", "output_directory": "o", "target_size": [4, 3], "video_extension": "avi",
      "output_extension": "jpg", "skip_bad": True}),
    (train_val_test_split, ["--input-directory", "f", "--output-directory", "s", "--splits-csv", "x.csv"],
     ["--input_directory", "f", "--output_directory", "s", "--splits_csv", "x.csv"],
     {"input_directory": "f", "output_directory": "s", "splits_csv": "x.csv", "ratios": None}),
])
def test_pvg_underscore_flags_mean_the_same(tool, hyphenated, pvg, expected):
    parser = tool.build_parser()
    parsed = vars(parser.parse_args(pvg))
    assert {key: parsed[key] for key in expected} == expected
    assert vars(parser.parse_args(hyphenated)) == parsed


def test_module_exit_status_and_parallel_run(tmp_path):
    videos = tmp_path / "videos"
    encode_video(videos / "a.mp4", np.arange(4))
    (videos / "b.mp4").write_bytes(b"garbage" * 100)
    argv = ["--video_directory", videos, "--output_directory", tmp_path / "frames", "--target_size", 8, 8,
            "--processes", 2]
    failed = run_module("dataset.acquisition.convert_video_directory", *argv)
    assert failed.returncode == 1 and str(videos / "b.mp4") in failed.stderr and "Traceback" not in failed.stderr
    assert_not_written(tmp_path / "frames")
    skipped = run_module("dataset.acquisition.convert_video_directory", *argv, "--skip_bad")
    assert skipped.returncode == 0, skipped.stderr
    assert read_csv(tmp_path / "frames" / "videos.csv")[1:] == [["00000", "a.mp4", "2"]]


def test_staging_folders_of_killed_runs_are_removed(tmp_path, rng, capsys):
    encode_video(tmp_path / "videos" / "a.mp4", np.arange(4))
    write_sequences(tmp_path / "sequences", 2, rng)
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        leftovers = {}
        for target in ("frames", "splits"):
            for owner, pid in (("ended", ended.pid), ("live", live.pid)):
                folder = tmp_path / f".{target}.{host_tag()}-pid{pid}.x{owner}.tmp"
                (folder / "00000").mkdir(parents=True)
                leftovers[target, owner] = folder
        assert acquire(tmp_path / "videos", tmp_path / "frames") == 0
        assert split(tmp_path / "sequences", tmp_path / "splits", "--ratios", 1, 0, 0) == 0
    finally:
        live.kill()
        live.wait()
    err = capsys.readouterr().err
    for target in ("frames", "splits"):
        assert f"note: removed {leftovers[target, 'ended']}" in err and not leftovers[target, "ended"].exists()
        assert f"note: kept {leftovers[target, 'live']}" in err and leftovers[target, "live"].is_dir()
    assert read_csv(tmp_path / "frames" / "videos.csv")[1:] == [["00000", "a.mp4", "2"]]
    assert sorted(p.name for p in (tmp_path / "splits" / "train").iterdir()) == ["00000", "00001"]
