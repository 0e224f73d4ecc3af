"""Entry points: train.py --dry-run, the data-pipeline demo, the README/CI test command, the ways each tool is run,
and the exit statuses of the CLIs (lutils/errors.py: 2 bad command line, 1 a project error in one line, any other
exception a bug that keeps its traceback)."""
import subprocess
import sys

import numpy as np
import pytest
import torch

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


# How the tools are run -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [
    ["dataset/convert_to_h5.py", "--help"],
    ["-m", "dataset.convert_to_h5", "--help"],
    ["-m", "dataset.acquisition.convert_video_directory", "--help"],
    ["-m", "dataset.acquisition.train_val_test_split", "--help"],
    ["dataset/acquisition/convert_video_directory.py", "--help"],
    ["dataset/acquisition/train_val_test_split.py", "--help"],
    ["-m", "dataset.inspect", "--help"],
    ["-m", "dataset.make_synthetic", "--help"],
])
def test_tools_run_as_documented_from_the_root(command):
    """The installed project imports from any of these: no tool puts the project root on sys.path itself."""
    result = run(*command)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout and "--" in result.stdout


def test_no_package_module_edits_sys_path():
    for folder in ("dataset", "lutils", "training", "model", "evaluation"):
        for path in (ROOT / folder).rglob("*.py"):
            assert "sys.path.insert" not in path.read_text(), path


