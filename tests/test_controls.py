"""Controls as data and the generate.py command line."""
import json
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from PIL import Image

from model.controls import (PLACEMENT_KINDS, Controls, ControlsError, Placement, box, linear_path, load_controls,
                            pad_controls, pixel_boxes)
from tests.conftest import ROOT


def test_build_places_source_features_at_destinations():
    source = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    controls = Controls((4, 4), 3)
    controls.place(0, [(1, 1)], frames=[0, 2], offset=(1, 2))
    controls.paste(1, box(0, 0, 2, 2), at=(2, 2), frames=[1])
    feats, masks = controls.build(source)
    assert feats.shape == (1, 3, 3, 4, 4) and masks.shape == (1, 3, 1, 4, 4)
    assert torch.equal(feats[0, 0, :, 2, 3], source[0, :, 1, 1]) and torch.equal(feats[0, 2, :, 2, 3], source[0, :, 1, 1])
    assert masks[0, 0].sum() == 1 and masks[0, 2].sum() == 1 and masks[0, 1].sum() == 4
    assert torch.equal(feats[0, 1, :, 3, 3], source[1, :, 1, 1])  # top-left (0,0) pasted at (2,2)
    assert (feats[0][masks[0].expand_as(feats[0]) == 0] == 0).all()
    assert controls.cells_by_frame() == [[(2, 3)], [(2, 2), (2, 3), (3, 2), (3, 3)], [(2, 3)]]


def test_later_placements_win_and_moves_follow_paths():
    source = torch.randn(2, 5, 6, 6)
    controls = Controls((6, 6), 4).place(0, [(0, 0)], [0]).place(1, [(0, 0)], [0])
    feats, _ = controls.build(source)
    assert torch.equal(feats[0, 0, :, 0, 0], source[1, :, 0, 0])
    assert linear_path(4, (0, 3)) == [(0, 0), (0, 1), (0, 2), (0, 3)]
    moving = Controls((6, 6), 4).move(0, [(2, 0)], frames=[0, 1, 2, 3], to=(0, 3))
    assert moving.cells_by_frame() == [[(2, 0)], [(2, 1)], [(2, 2)], [(2, 3)]]


