"""dataset/synthetic.py's CLEVRER-like world and dataset/make_synthetic.py: determinism, ground truth against the
pixels, walls and elastic collisions, the HDF5 splits with ground truth, and bad arguments."""
from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import ROOT
from dataset.h5 import VideoShard, list_shards
from dataset.make_synthetic import main
from dataset.synthetic import (
    COLOUR_NAMES,
    COLOUR_RGB,
    GROUND_TRUTH_ARRAYS,
    PLAIN_BACKGROUND,
    SHAPES,
    WorldConfig,
    WorldError,
    WorldState,
    elastic_collision,
    generate_world,
    pixel_grid,
    read_ground_truth,
    render_video,
    shape_mask,
    simulate,
    write_ground_truth,
)
from dataset.video_dataset import VideoDataset

SPLITS = ("train", "val", "test")
SMALL = WorldConfig(num_frames=10, size=32, min_objects=2, max_objects=4)
BUSY = WorldConfig(num_frames=24, size=32, min_objects=6, max_objects=8, max_speed=0.1)


def assert_same_truth(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], np.ndarray):
            assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
            assert a[key].tobytes() == b[key].tobytes(), key
        else:
            assert a[key] == b[key], key


def kinetic_energy(mass: np.ndarray, velocities: np.ndarray) -> np.ndarray:
    return 0.5 * (mass * (velocities.astype(np.float64) ** 2).sum(-1)).sum(-1)


def two_discs(layers=(0, 0), dy: float = 0.0, masses=(1.0, 3.0)) -> WorldState:
    """Two circles approaching each other along x in a 64x64 image (the right one offset by dy)."""
    return WorldState(
        shape=np.array([0, 0]), colour=np.array([0, 1]), size_class=np.array([1, 1]), radius=np.array([4.0, 5.0]),
        mass=np.array(masses), layer=np.array(layers),
        position=np.array([[20.0, 32.0], [44.0, 32.0 + dy]]), velocity=np.array([[1.5, 0.2], [-0.5, 0.0]]),
    )


# The small generator keeps its contract ---------------------------------------------------------------------------
def test_render_video_keeps_its_contract():
    for seed in range(3):
        video = render_video(12, 32, seed=seed)
        assert video.dtype == np.uint8 and video.shape == (12, 32, 32, 3)
        assert np.array_equal(video, render_video(12, 32, seed=seed))
    assert not np.array_equal(render_video(12, 32, seed=0), render_video(12, 32, seed=1))


# Determinism ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("background,occlusion", [("plain", False), ("textured", True)])
def test_same_seed_same_video_and_ground_truth(background, occlusion):
    config = WorldConfig(num_frames=12, size=32, max_objects=5, background=background, occlusion=occlusion)
    frames, truth = generate_world(config, seed=5)
    again, truth_again = generate_world(config, seed=5)
    assert frames.dtype == np.uint8 and frames.shape == (12, 32, 32, 3)
    assert frames.tobytes() == again.tobytes()
    assert_same_truth(truth, truth_again)
    for other_seed in (6, (5, 1), (5, 0, 1)):
        other, other_truth = generate_world(config, seed=other_seed)
        assert other.tobytes() != frames.tobytes(), other_seed
        assert other_truth["centers"].tobytes() != truth["centers"].tobytes(), other_seed


def test_textured_background_is_soft_and_seeded():
    config = WorldConfig(num_frames=2, size=32, min_objects=1, max_objects=1, background="textured")
    a = generate_world(config, 1)[0][0].astype(int)
    b = generate_world(config, 2)[0][0].astype(int)
    plain = generate_world(WorldConfig(num_frames=2, size=32, min_objects=1, max_objects=1), 1)[0][0]
    assert (plain == PLAIN_BACKGROUND).all(-1).mean() > 0.8
    corner_a, corner_b = a[:6, :6].reshape(-1, 3), b[:6, :6].reshape(-1, 3)  # objects rarely cover a whole corner
    assert len(np.unique(a.reshape(-1, 3), axis=0)) > 20  # textured, not flat
    assert not np.array_equal(a, b)
    assert np.abs(np.diff(a, axis=1)).mean() < 12 and corner_a.std() < 25 and corner_b.std() < 25  # soft


# Ground truth against the pixels ---------------------------------------------------------------------------------
@pytest.mark.parametrize("background,occlusion", [("plain", False), ("textured", False), ("plain", True),
                                                  ("textured", True)])