# Exit statuses -------------------------------------------------------------------------------------------------------
def one_error_line(stderr: str, *needles: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_train_bad_flag_is_a_usage_error():
    result = run("train.py", "--config", "configs/clevrer.yaml", "--run-name", "t", "--no-such-flag")
    assert result.returncode == 2 and "--no-such-flag" in result.stderr and "Traceback" not in result.stderr


def test_train_bad_hdf5_is_one_error_line(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "shard_0001.hdf5").write_bytes(b"not an hdf5 file" * 8)
    result = run("train.py", "--config", "configs/clevrer.yaml", "--run-name", "t", "--dry-run",
                 f"data.data_root={tmp_path}")
    assert result.returncode == 1
    one_error_line(result.stderr, str(tmp_path / "train" / "shard_0001.hdf5"), "cannot open as HDF5")


def test_train_missing_config_is_one_error_line(tmp_path, capsys):
    from train import main

    assert main(["--config", str(tmp_path / "none.yaml"), "--run-name", "t", "--dry-run"]) == 1
    one_error_line(capsys.readouterr().err, str(tmp_path / "none.yaml"))


def test_train_does_not_swallow_a_bug(tmp_path, monkeypatch):
    import train

    def buggy_configuration(*args, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(train, "Configuration", buggy_configuration)
    with pytest.raises(KeyError, match="a bug"):
        train.main(["--config", "configs/clevrer.yaml", "--run-name", "t", "--dry-run"])
    monkeypatch.undo()

    class BuggyTrainer:
        def __init__(self, *args, **kwargs):
            raise ValueError("a bug in the trainer")

    monkeypatch.setattr(train, "trainer_class", lambda kind: BuggyTrainer)
    with pytest.raises(ValueError, match="a bug in the trainer"):
        train.main(["--config", "configs/clevrer.yaml", "--run-name", "t", "--device", "cpu"])


@pytest.mark.parametrize("flags, needle", [
    (["--out", "video.avi"], ".mp4 or .gif"),
    (["--num-frames", "0"], "--num-frames"),
    (["--steps", "0"], "--steps"),
])
def test_generate_bad_flag_values_are_usage_errors(tmp_path, capsys, flags, needle):
    from generate import main

    argv = ["--config", "configs/clevrer.yaml", "--ckpt", str(tmp_path / "model.pth"), "--num-frames", "2",
            "--out", str(tmp_path / "video.gif"), *flags]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert needle in capsys.readouterr().err


def test_generate_missing_controls_is_one_error_line(tmp_path, capsys):
    from generate import main

    argv = ["--config", "configs/clevrer.yaml", "--ckpt", str(tmp_path / "model.pth"), "--num-frames", "2",
            "--out", str(tmp_path / "video.gif"), "--controls", str(tmp_path / "none.json")]
    assert main(argv) == 1
    one_error_line(capsys.readouterr().err, str(tmp_path / "none.json"))


def test_export_exit_statuses(tmp_path, capsys, monkeypatch):
    from training import export

    not_a_checkpoint = tmp_path / "weights.pth"
    torch.save({"weights": torch.zeros(2)}, not_a_checkpoint)
    assert export.main([str(not_a_checkpoint), "--out", str(tmp_path / "a.pth")]) == 1
    one_error_line(capsys.readouterr().err, str(not_a_checkpoint))

    config = {"model": {"vector_field_regressor": {"inner_dim": 4}}}
    weights = {"ae.w": torch.ones(1), "dino.w": torch.ones(1), "w": torch.zeros(2)}  # every part of the model
    torch.save({"model": weights, "global_step": 3, "config": config}, tmp_path / "no_ema.pth")
    assert export.main([str(tmp_path / "no_ema.pth"), "--out", str(tmp_path / "b.pth")]) == 1
    one_error_line(capsys.readouterr().err, "no EMA weights", "--no-ema")
    assert export.main([str(tmp_path / "no_ema.pth"), "--out", str(tmp_path / "b.pth"), "--no-ema"]) == 0
    exported = torch.load(tmp_path / "b.pth", weights_only=True)["model"]
    assert torch.equal(exported["w"], torch.zeros(2))
    assert exported["vector_field_regressor.time_projection.2.weight"].shape == (4, 256)

    torch.save({"model": {}, "global_step": 3, "config": {}}, tmp_path / "no_config.pth")
    assert export.main([str(tmp_path / "no_config.pth"), "--out", str(tmp_path / "c.pth"), "--no-ema"]) == 1
    one_error_line(capsys.readouterr().err, "inner_dim")

    def buggy_export(*args):
        raise KeyError("a bug")

    monkeypatch.setattr(export, "export_for_original", buggy_export)
    with pytest.raises(KeyError, match="a bug"):
        export.main([str(tmp_path / "no_ema.pth"), "--out", str(tmp_path / "d.pth"), "--no-ema"])
    with pytest.raises(SystemExit) as exit_info:
        export.main([str(tmp_path / "no_ema.pth")])  # --out is required
    assert exit_info.value.code == 2


def test_inspect_and_make_synthetic_exit_statuses(tmp_path, capsys):
    from dataset import inspect as inspect_h5
    from dataset.make_synthetic import main as make_synthetic

    assert inspect_h5.main([str(tmp_path / "none")]) == 1
    one_error_line(capsys.readouterr().err, str(tmp_path / "none"))
    with pytest.raises(SystemExit) as exit_info:
        inspect_h5.main([str(tmp_path), "--frames-key"])
    assert exit_info.value.code == 2

    (tmp_path / "syn" / "train").mkdir(parents=True)
    (tmp_path / "syn" / "train" / "old.txt").write_text("old")
    argv = ["--out-dir", str(tmp_path / "syn"), "--train", "1", "--val", "0", "--test", "0", "--frames", "2",
            "--size", "16", "--min-objects", "1", "--max-objects", "1", "--quiet"]
    assert make_synthetic(argv) == 1
    one_error_line(capsys.readouterr().err, str(tmp_path / "syn" / "train"), "--force")
    with pytest.raises(SystemExit) as exit_info:
        make_synthetic([*argv, "--num-per-shard", "0"])
    assert exit_info.value.code == 2 and "--num-per-shard" in capsys.readouterr().err
    underscore = ["--" + flag[2:].replace("-", "_") if flag.startswith("--") else flag for flag in argv]
    assert underscore[0] == "--out_dir" and "--max_objects" in underscore
    assert make_synthetic([*underscore, "--force"]) == 0  # the old spellings still work
    assert sorted(p.name for p in (tmp_path / "syn" / "train").iterdir()) == ["manifest.json", "shard_0001.hdf5"]
