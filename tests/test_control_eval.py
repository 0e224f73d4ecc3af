"""Control accuracy: object localisation, cell selection, summaries, and the embedded-default pipeline (reduced)."""
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from dataset.synthetic import COLOUR_RGB
from evaluation.control import (choose_object, choose_shift, format_result, locate, main, mean_ci95, object_cells,
                                paired_difference, scene_palette, summarise)
from tests.conftest import ROOT


def disc_frame(size, center, radius, rgb, background=235):
    frame = np.full((size, size, 3), background, dtype=np.uint8)
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    frame[(xs - center[0]) ** 2 + (ys - center[1]) ** 2 <= radius ** 2] = rgb
    return frame


def test_locate_finds_the_centroid_of_the_colour():
    frame = disc_frame(64, (20.0, 41.0), 6, COLOUR_RGB[0])
    frame[5:9, 50:54] = COLOUR_RGB[2]  # another object of another colour
    palette = np.array([COLOUR_RGB[0], COLOUR_RGB[2], COLOUR_RGB[3], [235, 235, 235]], dtype=np.float32)
    found = locate(frame, palette, 0, area=math.pi * 36)
    assert np.allclose(found, (20.0, 41.0), atol=0.5)
    assert locate(frame, palette, 2, area=math.pi * 36) is None  # absent colour: lost


def test_scene_palette_uses_the_rendered_colours():
    shifted = np.array([180, 90, 60])  # how a blurry autoencoder might render red
    frame = disc_frame(64, (20.0, 41.0), 6, shifted, background=230)
    gt = {"colour": np.array([0]), "radius": np.array([6.0]), "centers": np.array([[[20.0, 41.0]]]),
          "colour_rgb": COLOUR_RGB}
    palette = scene_palette(frame, gt)
    assert np.allclose(palette[0], shifted) and np.allclose(palette[1], 230)
    assert np.allclose(locate(frame, palette, 0, area=math.pi * 36), (20.0, 41.0), atol=0.5)


def test_object_cells_and_shift():
    cells = object_cells(np.array([20.0, 41.0]), 6.0, 8.0, (8, 8))
    assert (5, 2) in cells and all(abs((c + 0.5) * 8 - 20) <= 6 + 1e-9 or (r, c) == (5, 2) for r, c in cells)
    assert choose_shift(cells, np.array([20.0, 41.0]), 64, (8, 8), 2) == (0, 2)  # toward the centre, horizontally
    edge = [(0, 7)]
    assert choose_shift(edge, np.array([60.0, 4.0]), 64, (8, 8), 9) is None


def test_choose_object_needs_a_unique_visible_colour():
    gt = {"colour": np.array([0, 0, 2]), "radius": np.array([5.0, 9.0, 4.0]),
          "visible_pixels": np.array([[70, 250, 50], [70, 250, 50]])}
    assert choose_object(gt) == 2  # the two red ones share a colour
    gt["visible_pixels"] = np.array([[70, 250, 10], [70, 250, 50]])  # object 2 occluded in frame 0
    assert choose_object(gt) is None


def test_summarise_closed_form():
    result = summarise([[0.0, 8.0], [16.0, float("inf")]], cell=8.0, size=64)
    diagonal = 64 * math.sqrt(2)
    assert result["mean_distance_px"] == pytest.approx((4.0 + (16 + diagonal) / 2) / 2)
    assert result["within_one_cell"] == 0.5 and result["lost"] == 0.25 and result["clips"] == 2


def test_undefined_values_are_none_not_nan():
    """One clip has no interval, and an object never found has no median distance: None (JSON null), never NaN."""
    assert mean_ci95(np.array([3.0])) == (3.0, [None, None])
    result = summarise([[float("inf"), float("inf")]], cell=8.0, size=64)
    assert result["median_distance_px_found"] is None and result["mean_distance_px_ci95"] == [None, None]
    assert result["lost"] == 1.0 and result["mean_distance_px"] == pytest.approx(64 * math.sqrt(2))
    paired = paired_difference([[1.0]], [[3.0]], size=64)
    assert paired["mean_px"] == -2.0 and paired["ci95_px"] == [None, None]
    settings = {"num_clips": 1, "num_frames": 2, "shift_cells": 2, "cell_px": 8.0, "steps": 1, "gamma": 0.0}
    text = format_result({"controlled": result, "baseline": result, "controlled_minus_baseline": paired,
                          "settings": settings})
    assert "[n/a, n/a]" in text and "[95% CI n/a, n/a]" in text


def test_paired_difference_closed_form():
    diagonal = 64 * math.sqrt(2)
    controlled, baseline = [[2.0, 4.0], [10.0, 10.0], [0.0, float("inf")]], [[6.0, 8.0], [9.0, 9.0], [0.0, 0.0]]
    result = paired_difference(controlled, baseline, size=64)
    differences = np.array([-4.0, 1.0, diagonal / 2])
    assert result["mean_px"] == pytest.approx(differences.mean())
    half = 1.96 * differences.std(ddof=1) / math.sqrt(3)
    assert result["ci95_px"] == pytest.approx([differences.mean() - half, differences.mean() + half])
    assert result["clips_closer_with_control"] == pytest.approx(1 / 3)