def test_ground_truth_matches_pixels(background, occlusion):
    config = WorldConfig(num_frames=16, size=32, min_objects=4, max_objects=6, max_speed=0.08,
                         background=background, occlusion=occlusion)
    checked = covered = 0
    for seed in range(6):
        frames, truth = generate_world(config, seed)
        count = truth["num_objects"]
        assert config.min_objects <= count <= config.max_objects
        assert truth["centers"].shape == (config.num_frames, count, 2)
        assert truth["visible_pixels"].shape == (config.num_frames, count)
        assert truth["radius"].shape == truth["shape"].shape == truth["colour"].shape == (count,)
        assert list(truth["ids"]) == list(range(count))
        assert truth["shape_names"] == list(SHAPES) and truth["colour_names"] == list(COLOUR_NAMES)
        assert sorted(truth["depth"]) == list(range(count))
        if occlusion:
            assert set(truth["layer"]) == {0, 1}
        else:
            assert set(truth["layer"]) == {0}
        grid_y, grid_x = pixel_grid(config.size)
        for t, k in itertools.product(range(config.num_frames), range(count)):
            x, y = (float(v) for v in truth["centers"][t, k])
            row, col = int(np.floor(y)), int(np.floor(x))
            over = [j for j in range(count) if truth["depth"][j] > truth["depth"][k] and shape_mask(
                SHAPES[truth["shape"][j]], float(truth["radius"][j]), *truth["centers"][t, j].astype(float),
                grid_y[row:row + 1, col:col + 1], grid_x[row:row + 1, col:col + 1])[0, 0]]
            if over:
                covered += 1
                continue
            assert tuple(frames[t, row, col]) == tuple(COLOUR_RGB[truth["colour"][k]]), (seed, t, k)
            assert truth["visible_pixels"][t, k] > 0
            checked += 1
        # Every pixel of an object's colour belongs to a visible part of an object of that colour, and vice versa.
        for t in range(config.num_frames):
            for c in set(truth["colour"].tolist()):
                pixels = int((frames[t] == COLOUR_RGB[c]).all(-1).sum())
                assert pixels == truth["visible_pixels"][t, truth["colour"] == c].sum(), (seed, t, c)
        if background == "plain":
            foreground = (frames != np.asarray(PLAIN_BACKGROUND, np.uint8)).any(-1).sum(axis=(1, 2))
            assert np.array_equal(foreground, truth["visible_pixels"].sum(1))
    assert checked > 300
    if occlusion:
        assert covered > 0  # objects on the upper layer do pass over the others


# Physics ---------------------------------------------------------------------------------------------------------
def test_walls_keep_centres_inside_and_bounce():
    bounces = 0
    for seed in range(20):
        config = WorldConfig(num_frames=40, size=24, min_objects=1, max_objects=4, min_speed=0.1, max_speed=0.25)
        _, truth = generate_world(config, seed)
        centers, radius = truth["centers"], truth["radius"][None, :, None]
        assert (centers >= radius - 1e-4).all() and (centers <= config.size - radius + 1e-4).all(), seed
        bounces += int((np.diff(np.sign(truth["velocities"]), axis=0) != 0).sum())
    assert bounces > 100


def test_elastic_collision_closed_form():
    m1, m2 = 1.0, 3.0
    v1, v2 = np.array([2.0, 0.5]), np.array([-1.0, 0.25])
    normal = np.array([1.0, 1.0])
    w1, w2 = elastic_collision(v1, v2, m1, m2, normal)
    np.testing.assert_allclose(m1 * w1 + m2 * w2, m1 * v1 + m2 * v2, atol=1e-12)
    np.testing.assert_allclose(m1 * w1 @ w1 + m2 * w2 @ w2, m1 * v1 @ v1 + m2 * v2 @ v2, atol=1e-12)
    n = normal / np.linalg.norm(normal)
    tangent = np.array([-n[1], n[0]])
    np.testing.assert_allclose([w1 @ tangent, w2 @ tangent], [v1 @ tangent, v2 @ tangent], atol=1e-12)
    # The 1-D textbook formula along the normal.
    u1, u2 = v1 @ n, v2 @ n
    np.testing.assert_allclose(w1 @ n, ((m1 - m2) * u1 + 2 * m2 * u2) / (m1 + m2), atol=1e-12)
    np.testing.assert_allclose(w2 @ n, ((m2 - m1) * u2 + 2 * m1 * u1) / (m1 + m2), atol=1e-12)
    # Equal masses head-on exchange their velocities.
    w1, w2 = elastic_collision(np.array([1.0, 0.0]), np.array([-2.0, 0.0]), 2.0, 2.0, np.array([1.0, 0.0]))
    np.testing.assert_allclose(w1, [-2.0, 0.0])
    np.testing.assert_allclose(w2, [1.0, 0.0])


