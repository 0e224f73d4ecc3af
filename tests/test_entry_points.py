"""Entry points: train.py --dry-run, the data-pipeline demo, and the README/CI test command."""
import subprocess
import sys

import numpy as np
import pytest

from dataset.h5 import write_videos
from dataset.synthetic import render_video
from tests.conftest import ROOT


def run(*args, cwd=ROOT):
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture
def data_root(tmp_path):
    for split, n in (("train", 3), ("val", 2)):
        write_videos(tmp_path / split, [render_video(20, 32, seed=i) for i in range(n)])
    return tmp_path


def test_train_dry_run_loads_config_and_data(data_root):
    result = run("train.py", "--config", "configs/clevrer.yaml", "--run-name", "t", "--dry-run",
                 f"data.data_root={data_root}", "data.input_size=32", "data.crop_size=32", "data.skip_frames=0",
                 "training.batching.batch_size=2")
    assert result.returncode == 0, result.stderr
    assert "[train] 3 videos" in result.stdout and "batch (2, 16, 3, 32, 32)" in result.stdout
    assert "[val] 2 videos" in result.stdout


def test_train_reports_bad_override_and_missing_data(data_root, tmp_path):
    bad_key = run("train.py", "--config", "configs/clevrer.yaml", "--run-name", "t", "--dry-run", "data.data_rot=x")
    assert bad_key.returncode == 1 and "data.data_rot" in bad_key.stderr and "data.data_root" in bad_key.stderr
    missing = run("train.py", "--config", "configs/clevrer.yaml", "--run-name", "t", "--dry-run",
                  f"data.data_root={tmp_path / 'none'}")
    assert missing.returncode == 1 and str(tmp_path / "none" / "train") in missing.stderr


def test_train_cli_trains_refuses_to_overwrite_and_resumes(tmp_path):
    for split, n in (("train", 3), ("val", 1)):
        write_videos(tmp_path / "data" / split, [render_video(10, 32, seed=i) for i in range(n)])
    command = ["train.py", "--config", "tests/configs/tiny_train.yaml", "--run-name", "cli",
               f"data.data_root={tmp_path / 'data'}", f"+training.runs_dir={tmp_path / 'runs'}"]
    first = run(*command, "--max-steps", "2")
    assert first.returncode == 0, first.stderr
    again = run(*command)
    assert again.returncode == 1 and "--resume-step -1" in again.stderr
    resumed = run(*command, "--resume-step", "-1")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stderr and (tmp_path / "runs" / "tiny_run-cli" / "checkpoints" / "final_step_8.pth").is_file()


@pytest.mark.slow
def test_data_pipeline_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    first = run("scripts/data_pipeline_demo.py", "--out", out)
    assert first.returncode == 0, first.stdout + first.stderr
    from PIL import Image

    with Image.open(out / "batch.png") as sheet:  # 4 clips x 16 frames of 64x64, padding 2
        assert sheet.size == (16 * 66 + 2, 4 * 66 + 2)
    with Image.open(out / "batch_clip0.gif") as gif:
        assert gif.n_frames == 16
    for split in ("train", "val", "test"):
        assert (out / "h5" / split / "shard_0001.hdf5").is_file()
    second = run("scripts/data_pipeline_demo.py", "--out", out)  # finished stages are reused
    assert second.returncode == 0 and "reusing existing frames" in second.stdout and "reusing existing shards" in second.stdout


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in quick_start.strip().splitlines()]
    assert len(commands) == 2, "README's quick start must give exactly two commands"
    test_command = commands[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_command in ci.splitlines()


def test_synthetic_videos_are_deterministic_and_move():
    a, b = render_video(12, 32, num_objects=2, seed=7), render_video(12, 32, num_objects=2, seed=7)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, render_video(12, 32, num_objects=2, seed=8))
    assert a.dtype == np.uint8 and a.shape == (12, 32, 32, 3)
    assert any(not np.array_equal(a[0], a[t]) for t in range(1, 12))  # objects move
