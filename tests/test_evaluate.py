"""evaluate.py end to end on a tiny golden checkpoint, synthetic clips, and a random I3D the test scripts itself."""
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch

import evaluate
from evaluation.protocol import Protocol, evenly_spaced
from tests.conftest import ROOT

NUM_VIDEOS, COND, GEN = 4, 1, 7


# Protocol --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("available,count", [(10, 10), (10, 1), (10, 4), (7, 6), (1000, 256), (3, None)])
def test_evenly_spaced_is_distinct_ordered_and_covers_the_ends(available, count):
    chosen = evenly_spaced(available, count)
    assert len(chosen) == (count or available) and chosen == sorted(set(chosen))
    assert chosen[0] == 0 and (len(chosen) == 1 or chosen[-1] == available - 1)


def test_evenly_spaced_rejects_more_than_available():
    with pytest.raises(ValueError, match="asked for 11 videos, but the split has 10"):
        evenly_spaced(10, 11)


def base_protocol(**changes) -> Protocol:
    fields = dict(split="test", num_videos=4, cond_frames=1, gen_frames=7, skip_frames=0, frame_size=32, clip_start=0,
                  steps=2, gamma=0.0, seed=0, batch_size=2, controls_prob=0.0)
    return Protocol(**{**fields, **changes})


@pytest.mark.parametrize("bad,message", [({"controls_prob": 1.5}, "controls_prob"), ({"fvd_frames": "some"}, "fvd_frames"),
                                         ({"gen_frames": 0}, "gen_frames"), ({"batch_size": 0}, "batch_size")])
def test_protocol_validates(bad, message):
    with pytest.raises(ValueError, match=message):
        base_protocol(**bad)


def test_protocol_differences_and_batches():
    protocol = base_protocol(num_videos=5)
    assert protocol.num_batches == 3 and protocol.clip_frames == 8
    assert protocol.differences(base_protocol(num_videos=5).to_dict()) == []
    assert protocol.differences(base_protocol(num_videos=5, steps=3).to_dict()) == ["steps: 3 -> 2"]


def test_json_safe_turns_non_finite_numbers_into_null():
    value = {"a": float("nan"), "b": [np.float32(1.5), float("inf")], "c": torch.tensor(2.0), 3: "x"}
    assert json.loads(json.dumps(evaluate.json_safe(value), allow_nan=False)) == \
        {"a": None, "b": [1.5, None], "c": 2.0, "3": "x"}


# End to end ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def setup(golden_dir, tmp_path_factory):
    """Synthetic clips with ground truth, a scripted random I3D, random LPIPS AlexNet weights, the golden tiny model."""
    from dataset.make_synthetic import main as make_synthetic
    from evaluation.i3d import I3D

    root = tmp_path_factory.mktemp("evaluate")
    data = root / "data"
    assert make_synthetic(["--out_dir", str(data), "--train", "0", "--val", "0", "--test", "6", "--frames", "10",
                           "--size", "32", "--min_objects", "1", "--max_objects", "2", "--seed", "3", "--quiet"]) == 0
    torch.manual_seed(0)
    network = I3D(num_classes=16)
    for module in network.modules():  # variance-preserving init, so random features do not vanish with depth
        if isinstance(module, torch.nn.Conv3d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    i3d = torch.jit.script(network.eval())
    torch.jit.save(i3d, str(root / "i3d_torchscript.pt"))
    import torchvision

    torch.save(torchvision.models.alexnet(weights=None).state_dict(), root / "alexnet.pth")
    folder = golden_dir / "tiny_ldm"
    return {"root": root, "data": data, "i3d": root / "i3d_torchscript.pt", "alexnet": root / "alexnet.pth",
            "config": folder / "config.yaml", "ckpt": folder / "model.pth",
            "override": f"model.autoencoder.ckpt_path={folder / 'ae.pth'}"}


def arguments(setup, out: Path, *extra: str) -> list:
    return ["--config", str(setup["config"]), "--ckpt", str(setup["ckpt"]), "--data", str(setup["data"]),
            "--num-videos", str(NUM_VIDEOS), "--cond-frames", str(COND), "--gen-frames", str(GEN), "--steps", "2",
            "--batch-size", "2", "--device", "cpu", "--out", str(out), *extra, setup["override"]]


def frechet_with_scipy(a: np.ndarray, b: np.ndarray) -> float:
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False, bias=True), np.cov(b, rowvar=False, bias=True)  # over N, as StyleGAN-V
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real))