@pytest.mark.parametrize("dy", [0.0, 4.0])
def test_two_discs_collide_conserving_momentum_and_energy(dy):
    state = two_discs(dy=dy)
    motion = simulate(state, size=64, num_frames=12)  # they meet around frame 8, before any wall
    assert [tuple(e) for e in motion["collisions"]] and all(tuple(e[1:]) == (0, 1) for e in motion["collisions"])
    assert len(motion["collisions"]) == 1
    first, last = motion["velocities"][0], motion["velocities"][-1]
    assert not np.allclose(first, last)  # they did bounce
    np.testing.assert_allclose(state.mass @ first, state.mass @ last, atol=1e-9)
    np.testing.assert_allclose(kinetic_energy(state.mass, first), kinetic_energy(state.mass, last), rtol=1e-12)
    distance = np.hypot(*(motion["centers"][:, 0] - motion["centers"][:, 1]).T)
    assert distance.min() > state.radius.sum() - 0.5  # no passing through
    assert np.array_equal(state.position, two_discs(dy=dy).position)  # the input state is not changed


def test_discs_on_different_layers_pass_over_each_other():
    state = two_discs(layers=(0, 1))
    motion = simulate(state, size=64, num_frames=12)
    assert len(motion["collisions"]) == 0
    np.testing.assert_allclose(motion["velocities"][-1], state.velocity)
    distance = np.hypot(*(motion["centers"][:, 0] - motion["centers"][:, 1]).T)
    assert distance.min() < state.radius.sum() - 5  # deep overlap: one passes over the other


@pytest.mark.parametrize("mass", ["area", "equal"])
def test_busy_worlds_conserve_energy_and_do_not_overlap(mass):
    collisions = 0
    for seed in range(4):
        config = WorldConfig(**{**BUSY.__dict__, "mass": mass})
        _, truth = generate_world(config, seed)
        collisions += len(truth["collisions"])
        energy = kinetic_energy(truth["mass"].astype(np.float64), truth["velocities"])
        np.testing.assert_allclose(energy, energy[0], rtol=1e-5)
        if mass == "equal":
            assert (truth["mass"] == 1).all()
        else:
            area = {"circle": np.pi, "square": 4.0, "triangle": 2.0}
            expected = [area[SHAPES[s]] * r * r for s, r in zip(truth["shape"], truth["radius"].astype(np.float64))]
            np.testing.assert_allclose(truth["mass"], expected, rtol=1e-6)
        centers, radius = truth["centers"].astype(np.float64), truth["radius"]
        for i, j in itertools.combinations(range(truth["num_objects"]), 2):
            gap = np.hypot(*(centers[:, i] - centers[:, j]).T) - radius[i] - radius[j]
            assert gap.min() > -0.5, (seed, i, j)
    assert collisions > 10


def test_bad_world_settings_are_named():
    with pytest.raises(WorldError, match="min_objects .* > max_objects"):
        WorldConfig(min_objects=4, max_objects=2).validate()
    with pytest.raises(WorldError, match="size must be >= 16"):
        WorldConfig(size=8).validate()
    with pytest.raises(WorldError, match="does not fit"):
        WorldConfig(size=16, max_objects=9).validate()
    with pytest.raises(WorldError, match="background"):
        WorldConfig(background="stripes").validate()
    with pytest.raises(WorldError):
        generate_world(WorldConfig(min_speed=0.1, max_speed=0.05), 0)


# Ground truth in the shards, and the CLI -----------------------------------------------------------------------
def make(out_dir: Path, *extra) -> int:
    return main(["--out_dir", str(out_dir), "--train", "3", "--val", "2", "--test", "2", "--frames", "6",
                 "--size", "24", "--max_objects", "3", "--quiet", *map(str, extra)])