@pytest.mark.parametrize("action, message", [
    (lambda c: c.place(0, [(9, 0)], [0]), "outside the 8x8 latent grid"),
    (lambda c: c.place(0, [(7, 7)], [0], offset=(1, 0)), "destination cell (8, 7)"),
    (lambda c: c.place(0, [(0, 0)], [5]), "frame 5 is outside"),
    (lambda c: c.move(0, [(0, 0)], [0, 1], path=[(0, 0)]), "1 path offsets for 2 frames"),
    (lambda c: c.place(0, [], [0]), "no cells"),
])
def test_bad_placements(action, message):
    with pytest.raises(ControlsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        action(Controls((8, 8), 5))


def test_file_format(tmp_path):
    data = {"grid": [8, 8], "sources": ["input", "b.png"], "placements": [
        {"label": "slide", "source": 0, "cells": {"box": [1, 1, 3, 3]}, "frames": {"from": 0, "to": 3}, "move_to": [0, 4]},
        {"source": 1, "cells": [[5, 5]], "frames": [2], "at": [0, 7]}]}
    (tmp_path / "c.json").write_text(json.dumps(data))
    controls, sources = load_controls(tmp_path / "c.json", (8, 8), 4)
    assert sources == ["input", "b.png"] and len(controls.placements) == 2
    assert controls.cells_by_frame()[3][:2] == [(1, 5), (1, 6)] and (0, 7) in controls.cells_by_frame()[2]
    import yaml

    (tmp_path / "c.yaml").write_text(yaml.safe_dump(data))
    assert load_controls(tmp_path / "c.yaml", (8, 8), 4)[0].cells_by_frame() == controls.cells_by_frame()
    for bad, message in [({**data, "grid": [16, 16]}, "latent grid is"),
                         ({"placements": [{"cells": [[0, 0]], "offset": [0, 0], "at": [1, 1]}]}, "only one of"),
                         ({"placements": [{"cells": [[0, 0]], "speed": 3}]}, "unknown field"),
                         ({"placements": [{"source": 2, "cells": [[0, 0]]}]}, "source 2 does not exist")]:
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        with pytest.raises(ControlsError, match=message):
            load_controls(tmp_path / "bad.json", (8, 8), 4)


def test_pad_controls_appends_empty_frames_or_cuts():
    feats = torch.randn(2, 3, 5, 4, 4)
    masks = (torch.rand(2, 3, 1, 4, 4) > 0.5).float()
    padded_feats, padded_masks = pad_controls(feats, masks, 5)
    assert padded_feats.shape == (2, 5, 5, 4, 4) and padded_masks.shape == (2, 5, 1, 4, 4)
    assert torch.equal(padded_feats[:, :3], feats) and torch.equal(padded_masks[:, :3], masks)  # frame k stays k
    assert not padded_feats[:, 3:].any() and not padded_masks[:, 3:].any()
    cut_feats, cut_masks = pad_controls(feats, masks, 2)
    assert torch.equal(cut_feats, feats[:, :2]) and torch.equal(cut_masks, masks[:, :2])
    same = pad_controls(feats, masks, 3)
    assert same[0] is feats and same[1] is masks
    assert pad_controls(feats[:, :0], masks[:, :0], 2)[1].shape == (2, 2, 1, 4, 4)  # no controls at all
    with pytest.raises(ValueError, match="feats has 3 frames but feats_masks 2"):
        pad_controls(feats, masks[:, :2], 4)


def test_pixel_boxes_of_controls_and_of_their_masks_agree():
    controls = Controls((4, 4), 3).place(0, [(1, 1)], frames=[0, 2], offset=(1, 2)).paste(0, [(0, 0)], (3, 3), [1])
    _, masks = controls.build(torch.randn(1, 2, 4, 4))
    expected = [[], [(36, 16, 48, 24)], [(36, 24, 48, 32)], [(36, 16, 48, 24)]]  # 32x48 image: cells 8 high, 12 wide
    assert pixel_boxes(controls, (32, 48), leading_frames=1) == expected
    assert pixel_boxes(masks, (32, 48), leading_frames=1) == expected  # [1 K 1 h w]
    assert pixel_boxes(masks[0, :, 0], (32, 48), leading_frames=1) == expected  # [K h w]
    with pytest.raises(ValueError, match="control masks"):
        pixel_boxes(torch.zeros(2, 3, 1, 4, 4), (32, 48))


def test_a_new_placement_kind_is_a_placement_and_one_registry_entry(tmp_path, monkeypatch):
    """A "scale" kind, defined here only: the file parser, the checks and build take it from the registry."""

    @dataclass
    class Scaled(Placement):
        factor: int = 1

        def destinations(self):  # each cell becomes a factor x factor block; the top-left cell moves by the offset
            top, left = min(r for r, _ in self.cells), min(c for _, c in self.cells)
            for frame, (dr, dc) in zip(self.frames, self.offsets):
                for r, c in self.cells:
                    for i in range(self.factor):
                        for j in range(self.factor):
                            yield frame, (r, c), (top + dr + (r - top) * self.factor + i,
                                                  left + dc + (c - left) * self.factor + j)

    def scale(value, *, source, cells, frames, label):
        top, left = min(r for r, _ in cells), min(c for _, c in cells)
        offset = (value["at"][0] - top, value["at"][1] - left)
        return Scaled(source, cells, frames, [offset] * len(frames), label, factor=int(value["factor"]))

    monkeypatch.setitem(PLACEMENT_KINDS, "scale", scale)
    data = {"placements": [{"cells": {"box": [1, 1, 3, 3]}, "frames": [1], "scale": {"factor": 2, "at": [4, 3]}},
                           {"cells": [[0, 0]], "frames": [0], "at": [7, 7]}]}
    (tmp_path / "c.json").write_text(json.dumps(data))
    controls, _ = load_controls(tmp_path / "c.json", (8, 8), 2)
    source = torch.randn(1, 5, 8, 8)
    feats, masks = controls.build(source)
    assert masks[0, 0, 0].nonzero().tolist() == [[7, 7]]
    assert sorted(map(tuple, masks[0, 1, 0].nonzero().tolist())) == [(r, c) for r in range(4, 8) for c in range(3, 7)]
    for r in (1, 2):
        for c in (1, 2):
            block = feats[0, 1, :, 4 + 2 * (r - 1):6 + 2 * (r - 1), 3 + 2 * (c - 1):5 + 2 * (c - 1)]
            assert torch.equal(block, source[0, :, r, c, None, None].expand(5, 2, 2))
    assert Controls((8, 8), 2).add_kind("scale", {"factor": 3, "at": [0, 0]}, 0, [(0, 0)], [1]).cells_by_frame()[1] \
        == [(r, c) for r in range(3) for c in range(3)]
    with pytest.raises(ControlsError, match="outside the 8x8 grid"):  # the grid checks apply to the new kind
        Controls((8, 8), 2).add_kind("scale", {"factor": 2, "at": [6, 6]}, 0, box(0, 0, 2, 2), [0])
    (tmp_path / "two.json").write_text(json.dumps({"placements": [{"cells": [[0, 0]], "at": [1, 1],
                                                                   "scale": {"factor": 2, "at": [0, 0]}}]}))
    with pytest.raises(ControlsError, match="only one of offset, at, path, move_to, scale"):
        load_controls(tmp_path / "two.json", (8, 8), 2)
    monkeypatch.undo()  # without the entry, the field is unknown again
    with pytest.raises(ControlsError, match=r"unknown field\(s\) \['scale'\]"):
        load_controls(tmp_path / "c.json", (8, 8), 2)


# Command line ----------------------------------------------------------------------------------------------------------
@pytest.fixture
def cli(golden_dir, tmp_path):
    folder = golden_dir / "tiny_ldm"
    rng = np.random.default_rng(0)
    for name in ("input.png", "other.png"):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(tmp_path / name)

    def run(controls, *extra, ckpt=folder / "model.pth", use_input=True):
        path = tmp_path / "controls.json"
        path.write_text(json.dumps(controls))
        command = [sys.executable, "generate.py", "--config", str(folder / "config.yaml"), "--ckpt", str(ckpt),
                   "--controls", str(path), "--num-frames", "4", "--out", str(tmp_path / "out.gif"), "--steps", "2",
                   *(["--input", str(tmp_path / "input.png")] if use_input else []), *extra,
                   f"model.autoencoder.ckpt_path={folder / 'ae.pth'}"]
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)

    return run, tmp_path