@pytest.fixture(scope="module")
def full_run(setup):
    out = setup["root"] / "run" / "results.json"
    code = evaluate.main(arguments(setup, out, "--controls-prob", "0.5", "--i3d", str(setup["i3d"]),
                                   "--lpips-weights", str(setup["alexnet"]), "--control-clips", "2"))
    assert code == 0
    return out, json.loads(out.read_text())


@pytest.mark.slow
def test_results_hold_every_metric_and_the_protocol(setup, full_run):
    out, results = full_run
    metrics = results["metrics"]
    for name in ("psnr", "ssim", "lpips"):
        assert len(metrics[name]["per_frame_mean"]) == GEN and metrics[name]["count"] == NUM_VIDEOS * GEN
    assert 0 < metrics["ssim"]["mean"] < 1 and metrics["lpips"]["mean"] > 0 and metrics["psnr"]["mean"] < 100
    assert metrics["fvd"]["value"] > 1e-3 and metrics["fvd"]["real_videos"] == metrics["fvd"]["generated_videos"] == 4
    assert "note" in metrics["fvd"]  # fewer than 256 videos
    control = metrics["control_accuracy"]
    assert {"controlled", "baseline"} <= set(control) and control["settings"]["num_frames"] == GEN
    protocol = results["protocol"]
    assert (protocol["num_videos"], protocol["cond_frames"], protocol["gen_frames"], protocol["controls_prob"]) == \
        (NUM_VIDEOS, COND, GEN, 0.5)
    assert protocol["fvd_resolution"] == 224 and protocol["fvd_frames"] == "all"
    assert protocol["fvd_covariance"] == "population"  # the covariance convention of the FVD value
    from lutils.precision import resolve_precision

    assert protocol["precision"] == resolve_precision("auto", "cpu")  # the default: bf16 where the CPU has it
    assert control["settings"]["precision"] == protocol["precision"]  # the control part generates at it too
    assert results["data"]["indices"] == [0, 1, 3, 5]  # 4 of 6, evenly spaced
    assert results["checkpoint"]["sha256"] == hashlib.sha256(Path(setup["ckpt"]).read_bytes()).hexdigest()
    assert len(results["code"]["git_commit"]) == 40
    assert results["code"]["packages"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    for key in ("per_frame_plot", "samples"):
        assert Path(results["files"][key]).stat().st_size > 0
    from PIL import Image

    with Image.open(results["files"]["samples"]) as grid:  # 8 rows (4 clips x real/generated), 8 frames of 32 px
        assert grid.size == (8 * 34 + 2, 8 * 34 + 2)


@pytest.mark.slow
def test_metrics_agree_with_an_independent_computation_on_the_saved_batches(setup, full_run):
    """PSNR recomputed with numpy and FVD with scipy's sqrtm from the batches on disk and the same detector."""
    from evaluation import fvd

    out, results = full_run
    parts = sorted(out.with_suffix(".parts").glob("batch_*.npz"))
    real = np.concatenate([np.load(p)["real"] for p in parts]).astype(np.float64) / 255
    fake = np.concatenate([np.load(p)["generated"] for p in parts]).astype(np.float64) / 255
    assert real.shape == fake.shape == (NUM_VIDEOS, COND + GEN, 3, 32, 32)
    assert np.array_equal(real[:, :COND], fake[:, :COND])  # the conditioning frames are the real ones
    mse = ((real[:, COND:] - fake[:, COND:]) ** 2).mean(axis=(2, 3, 4))
    psnr = 10 * np.log10(1 / np.maximum(mse, 1e-10))
    assert results["metrics"]["psnr"]["mean"] == pytest.approx(psnr.mean(), rel=1e-6)
    assert results["metrics"]["psnr"]["per_frame_mean"] == pytest.approx(psnr.mean(0).tolist(), rel=1e-6)

    detector = fvd.load_detector(setup["i3d"], "cpu")
    features = [detector(fvd.preprocess_videos(torch.from_numpy(v * 2 - 1).float())).double().numpy()
                for v in (real, fake)]
    assert results["metrics"]["fvd"]["value"] == pytest.approx(frechet_with_scipy(*features), rel=1e-4, abs=1e-6)


@pytest.mark.slow
def test_rerun_reuses_batches_and_a_lost_batch_is_regenerated_identically(setup, full_run, caplog):
    out, results = full_run
    parts = out.with_suffix(".parts")
    lost = parts / "batch_00001.npz"
    before = {key: value for key, value in np.load(lost).items()}
    kept_mtime = (parts / "batch_00000.npz").stat().st_mtime_ns
    lost.unlink()
    args = arguments(setup, out, "--controls-prob", "0.5", "--i3d", str(setup["i3d"]), "--lpips-weights",
                     str(setup["alexnet"]), "--control-clips", "0")
    with caplog.at_level("INFO"):
        assert evaluate.main(args) == 0
    assert "(1 done before" in caplog.text
    assert (parts / "batch_00000.npz").stat().st_mtime_ns == kept_mtime
    after = np.load(lost)
    for key in ("indices", "real", "generated"):
        assert np.array_equal(before[key], after[key]), key
    rerun = json.loads(out.read_text())
    assert rerun["metrics"]["fvd"]["value"] == pytest.approx(results["metrics"]["fvd"]["value"], rel=1e-9)
    assert rerun["metrics"]["control_accuracy"] == {"skipped": "--control-clips 0"}


@pytest.mark.slow
def test_other_settings_refuse_the_partial_results(setup, full_run, capsys):
    out, _ = full_run
    code = evaluate.main(arguments(setup, out, "--steps", "3", "--no-fvd"))
    assert code == 2
    assert "holds batches of another evaluation" in capsys.readouterr().err


def test_missing_detector_fails_before_any_generation(setup, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert evaluate.main(arguments(setup, out)) == 2
    err = capsys.readouterr().err
    assert "i3d_torchscript.pt" in err and "http" in err
    assert not out.with_suffix(".parts").exists()
    assert evaluate.main(arguments(setup, out, "--i3d", str(tmp_path / "nope.pt"))) == 2
    assert "nope.pt" in capsys.readouterr().err


@pytest.mark.parametrize("extra,message", [(["--lpips-weights", "/nonexistent/alex.pth"], "alexnet-owt-7be5be79.pth"),
                                           (["--num-videos", "7"], "asked for 7 videos, but the split has 6"),
                                           (["--split", "val"], "no 'val' split folder")])
def test_bad_inputs_are_clear_errors(setup, tmp_path, capsys, extra, message):
    assert evaluate.main(arguments(setup, tmp_path / "r.json", "--no-fvd", *extra)) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_generated_frames_only_other_real_set_and_no_ground_truth(setup, tmp_path, write_h5_without_ground_truth):
    """fvd_frames=generated with a separate real subsample; a split without ground truth skips control accuracy."""
    out = tmp_path / "r.json"
    data = write_h5_without_ground_truth(tmp_path / "plain")
    args = arguments(setup, out, "--i3d", str(setup["i3d"]), "--fvd-frames", "generated", "--fvd-real-videos", "5")
    args[args.index("--data") + 1] = str(data)
    assert evaluate.main(args) == 0
    results = json.loads(out.read_text())
    assert results["metrics"]["fvd"]["real_videos"] == 5 and results["metrics"]["fvd"]["generated_videos"] == 4
    assert results["protocol"]["fvd_frames"] == "generated" and results["protocol"]["fvd_real_videos"] == 5
    assert "no synthetic ground truth" in results["metrics"]["control_accuracy"]["skipped"]
    assert "skipped" in results["metrics"]["lpips"]


@pytest.fixture
def write_h5_without_ground_truth():
    from dataset.h5 import write_videos

    def write(folder: Path) -> Path:
        rng = np.random.default_rng(0)
        videos = [rng.integers(0, 256, (9, 32, 32, 3), dtype=np.uint8) for _ in range(6)]
        write_videos(folder / "test", videos)
        return folder

    return write


@pytest.mark.slow
def test_torchrun_two_processes_share_the_batches(setup, tmp_path):
    """Two gloo processes generate alternate batches; they match a single-process run's batches."""
    out = tmp_path / "r.json"
    from training.distributed import free_port

    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
               "evaluate.py", *arguments(setup, out, "--no-fvd", "--control-clips", "0")]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    single = tmp_path / "single.json"
    assert evaluate.main(arguments(setup, single, "--no-fvd", "--control-clips", "0")) == 0
    for b in range(2):
        a, c = np.load(out.with_suffix(".parts") / f"batch_{b:05d}.npz"), np.load(single.with_suffix(".parts") / f"batch_{b:05d}.npz")
        difference = np.abs(a["generated"].astype(int) - c["generated"].astype(int))
        assert np.array_equal(a["indices"], c["indices"]) and np.array_equal(a["real"], c["real"])
        # torchrun runs each process with one thread: float sums in another order may round a pixel the other way
        assert difference.max() <= 1 and difference.mean() < 1e-3
    assert json.loads(out.read_text())["processes"] == 2