def test_cli_writes_three_readable_splits_with_ground_truth(tmp_path):
    out = tmp_path / "syn"
    assert make(out, "--seed", "4", "--background", "textured", "--occlusion") == 0
    firsts = []
    for split_index, (split, count) in enumerate(zip(SPLITS, (3, 2, 2))):
        shards = list_shards(out / split)
        assert [p.name for p in shards] == ["shard_0001.hdf5"]
        manifest = json.loads((out / split / "manifest.json").read_text())
        assert manifest["tool"] == "dataset/make_synthetic.py" and manifest["split"] == split
        assert manifest["layout"] == "chunked" and manifest["num_videos"] == count
        assert manifest["shards"] == ["shard_0001.hdf5"] and manifest["skipped"] == []
        assert manifest["settings"]["seed"] == 4 and manifest["settings"]["occlusion"] is True
        config = WorldConfig(**{k: manifest["settings"][k] for k in WorldConfig.__dataclass_fields__})
        with VideoShard(shards[0]) as shard:
            assert list(shard.lengths) == [6] * count
            assert shard.names() == [f"synthetic_{split}_{i:06d}" for i in range(count)]
            for v in range(count):
                truth = read_ground_truth(shards[0], v)
                assert truth["num_frames"] == shard.lengths[v] == len(truth["centers"])
                assert truth["centers"].shape[1] == truth["num_objects"] == len(truth["radius"])
                assert 2 <= truth["num_objects"] <= 3 and truth["size"] == 24 and truth["occlusion"]
                frames, expected = generate_world(config, (4, split_index, v))  # reproducible from the manifest
                assert np.array_equal(shard.read(v, 0, 6), frames)
                assert_same_truth(truth, expected)
            firsts.append(shard.read(0, 0, 6))
        dataset = VideoDataset(out / split, input_size=24, crop_size=24, frames_per_sample=4, random_horizontal_flip=False)
        assert len(dataset) == count
        clip = dataset[0]
        clip = clip[0] if isinstance(clip, (tuple, list)) else clip
        assert tuple(clip.shape) == (4, 3, 24, 24)
    assert not np.array_equal(firsts[0], firsts[1]) and not np.array_equal(firsts[1], firsts[2])  # splits differ
    assert sorted(p.name for p in out.iterdir()) == sorted(SPLITS)  # no temporary folders left
    inspect = subprocess.run([sys.executable, "-m", "dataset.inspect", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert inspect.returncode == 0, inspect.stdout + inspect.stderr
    assert "no problems found" in inspect.stderr


def test_cli_as_a_module_and_sharding(tmp_path):
    out = tmp_path / "syn"
    command = [sys.executable, "-m", "dataset.make_synthetic", "--out_dir", str(out), "--train", "5", "--val", "0",
               "--test", "0", "--frames", "4", "--size", "16", "--max_objects", "2", "--num_per_shard", "2", "--quiet"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["train"]  # empty splits are not written
    shards = list_shards(out / "train")
    assert [p.name for p in shards] == ["shard_0001.hdf5", "shard_0002.hdf5", "shard_0003.hdf5"]
    config = WorldConfig(num_frames=4, size=16, max_objects=2)
    for n in range(5):
        shard, v = shards[n // 2], n % 2
        frames, expected = generate_world(config, (0, 0, n))
        with h5py.File(shard) as f:
            assert np.array_equal(f["videos"][str(v)][()], frames)
        assert_same_truth(read_ground_truth(shard, v), expected)


def test_existing_output_needs_force(tmp_path, capsys):
    out = tmp_path / "syn"
    assert make(out) == 0
    before = {p: p.read_bytes() for p in sorted(out.rglob("*.hdf5"))}
    assert make(out, "--seed", "9") == 1
    assert "use --force" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in sorted(out.rglob("*.hdf5"))} == before  # untouched
    assert make(out, "--seed", "9", "--force") == 0
    after = {p: p.read_bytes() for p in sorted(out.rglob("*.hdf5"))}
    assert after.keys() == before.keys() and all(after[p] != before[p] for p in after)
    assert sorted(p.name for p in out.iterdir()) == sorted(SPLITS)


@pytest.mark.parametrize("args,message", [
    (["--min_objects", "4", "--max_objects", "2"], "min_objects (4) > max_objects (2)"),
    (["--size", "8"], "size must be >= 16"),
    (["--size", "16", "--max_objects", "9"], "does not fit"),
    (["--min_speed", "0.2", "--max_speed", "0.1"], "min_speed <= max_speed"),
    (["--train", "-1"], "video counts"),
    (["--train", "0", "--val", "0", "--test", "0"], "video counts"),
    (["--frames", "0"], "frames must be >= 1"),
    (["--background", "stripes"], "invalid choice"),
])
def test_bad_arguments_exit_with_a_clear_error(tmp_path, capsys, args, message):
    out = tmp_path / "syn"
    with pytest.raises(SystemExit) as exit_info:
        main(["--out_dir", str(out), "--quiet", *args])
    assert exit_info.value.code != 0
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_ground_truth_io_errors(tmp_path):
    frames, truth = generate_world(SMALL, 0)
    path = tmp_path / "shard.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("videos/0", data=frames[:5])
    with pytest.raises(KeyError, match="no ground truth"):
        read_ground_truth(path, 0)
    with pytest.raises(ValueError, match="frames"):
        write_ground_truth(path, 0, truth)  # 5 frames stored, 10 in the ground truth
    with pytest.raises(KeyError, match="videos/1"):
        write_ground_truth(path, 1, truth)
    with h5py.File(path, "w") as f:
        f.create_dataset("videos/0", data=frames)
    write_ground_truth(path, 0, truth)
    assert_same_truth(read_ground_truth(path, 0), truth)
    with pytest.raises(KeyError, match="no ground truth for video 1"):
        read_ground_truth(path, 1)
    with pytest.raises(ValueError, match="already exists"):
        write_ground_truth(path, 0, truth)
    assert set(GROUND_TRUTH_ARRAYS) <= set(h5py.File(path)["ground_truth/0"])
