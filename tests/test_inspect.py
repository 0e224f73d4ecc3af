"""dataset.inspect: reports layouts and counts, flags problems with exit code 1."""
import json

import h5py
import numpy as np
import pytest

from dataset import inspect as inspect_h5
from dataset.h5 import write_videos
from tests.conftest import random_video, write_original_layout


@pytest.fixture
def root(tmp_path, rng):
    lengths = {"train": [6, 9, 7], "val": [5], "test": [8, 4]}
    for split, split_lengths in lengths.items():
        write_videos(tmp_path / split, [random_video(rng, n, 8, 12) for n in split_lengths])
    return tmp_path, lengths


def test_reports_every_split(root, capsys):
    path, lengths = root
    assert inspect_h5.main([str(path), "--json", "--deep"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"train", "val", "test"}
    for split, split_lengths in lengths.items():
        (shard,) = report[split]
        assert shard["layout"] == "chunked" and shard["num_videos"] == len(split_lengths)
        assert shard["frames"] == {"total": sum(split_lengths), "min": min(split_lengths),
                                   "mean": round(float(np.mean(split_lengths)), 1), "max": max(split_lengths)}
        assert shard["frame_shapes"] == {"8x12x3": len(split_lengths)}
        assert shard["problems"] == []


def test_original_layout_and_epic_variant(tmp_path, rng):
    write_original_layout(tmp_path / "plain" / "shard_0001.hdf5", [random_video(rng, 5, 8, 8)])
    write_original_layout(tmp_path / "epic" / "shard_0001.hdf5", [random_video(rng, 5, 8, 8)], frames_key="videos")
    plain = inspect_h5.inspect_path(tmp_path / "plain")["plain"][0]
    epic = inspect_h5.inspect_path(tmp_path / "epic")["epic"][0]
    assert plain["layout"] == epic["layout"] == "original"
    assert plain["frames_key"] is None and epic["frames_key"] == "videos"
    assert plain["compression"] == ["lzf"] and plain["problems"] == epic["problems"] == []


def test_flags_problems(tmp_path, rng, capsys):
    write_videos(tmp_path / "train", [random_video(rng, 5, 8, 8)])
    (tmp_path / "train" / "shard_0002.hdf5").write_bytes(b"not an hdf5 file")
    broken = write_original_layout(tmp_path / "val" / "shard_0001.hdf5", [random_video(rng, 5, 8, 8)])
    with h5py.File(broken, "a") as f:  # /len says 5 frames, only 4 stored
        del f["0"]["4"]
    # no test split at all
    assert inspect_h5.main([str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "shard_0002.hdf5: cannot open as HDF5" in out
    assert "4 frame datasets, /len says 5" in out
    assert "missing split folder" in out and "test" in out


def test_missing_path_is_an_error(tmp_path, capsys):
    assert inspect_h5.main([str(tmp_path / "nope")]) == 1
    assert "no such file or folder" in capsys.readouterr().err
