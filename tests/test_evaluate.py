"""evaluate.py end to end on a tiny golden checkpoint, synthetic clips, and a random I3D the test scripts itself; the
sample store's identity checks, the metric registry and the scoring of a store with closed-form values."""
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
from evaluation.protocol import Protocol, sampling_differences
from tests.conftest import ROOT

NUM_VIDEOS, COND, GEN = 4, 1, 7


# Protocol --------------------------------------------------------------------------------------------------------
def base_protocol(**changes) -> Protocol:
    fields = dict(split="test", num_videos=4, cond_frames=1, gen_frames=7, skip_frames=0, frame_size=32,
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
    assert sampling_differences(base_protocol(num_videos=5).to_dict(), protocol.sampling_dict()) == []
    assert sampling_differences(base_protocol(num_videos=5, steps=3).to_dict(), protocol.sampling_dict()) == \
        ["steps: 3 -> 2"]


def test_json_safe_turns_non_finite_numbers_into_null():
    """evaluate.json_safe is still importable: the project's one, lutils.io.json_safe."""
    from lutils.io import json_safe

    assert evaluate.json_safe is json_safe
    value = {"a": float("nan"), "b": [np.float32(1.5), float("inf")], "c": torch.tensor(2.0), 3: "x"}
    assert json.loads(json.dumps(evaluate.json_safe(value), allow_nan=False)) == \
        {"a": None, "b": [1.5, None], "c": 2.0, "3": "x"}


def test_protocol_records_the_fvd_covariance_and_has_no_clip_start():
    """clip_start (always 0) left the protocol; the covariance convention of FVD is recorded instead."""
    protocol = base_protocol().to_dict()
    assert "clip_start" not in protocol and protocol["fvd_covariance"] == "population"
    with pytest.raises(ValueError, match="fvd_covariance"):
        base_protocol(fvd_covariance="sample")


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
    assert set(results["numerics"]) == {"tf32_matmul", "tf32_cudnn"}  # as autocast left them (CUDA only)
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


def strict_json(text: str):
    """json.loads that refuses the non-standard NaN/Infinity tokens."""
    def reject(token):
        raise ValueError(f"non-standard JSON constant {token}")

    return json.loads(text, parse_constant=reject)


@pytest.mark.slow
def test_every_json_file_of_a_run_is_standard_json(full_run):
    out, _ = full_run
    written = [out, out.with_suffix(".parts") / "identity.json"]
    for path in written:
        strict_json(path.read_text())
    # a control accuracy over 2 clips has intervals; its settings and the protocol hold only numbers and strings
    results = strict_json(out.read_text())
    assert results["protocol"]["fvd_covariance"] == "population" and "clip_start" not in results["protocol"]


@pytest.mark.slow
def test_metrics_stage_rescores_stored_samples_under_other_comparison_settings(setup, full_run, tmp_path, capsys):
    """--stage metrics reads the samples without generating: another --fvd-frames (a comparison setting, not a
    sampling one) uses the same batches; a batch holding other clips than the protocol chooses is refused."""
    import shutil

    out, results = full_run
    copy = tmp_path / "copy.json"
    shutil.copytree(out.with_suffix(".parts"), copy.with_suffix(".parts"))
    before = {p.name: p.stat().st_mtime_ns for p in copy.with_suffix(".parts").iterdir()}
    args = arguments(setup, copy, "--stage", "metrics", "--controls-prob", "0.5", "--i3d", str(setup["i3d"]),
                     "--fvd-frames", "generated", "--control-clips", "0")
    assert evaluate.main(args) == 0
    assert {p.name: p.stat().st_mtime_ns for p in copy.with_suffix(".parts").iterdir()} == before
    rescored = json.loads(copy.read_text())
    assert rescored["protocol"]["fvd_frames"] == "generated"
    assert rescored["metrics"]["psnr"] == results["metrics"]["psnr"]
    assert rescored["metrics"]["fvd"]["value"] != pytest.approx(results["metrics"]["fvd"]["value"], rel=1e-6)
    assert rescored["metrics"]["lpips"] == {"skipped": "no --lpips-weights given: LPIPS needs a local AlexNet file "
                                                       "(alexnet-owt-7be5be79.pth); nothing is downloaded"}
    recorded = sum(float(np.load(p)["seconds"]) for p in copy.with_suffix(".parts").glob("batch_*.npz"))
    assert rescored["seconds"]["generation"] == pytest.approx(recorded, rel=1e-12)  # what the batches recorded

    batch = copy.with_suffix(".parts") / "batch_00001.npz"
    arrays = dict(np.load(batch))
    arrays["indices"] = arrays["indices"] + 1  # as if the split had changed under the store
    np.savez(batch, **arrays)
    capsys.readouterr()
    assert evaluate.main(args) == 1
    assert "holds clips [4, 6]" in capsys.readouterr().err


@pytest.mark.slow
def test_other_settings_refuse_the_partial_results(setup, full_run, capsys):
    out, _ = full_run
    code = evaluate.main(arguments(setup, out, "--steps", "3", "--no-fvd"))
    assert code == 1  # a failure, not a bad command line
    err = capsys.readouterr().err
    assert "holds batches of another evaluation" in err and "steps: 2 -> 3" in err


def test_missing_detector_fails_before_any_generation(setup, tmp_path, capsys):
    """No --i3d is a bad command line (2); an --i3d file that is not there is a failure (1). Either way the message
    says which file to obtain, and nothing was generated."""
    out = tmp_path / "r.json"
    assert evaluate.main(arguments(setup, out)) == 2
    err = capsys.readouterr().err
    assert "--i3d" in err and "--no-fvd" in err and "i3d_torchscript.pt" in err and "http" in err
    assert not out.with_suffix(".parts").exists()
    assert evaluate.main(arguments(setup, out, "--i3d", str(tmp_path / "nope.pt"))) == 1
    assert "nope.pt" in capsys.readouterr().err
    assert not out.with_suffix(".parts").exists()
    # generating only needs no detector: the sampling stage checks no weights (not run here: --num-videos 7 fails
    # on the data first, after the arguments were accepted)
    assert evaluate.main(arguments(setup, out, "--stage", "sample", "--num-videos", "7")) == 1
    assert "asked for 7 videos" in capsys.readouterr().err


@pytest.mark.parametrize("extra,message", [(["--lpips-weights", "/nonexistent/alex.pth"], "alexnet-owt-7be5be79.pth"),
                                           (["--num-videos", "7"], "asked for 7 videos, but the split has 6"),
                                           (["--fvd-real-videos", "9"], "asked for 9 videos, but the split has 6"),
                                           (["--split", "val"], "no 'val' split folder"),
                                           (["--stage", "metrics"], "holds no samples")])
def test_bad_inputs_are_clear_errors(setup, tmp_path, capsys, extra, message):
    """Inputs that do not fit the files are failures: exit status 1, the message without a traceback."""
    assert evaluate.main(arguments(setup, tmp_path / "r.json", "--no-fvd", *extra)) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("extra,message", [(["--controls-prob", "1.5"], "--controls-prob must lie in [0, 1]"),
                                           (["--gen-frames", "0"], "--gen-frames must be at least 1"),
                                           (["--batch-size", "0"], "--batch-size must be at least 1"),
                                           (["--stage", "metrics", "--restart"], "--restart discards"),
                                           (["--stage", "everything"], "invalid choice")])
def test_bad_command_lines_exit_with_2(setup, tmp_path, capsys, extra, message):
    assert evaluate.main(arguments(setup, tmp_path / "r.json", "--no-fvd", *extra)) == 2
    assert message in capsys.readouterr().err
    assert evaluate.main(arguments(setup, tmp_path / "r.txt", "--no-fvd")) == 2
    assert "--out must be a .json file" in capsys.readouterr().err
    assert not (tmp_path / "r.parts").exists()


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
    single = tmp_path / "single.json"  # here in two stages: samples first, then the metrics on them
    assert evaluate.main(arguments(setup, single, "--stage", "sample")) == 0  # the sampling stage needs no --i3d
    assert not single.exists() and len(list(single.with_suffix(".parts").glob("batch_*.npz"))) == 2
    assert evaluate.main(arguments(setup, single, "--stage", "metrics", "--no-fvd", "--control-clips", "0")) == 0
    assert json.loads(single.read_text())["metrics"]["psnr"]["count"] == NUM_VIDEOS * GEN
    for b in range(2):
        a, c = np.load(out.with_suffix(".parts") / f"batch_{b:05d}.npz"), np.load(single.with_suffix(".parts") / f"batch_{b:05d}.npz")
        difference = np.abs(a["generated"].astype(int) - c["generated"].astype(int))
        assert np.array_equal(a["indices"], c["indices"]) and np.array_equal(a["real"], c["real"])
        # torchrun runs each process with one thread: float sums in another order may round a pixel the other way
        assert difference.max() <= 1 and difference.mean() < 1e-3
    assert json.loads(out.read_text())["processes"] == 2


# Sample store ----------------------------------------------------------------------------------------------------
def identity_of(protocol: Protocol, **changes) -> dict:
    from evaluation.sampling import PARTS_VERSION

    return {"parts_version": PARTS_VERSION, "protocol": protocol.sampling_dict(), "data": "/data/test",
            "checkpoint": "/ckpt.pth", "checkpoint_bytes": 10, "checkpoint_mtime": 1.5, "ema": True,
            "model_config": {"sigma": 1e-7}, **changes}


def test_store_identity_compares_sampling_fields_and_accepts_older_stores(tmp_path):
    """A store written before the split held the whole protocol (fvd_* fields and clip_start 0): it is still the
    same samples. A sampling field that differs, or a clip_start other than 0, is refused."""
    from evaluation.errors import EvaluationError
    from evaluation.sampling import SampleStore

    protocol = base_protocol()
    store = SampleStore(tmp_path / "r.parts", protocol.num_batches)
    with pytest.raises(EvaluationError, match="holds no samples"):
        store.check(identity_of(protocol))
    older = identity_of(protocol)
    older["protocol"] = {**base_protocol(fvd_frames="generated").to_dict(), "clip_start": 0}
    del older["protocol"]["fvd_covariance"]
    store.prepare(older)  # as an older evaluate.py wrote it
    store.prepare(identity_of(protocol))  # accepted: same sampling fields
    store.check(identity_of(protocol))
    with pytest.raises(EvaluationError, match=r"seed: 0 -> 1"):
        store.check(identity_of(base_protocol(seed=1)))
    with pytest.raises(EvaluationError, match=r"checkpoint_bytes: 10 -> 11"):
        store.check(identity_of(protocol, checkpoint_bytes=11))
    shifted = {**older, "protocol": {**older["protocol"], "clip_start": 3}}
    (tmp_path / "r.parts" / "identity.json").write_text(json.dumps(shifted))
    with pytest.raises(EvaluationError, match=r"clip_start: 3 -> \(retired"):
        store.check(identity_of(protocol))
    store.prepare(identity_of(protocol), restart=True)  # --restart: a fresh store
    assert json.loads((tmp_path / "r.parts" / "identity.json").read_text())["protocol"] == protocol.sampling_dict()


def test_sampling_draws_come_from_the_batch_seed():
    """Batch b's generator is seeded with seed * 1000003 + b, whichever process generates it."""
    from evaluation.sampling import batch_generator

    protocol = base_protocol(seed=2)
    expected = torch.Generator().manual_seed(2 * 1_000_003 + 5)
    assert torch.equal(torch.rand(4, generator=batch_generator(protocol, 5)), torch.rand(4, generator=expected))


# Metric registry and scoring -------------------------------------------------------------------------------------
def constant_clips(values, frames: int = 3, size: int = 32) -> np.ndarray:
    """uint8 [len(values) frames 3 size size], clip i filled with values[i]."""
    return np.stack([np.full((frames, 3, size, size), v, dtype=np.uint8) for v in values])


def test_score_reads_a_store_closed_form(tmp_path):
    """Two batches of constant clips: real 0 and 255, generated 51 and 204 (0.2 away in [0, 1]). PSNR is
    10 log10(1 / 0.04) on every frame. SSIM of constant frames a, b is (2ab + c1) / (a^2 + b^2 + c1), c1 = 0.01^2.
    FVD, with a detector that returns a clip's mean value per channel: real features -1 and +1 (mean 0, variance 1
    over N), generated -0.6 and 0.6 (variance 0.36), the same on the 3 channels, so FVD = 3 (1 - 0.6)^2 = 0.48
    (it would be 0.96 with variances over N - 1)."""
    from evaluation import metrics
    from evaluation.sampling import SampleStore

    protocol = base_protocol(num_videos=4, batch_size=2, cond_frames=1, gen_frames=2)
    store = SampleStore(tmp_path / "r.parts", protocol.num_batches)
    real, generated = constant_clips([0, 255, 0, 255]), constant_clips([51, 204, 51, 204])
    for b in range(2):
        store.save(b, indices=np.array([2 * b, 2 * b + 1]), real=real[2 * b:2 * b + 2],
                   generated=generated[2 * b:2 * b + 2], seconds=np.asarray(1.5))
    chosen = metrics.plan({"fvd": "i3d.pt"}, disabled=())
    assert chosen.names == ["psnr", "ssim", "fvd"] and "lpips" in chosen.skipped
    scores = metrics.score(store, metrics.MetricContext(protocol), chosen,
                           {"fvd": lambda x: x.mean(dim=(2, 3, 4))}, indices=[0, 1, 2, 3], progress=False)
    assert list(scores.metrics) == ["psnr", "ssim", "lpips", "fvd"]  # registry order
    psnr = scores.metrics["psnr"]
    assert psnr["mean"] == pytest.approx(10 * np.log10(25)) and psnr["count"] == 8 and psnr["std"] < 1e-5  # float32 frames
    c1 = 0.01 ** 2
    dark, bright = c1 / (0.2 ** 2 + c1), (2 * 0.8 + c1) / (1 + 0.8 ** 2 + c1)
    assert scores.metrics["ssim"]["per_frame_mean"] == pytest.approx([(dark + bright) / 2] * 2, rel=1e-5)
    assert scores.metrics["fvd"]["value"] == pytest.approx(0.48, rel=1e-6)
    assert scores.metrics["fvd"]["real_videos"] == scores.metrics["fvd"]["generated_videos"] == 4
    assert scores.generation_seconds == 3.0 and scores.samples["real"].shape == (4, 3, 3, 32, 32)
    assert set(scores.per_frame_curves()) == {"psnr", "ssim"}
    with pytest.raises(metrics.EvaluationError, match="holds clips"):
        metrics.score(store, metrics.MetricContext(protocol), chosen, {"fvd": lambda x: x.mean(dim=(2, 3, 4))},
                      indices=[0, 1, 2, 4], progress=False)


def test_registry_is_the_only_list_of_metrics(monkeypatch):
    """A new entry gets its weights option, its --no-<name> (weights required), its skip reason and its summary line,
    with no other edit."""
    from evaluation import metrics
    from evaluation.report import format_summary

    registry = dict(metrics.METRICS)
    registry["mse"] = metrics.Metric("mse", metrics.per_frame(lambda r, g, net: (r - g).square().mean(dim=(2, 3, 4))),
                                     weights=metrics.Weights("--mse-net", lambda path, device: path, "a network",
                                                             required=True, missing="get mse.pt"),
                                     per_frame=True)
    monkeypatch.setattr(metrics, "METRICS", registry)
    monkeypatch.setattr(evaluate, "METRICS", registry)
    parser = evaluate.build_parser()
    args = parser.parse_args(["--config", "c", "--ckpt", "k", "--out", "o.json", "--i3d", "i.pt", "--mse-net", "m.pt"])
    assert args.mse_net == "m.pt" and args.no_mse is False
    with pytest.raises(metrics.EvaluationError, match="get mse.pt"):
        metrics.plan({"fvd": "i.pt"})
    assert metrics.plan({"fvd": "i.pt"}, disabled=["mse"]).skipped["mse"] == "--no-mse"
    summary = format_summary({"psnr": {"mean": 20.0}, "mse": {"mean": 0.25}, "fvd": {"skipped": "--no-fvd"}}, "o.json")
    assert "  mse: 0.2500" in summary and "  fvd: skipped (--no-fvd)" in summary
