"""Control accuracy: object localisation, cell selection, summaries, and the embedded-default pipeline (reduced)."""
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from dataset.synthetic import COLOUR_RGB
from evaluation.control import (choose_object, choose_shift, locate, object_cells, paired_difference, scene_palette,
                                summarise)
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


def test_paired_difference_closed_form():
    diagonal = 64 * math.sqrt(2)
    controlled, baseline = [[2.0, 4.0], [10.0, 10.0], [0.0, float("inf")]], [[6.0, 8.0], [9.0, 9.0], [0.0, 0.0]]
    result = paired_difference(controlled, baseline, size=64)
    differences = np.array([-4.0, 1.0, diagonal / 2])
    assert result["mean_px"] == pytest.approx(differences.mean())
    half = 1.96 * differences.std(ddof=1) / math.sqrt(3)
    assert result["ci95_px"] == pytest.approx([differences.mean() - half, differences.mean() + half])
    assert result["clips_closer_with_control"] == pytest.approx(1 / 3)


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
    result = json.loads((out / "control_accuracy.json").read_text())
    assert result["settings"]["num_clips"] >= 1 and {"controlled", "baseline"} <= set(result)
    assert result["settings"]["gamma"] == 2.0  # the pipeline's guidance reaches the evaluation
    quality = result["sample_quality"]  # issue 12's evaluate.py command, on the quick run's test clips
    assert quality["clips"] == 2 and quality["controls_prob"] == 0.5 and 5 < quality["psnr"] < 60
    assert "--controls-prob 0.5 --cond-frames 1 --gen-frames 3" in quality["command"]
    report = json.loads((out / "sample_quality.json").read_text())
    assert report["metrics"]["psnr"]["mean"] == quality["psnr"] and report["protocol"]["gamma"] == 0.0
    timings = json.loads((out / "timings.json").read_text())
    assert set(timings) == {"world", "autoencoder", "cage", "demos", "control_accuracy", "sample_quality", "total"}
    assert "| controlled |" in first.stdout and "sample quality" in first.stdout
    second = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0 and "reusing existing data" in second.stdout and second.stdout.count("reusing ") >= 3