def test_cli_writes_video_and_strip_with_control_cells(cli):
    run, tmp_path = cli
    result = run({"placements": [{"source": 0, "cells": {"box": [2, 2, 4, 4]}, "frames": "all", "move_to": [0, 3]}]})
    assert result.returncode == 0, result.stderr
    assert "out.gif" in result.stdout and "out.png" in result.stdout
    with Image.open(tmp_path / "out.gif") as gif:
        assert gif.n_frames == 5 and gif.size == (32, 32)  # input frame + 4 generated
    strip = np.asarray(Image.open(tmp_path / "out.png").convert("RGB")).astype(int)
    red = (strip[..., 0] == 255) & (strip[..., 1] == 0) & (strip[..., 2] == 0)
    cell = 4  # 32 px / 8 cells; frames are pasted at x = 2 + k * 34
    x0 = 2 + 1 * 34 + 2 * cell  # first generated frame, box column 2
    assert red[2 + 2 * cell, x0:x0 + 2 * cell].all()  # top edge of the outlined cells
    assert not red[:, 2:34].any()  # the input frame carries no controls


def test_cli_composition_without_input(cli):
    run, tmp_path = cli
    result = run({"sources": ["other.png"], "placements": [{"cells": {"box": [0, 0, 2, 2]}, "frames": [0], "at": [5, 5]}]},
                 use_input=False)
    assert result.returncode == 0, result.stderr
    with Image.open(tmp_path / "out.gif") as gif:
        assert gif.n_frames == 4


@pytest.mark.parametrize("controls, kwargs, message", [
    ({"placements": [{"cells": [[8, 0]]}]}, {}, "outside the 8x8 latent grid"),
    ({"placements": [{"cells": [[0, 0]], "frames": [4]}]}, {}, "frame 4 is outside"),
    ({"sources": ["missing.png"], "placements": [{"cells": [[0, 0]]}]}, {}, "source not found"),
    ({"placements": [{"cells": [[0, 0]]}]}, {"use_input": False}, "no --input"),
])
def test_cli_bad_controls_fail_before_sampling(cli, controls, kwargs, message):
    run, _ = cli
    result = run(controls, **kwargs)
    assert result.returncode == 1 and message in result.stderr
    assert "generating" not in result.stderr


def test_cli_checkpoint_that_does_not_match_the_config(cli, golden_dir):
    run, _ = cli
    result = run({"placements": []}, ckpt=golden_dir / "tiny_ours" / "model.pth")
    assert result.returncode == 1 and "does not match" in result.stderr