def strict_json(text: str):
    """json.loads that refuses the non-standard NaN/Infinity tokens."""
    def reject(token):
        raise ValueError(f"non-standard JSON constant {token}")

    return json.loads(text, parse_constant=reject)


@pytest.fixture(scope="module")
def golden_and_data(golden_dir, tmp_path_factory):
    """The golden tiny model and a synthetic test split with ground truth (3 clips of 32 px), and one without."""
    from dataset.h5 import write_videos
    from dataset.make_synthetic import main as make_synthetic

    root = tmp_path_factory.mktemp("control")
    assert make_synthetic(["--out_dir", str(root / "synthetic"), "--train", "0", "--val", "0", "--test", "3",
                           "--frames", "4", "--size", "32", "--min_objects", "1", "--max_objects", "1", "--seed", "5",
                           "--quiet"]) == 0
    rng = np.random.default_rng(0)
    write_videos(root / "plain" / "test", [rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8) for _ in range(2)])
    folder = golden_dir / "tiny_ldm"
    return {"root": root, "args": ["--config", str(folder / "config.yaml"), "--ckpt", str(folder / "model.pth"),
                                   "--device", "cpu", "--precision", "fp32", "--steps", "1", "--num-frames", "2",
                                   f"model.autoencoder.ckpt_path={folder / 'ae.pth'}"]}


def test_cli_writes_standard_json(golden_and_data, capsys):
    """One clip: its intervals are undefined, and the file still parses with a strict parser."""
    out = golden_and_data["root"] / "control.json"
    code = main([*golden_and_data["args"], "--data", str(golden_and_data["root"] / "synthetic" / "test"),
                 "--num-clips", "1", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    result = strict_json(out.read_text())
    assert result["settings"]["num_clips"] == 1 and result["controlled"]["mean_distance_px_ci95"] == [None, None]
    assert "| controlled |" in capsys.readouterr().out


def test_cli_exit_statuses(golden_and_data, capsys):
    """1 for a failure (data without ground truth, a missing checkpoint), with the message and no traceback; 2 for a
    bad command line."""
    args = golden_and_data["args"]
    assert main([*args, "--data", str(golden_and_data["root"] / "plain" / "test"), "--num-clips", "1"]) == 1
    err = capsys.readouterr().err
    assert "needs synthetic ground truth" in err and "Traceback" not in err
    missing = [*args, "--data", str(golden_and_data["root"] / "synthetic" / "test")]
    missing[missing.index("--ckpt") + 1] = str(golden_and_data["root"] / "none.pth")
    assert main(missing) == 1
    assert "none.pth" in capsys.readouterr().err
    assert main([*args, "--data", "x", "--num-clips", "0"]) == 2
    assert "--num-clips must be at least 1" in capsys.readouterr().err
    assert main([*args]) == 2  # --data is required
    assert "--data" in capsys.readouterr().err


@pytest.mark.slow
def test_embedded_default_pipeline_reduced(tmp_path):
    """The README's main command in a reduced form: every stage runs and writes its files; a rerun reuses them."""
    command = [sys.executable, "scripts/toy_pipeline.py", "--quick", "--root", str(tmp_path)]
    first = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    out = tmp_path / "outputs" / "toy"
    for name in ("animation", "composition"):
        for suffix in (".mp4", ".gif", ".png"):
            assert (out / f"{name}{suffix}").stat().st_size > 0
    result = strict_json((out / "control_accuracy.json").read_text())  # standard JSON: no NaN (None where undefined)
    assert result["settings"]["num_clips"] >= 1 and {"controlled", "baseline"} <= set(result)
    assert result["settings"]["gamma"] == 2.0  # the pipeline's guidance reaches the evaluation
    quality = result["sample_quality"]  # issue 12's evaluate.py command, on the quick run's test clips
    assert quality["clips"] == 2 and quality["controls_prob"] == 0.5 and 5 < quality["psnr"] < 60
    assert "--controls-prob 0.5 --cond-frames 1 --gen-frames 3" in quality["command"]
    report = strict_json((out / "sample_quality.json").read_text())
    assert report["metrics"]["psnr"]["mean"] == quality["psnr"] and report["protocol"]["gamma"] == 0.0
    timings = strict_json((out / "timings.json").read_text())
    assert set(timings) == {"world", "autoencoder", "cage", "demos", "control_accuracy", "sample_quality", "total"}
    assert "| controlled |" in first.stdout and "sample quality" in first.stdout
    second = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0 and "reusing existing data" in second.stdout and second.stdout.count("reusing ") >= 3
