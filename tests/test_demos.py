"""Demos: loading (paths resolved like the original, then under the project root), the editors built the original way
and from a model, the original's gestures sent as real matplotlib events (non-interactive backend) and checked
against cells worked out by hand from the rules, the scripted API, and the notebooks executed headless.

Geometry of the tiny golden model: 32x32 frames, an 8x8 latent grid, cells of 4 pixels. Cell (row, col) covers
x in [4 col, 4 col + 4) and y in [4 row, 4 row + 4); its top-left corner is (4 col, 4 row). Placing a group at a
pointer P moves each corner by P - (mean of the corners) and floors the result to a cell. The pointers below are
chosen so that every shifted corner lies in the middle of a cell, far from any boundary.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

import demo.loading as loading  # noqa: E402
from conftest import tiny_paths  # noqa: E402
from dataset.frames import load_frame  # noqa: E402
from dataset.h5 import write_videos  # noqa: E402
from dataset.synthetic import render_video  # noqa: E402
from demo import Demo, DemoCompose  # noqa: E402
from demo.common import CHECKPOINTS, checkpoint_path, load_model_and_data  # noqa: E402
from demo.editor import FRAME_COLOURS  # noqa: E402
from lutils.logging import to_video  # noqa: E402
from model.generation import generate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GRID = 8


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("demo_data") / "test"
    write_videos(path, [render_video(12, 32, seed=i) for i in range(3)])
    return path


@pytest.fixture(scope="module")
def tiny(golden_dir, split):
    paths = tiny_paths(golden_dir)
    return load_model_and_data(paths["config"], paths["ckpt"], split, overrides=paths["overrides"])


@pytest.fixture
def demo(tiny):
    model, dataset, config = tiny
    editor = Demo.from_model(model, config, dataset, steps=2, num_frames=3)
    yield editor
    editor.close()


@pytest.fixture
def compose(tiny):
    model, dataset, config = tiny
    editor = DemoCompose.from_model(model, config, dataset, steps=2, num_frames=3)
    yield editor
    editor.close()


@pytest.fixture
def png(tmp_path) -> Path:
    """32x32 image: black left half, white right half."""
    pixels = np.zeros((32, 32, 3), dtype=np.uint8)
    pixels[:, 16:] = 255
    path = tmp_path / "half.png"
    Image.fromarray(pixels).save(path)
    return path


def cells(mask: torch.Tensor) -> list:
    """The sorted (row, col) cells set in a mask [h w]."""
    return sorted(map(tuple, torch.nonzero(mask).tolist()))


# Real matplotlib events, sent through the figure's canvas -------------------------------------------------------

def key(editor, name: str) -> None:
    from matplotlib.backend_bases import KeyEvent

    event = KeyEvent("key_press_event", editor.fig.canvas, name)
    editor.fig.canvas.callbacks.process(event.name, event)


def mouse(editor, kind: str, xy) -> None:
    """A mouse event at data (pixel) coordinates xy of the editor's image."""
    from matplotlib.backend_bases import MouseEvent

    x, y = editor.ax.transData.transform(xy)
    event = MouseEvent(kind, editor.fig.canvas, x, y, button=1)
    editor.fig.canvas.callbacks.process(event.name, event)


def drag(editor, *points) -> None:
    """Press at the first point, move through the others, release at the last."""
    mouse(editor, "button_press_event", points[0])
    for xy in points[1:]:
        mouse(editor, "motion_notify_event", xy)
    mouse(editor, "button_release_event", points[-1])


def click(editor, xy) -> None:
    drag(editor, xy)


# Gestures: animation ---------------------------------------------------------------------------------------------

def test_animation_gestures_give_the_originals_cells(demo, caplog):
    demo.run(index=1)
    f0 = demo.features[0]
    assert torch.allclose(f0, demo.model.get_features(demo.dataset[1][:1])[0])

    # A diagonal drag paints the cells under the pointer, not the rectangle it spans.
    key(demo, "c")
    drag(demo, (1.5, 1.5), (5.5, 5.5), (9.5, 9.5), (13.5, 13.5))
    assert demo.selected == [(0, 0), (1, 1), (2, 2), (3, 3)]
    assert cells(demo.masks[0]) == [(0, 0), (1, 1), (2, 2), (3, 3)]

    # c starts a new selection; an L-shaped drag: down column 0, then right along row 2.
    key(demo, "c")
    drag(demo, (2.5, 2.5), (2.5, 6.5), (2.5, 10.5), (6.5, 10.5), (10.5, 10.5))
    assert demo.selected == [(0, 0), (1, 0), (2, 0), (2, 1), (2, 2)]
    assert cells(demo.masks[0]) == [(0, 0), (1, 0), (1, 1), (2, 0), (2, 1), (2, 2), (3, 3)]  # entry 0: every selection

    # A move grabbed away from the centroid: the corners (0,0) (0,4) (0,8) (4,8) (8,8) have mean (2.4, 5.6); the group
    # follows the pointer and the release writes it where the last motion put it, P = (16.4, 11.6): shift (14, 6).
    key(demo, "m")
    drag(demo, (9.3, 9.7), (13.1, 10.9), (16.4, 11.6))
    expected = {(0, 0): (1, 3), (1, 0): (2, 3), (2, 0): (3, 3), (2, 1): (3, 4), (2, 2): (3, 5)}
    assert len(demo.masks) == 2 and cells(demo.masks[1]) == sorted(expected.values())
    for (r, c), (dr, dc) in expected.items():
        assert torch.equal(demo.features[1][:, dr, dc], f0[:, r, c])
    assert int((demo.features[1].abs().sum(0) > 0).sum()) == 5  # nothing else written

    # The next drag writes control frame 2: P = (8.4, 23.6), shift (6, 18).
    drag(demo, (16.4, 11.6), (8.4, 23.6))
    assert cells(demo.masks[2]) == [(4, 1), (5, 1), (6, 1), (6, 2), (6, 3)]

    # A new selection: its press restarts the control frames at 1. Cells (0, 6) and (0, 7): corners (24, 0) and
    # (28, 0), mean (26, 0). A bare click at (30, 14) (shift (4, 14)) puts (0, 6) at corner (28, 14) = cell (3, 7);
    # (0, 7) would land at corner (32, 14), off the grid: dropped, with a warning.
    key(demo, "c")
    drag(demo, (26.5, 2.5), (30.5, 2.5))
    assert demo.selected == [(0, 6), (0, 7)] and demo.frame_id == 1
    key(demo, "m")
    caplog.set_level("WARNING")
    click(demo, (30.0, 14.0))
    assert "off the 8x8 grid" in caplog.text and demo.message.startswith("warning")
    assert cells(demo.masks[1]) == sorted(list(expected.values()) + [(3, 7)])  # added to frame 1
    assert torch.equal(demo.features[1][:, 3, 7], f0[:, 0, 6])
    assert len(demo.masks) == 3 and demo.frame_id == 2

    # enter generates from the image and the control frames 1..K (frame k of the video follows control frame k)
    key(demo, "enter")
    assert demo.generated_frames.shape == (1, 4, 3, 32, 32)
    assert torch.equal(demo.generated_frames[0, 0], demo.images[0])
    key(demo, "x")
    assert len(demo.out_images) == 1 and isinstance(demo.out_images[0], Image.Image)


def test_grid_rules_worked_by_hand():
    from demo.grid import cell_under, place_group

    size, grid = (4, 4), (8, 8)
    assert cell_under((3.99, 0.0), size, grid) == (0, 0) and cell_under((4.0, 0.0), size, grid) == (0, 1)
    assert cell_under((-0.99, 5.0), size, grid) == (1, 0)  # int() truncates toward 0, as the original
    assert cell_under((-1.0, 5.0), size, grid) is None and cell_under((32.0, 0.0), size, grid) is None
    # corners (0, 0) and (8, 0), mean (4, 0); pointer (3.5, 2.0): corners at (-0.5, 2) -> (0, 0) and (7.5, 2) -> (0, 1)
    assert place_group([(0, 0), (0, 2)], (3.5, 2.0), size, grid) == ([((0, 0), (0, 0)), ((0, 2), (0, 1))], [])
    # pointer (29.0, 2.0): corners at (25, 2) -> (0, 6) and (33, 2): off the grid, dropped
    assert place_group([(0, 0), (0, 2)], (29.0, 2.0), size, grid) == ([((0, 0), (0, 6))], [(0, 2)])


def test_animation_events_outside_the_image_or_out_of_order(demo):
    demo.run(index=0)
    key(demo, "m")
    click(demo, (5.5, 5.5))  # nothing selected: an error shown in the figure, not raised, nothing written
    assert demo.message.startswith("error:") and "select" in demo.message and len(demo.masks) == 1
    key(demo, "c")
    drag(demo, (5.5, 5.5))
    assert demo.selected == [(1, 1)]
    mouse(demo, "button_release_event", (5.5, 5.5))  # a release without a press does nothing
    key(demo, "m")
    mouse(demo, "button_release_event", (5.5, 5.5))
    assert len(demo.masks) == 1
    key(demo, "q")  # matplotlib's own shortcuts are disconnected: 'q' does not close the figure
    assert plt.fignum_exists(demo.fig.number)


def test_the_image_is_placed_as_the_originals_imshow_places_it(demo):
    """Pixel i is centred on coordinate i, so the pointer reports what it reported in the original, and the cell
    boundary at x = 4 runs through the middle of pixel 4, as there (the original computes int(x) // 4)."""
    demo.run(index=0)
    assert demo.ax.get_xlim() == (-0.5, 31.5) and demo.ax.get_ylim() == (31.5, -0.5)
    assert tuple(demo.ax.images[0].get_extent()) == (-0.5, 31.5, 31.5, -0.5)
    key(demo, "c")
    drag(demo, (3.7, 0.2), (4.2, 0.2), (-0.4, 4.5))  # left half of pixel 4: cell 0; right half: cell 1; x -0.4: 0
    assert demo.selected == [(0, 0), (0, 1), (1, 0)]


# Gestures: composition -------------------------------------------------------------------------------------------

SERPENTINE_3X3 = [(8.5, 8.5), (12.5, 8.5), (16.5, 8.5), (16.5, 12.5), (12.5, 12.5), (8.5, 12.5), (8.5, 16.5),
                  (12.5, 16.5), (16.5, 16.5)]  # rows 2-4, cols 2-4; corners' mean (12, 12)


def test_compose_3x3_paste_and_a_second_instance(compose):
    compose.run(indices=[2])
    key(compose, "c")
    drag(compose, *SERPENTINE_3X3)
    assert sorted(compose.groups[0]) == [(r, c) for r in range(2, 5) for c in range(2, 5)]
    key(compose, "v")
    assert compose.view == "canvas" and len(compose.masks) == 1 and cells(compose.masks[0]) == []
    click(compose, (6.0, 22.0))  # shift (-6, 10): corners x 2, 6, 10 -> cols 0-2; y 18, 22, 26 -> rows 4-6
    first = [(r, c) for r in range(4, 7) for c in range(0, 3)]
    assert cells(compose.masks[0]) == first
    click(compose, (26.0, 6.0))  # shift (14, -6): cols 5-7, rows 0-2; the first instance stays
    second = [(r, c) for r in range(0, 3) for c in range(5, 8)]
    assert cells(compose.masks[0]) == sorted(first + second)
    features = compose.features[0]
    for r in range(2, 5):
        for c in range(2, 5):
            assert torch.equal(compose.controls[0][:, r + 2, c - 2], features[:, r, c])
            assert torch.equal(compose.controls[0][:, r - 2, c + 3], features[:, r, c])
    assert len(compose.masks) == 1  # pastes write control frame 0 only


def test_compose_the_originals_key_sequence_keeps_every_object(compose):
    compose.run(indices=[0, 1, 2])
    assert compose.sources == [0]
    key(compose, "c")
    drag(compose, (4.5, 4.5), (8.5, 4.5))  # object 1: cells (1, 1), (1, 2) of image 0; corners' mean (6, 4)
    key(compose, "n")
    assert compose.sources == [0, 1] and compose.mode == "s"
    key(compose, "c")
    drag(compose, (20.5, 24.5), (20.5, 28.5))  # object 2: cells (6, 5), (7, 5) of image 1; mean (20, 26)
    assert compose.groups == [[(1, 1), (1, 2)], [(6, 5), (7, 5)]] and compose.group_images == [0, 1]
    key(compose, "v")
    click(compose, (10.0, 2.0))  # object 1, shift (4, -2): (0, 2), (0, 3)
    key(compose, "m")
    drag(compose, (10.3, 2.3), (18.0, 6.0))  # frame 1, shift (12, 2): (1, 4), (1, 5)
    drag(compose, (18.0, 6.0), (26.0, 10.0))  # frame 2, shift (20, 6): (2, 6), (2, 7)
    key(compose, "n")  # next object; its frames restart at 1
    assert compose.cur_object == 1 and compose.mode == "v" and compose.ctrl_id == 0
    click(compose, (6.0, 20.0))  # object 2, shift (-14, -6): (4, 1), (5, 1)
    key(compose, "m")
    drag(compose, (6.0, 20.0), (14.0, 24.0))  # frame 1, shift (-6, -2): (5, 3), (6, 3)
    assert [cells(m) for m in compose.masks] == [[(0, 2), (0, 3), (4, 1), (5, 1)],
                                                 [(1, 4), (1, 5), (5, 3), (6, 3)],
                                                 [(2, 6), (2, 7)]]
    image0, image1 = compose.features
    for frame, dst, feature in [(0, (0, 2), image0[:, 1, 1]), (0, (0, 3), image0[:, 1, 2]), (2, (2, 7), image0[:, 1, 2]),
                                (0, (4, 1), image1[:, 6, 5]), (0, (5, 1), image1[:, 7, 5]), (1, (6, 3), image1[:, 7, 5])]:
        assert torch.equal(compose.controls[frame][:, dst[0], dst[1]], feature)
    key(compose, "n")  # no object left
    assert compose.mode == "s" and compose.message == "all objects placed"
    key(compose, "enter")
    assert compose.generated_frames.shape == (1, 3, 3, 32, 32)
    key(compose, "n")  # back on the images: the next index of `indices`
    assert compose.sources == [0, 1, 2] and compose.view == "source"


def test_compose_objects_take_the_features_of_the_image_they_were_selected_on(compose):
    """Two objects painted on image 0, then image 1 shown: object 2 still comes from image 0. (The original read
    object k's features from the k-th image shown, image 1 here, whatever image it was painted on.)"""
    compose.run(indices=[0, 1])
    key(compose, "c")
    click(compose, (5.5, 5.5))  # object 1: cell (1, 1) of image 0
    click(compose, (13.5, 13.5))  # a new press, object 2: cell (3, 3) of image 0
    key(compose, "n")
    assert compose.group_images == [0, 0] and compose.sources == [0, 1]
    key(compose, "v")
    key(compose, "n")  # straight to object 2
    click(compose, (25.0, 25.0))  # corner (12, 12) -> (25, 25): cell (6, 6)
    assert cells(compose.masks[0]) == [(6, 6)]
    assert torch.equal(compose.controls[0][:, 6, 6], compose.features[0][:, 3, 3])
    assert not torch.equal(compose.controls[0][:, 6, 6], compose.features[1][:, 3, 3])


def test_compose_next_image_after_the_indices_is_random_and_v_is_idempotent(compose):
    compose.run(indices=[2])
    key(compose, "n")
    key(compose, "n")
    assert compose.sources[0] == 2 and len(compose.sources) == 3 and all(0 <= s < 3 for s in compose.sources)
    key(compose, "m")
    click(compose, (5.5, 5.5))  # no object: an error in the figure, nothing written
    assert compose.message.startswith("error:") and compose.masks == []
    key(compose, "c")
    click(compose, (5.5, 5.5))
    key(compose, "v")
    key(compose, "v")
    assert len(compose.masks) == 1


# Scripted API ----------------------------------------------------------------------------------------------------

def test_animation_script_moves_by_offsets(demo):
    with pytest.raises(RuntimeError, match="run"):
        demo.select(cells=[(0, 0)])
    image = demo.run(index=1, show=False)
    assert demo.fig is None and torch.equal(image, demo.dataset[1][0])
    with pytest.raises(RuntimeError, match="select"):
        demo.move(offset=(0, 1))
    assert demo.select(rect=(9, 5, 14, 10)) == [(1, 2), (1, 3), (2, 2), (2, 3)]  # x 9..14 -> cols 2-3; y 5..10 -> rows 1-2
    assert demo.move(offset=(0, 1)) == 1
    assert demo.move(offset=(2, 1)) == 2
    feats, masks = demo.control_tensors()
    assert feats.shape == (1, 2, demo.model.feats_dim, GRID, GRID) and masks.shape == (1, 2, 1, GRID, GRID)
    assert cells(masks[0, 0, 0]) == [(1, 3), (1, 4), (2, 3), (2, 4)]
    assert cells(masks[0, 1, 0]) == [(3, 3), (3, 4), (4, 3), (4, 4)]
    assert torch.equal(feats[0, 1, :, 4, 4], demo.features[0][:, 2, 3])
    assert demo.move(xy=(16.0, 24.0)) == 3  # as a click: corners' mean (10, 6), shift (6, 18): rows 5-6, cols 3-4
    assert cells(demo.masks[3]) == [(5, 3), (5, 4), (6, 3), (6, 4)]
    demo.select(cells=[(6, 6)])  # a new selection restarts at frame 1
    assert demo.move(offset=(0, -1)) == 1 and (6, 5) in cells(demo.masks[1])
    assert demo.move(offset=(0, 5)) == 2  # entirely off the grid: an empty write, with a warning
    assert demo.message.startswith("warning") and cells(demo.masks[2]) == [(3, 3), (3, 4), (4, 3), (4, 4)]
    with pytest.raises(ValueError, match="outside"):
        demo.select(cells=[(8, 0)])


def test_animation_generate_and_image_files(demo, png):
    demo.run(index=2, show=False)
    demo.select(cells=[(3, 3), (3, 4)])
    for k in range(1, 4):
        demo.move(offset=(0, -k))
    calls = []
    video = demo.generate(on_call=calls.append)
    assert video.shape == (1, 4, 3, 32, 32) and video is demo.generated_frames
    assert torch.equal(video[0, 0], demo.source_image)  # frame 0 is the input image
    assert calls[0]["masks"][0, -3:].flatten(1).sum(1).tolist() == [2.0, 2.0, 2.0]  # the controls reach the model
    assert torch.equal(video, demo.generate())  # seeded
    assert demo.generate(num_frames=5).shape == (1, 6, 3, 32, 32)

    image = demo.run(image=png, show=False)  # image files load in [-1, 1]
    assert image[:, :, :16].max() == -1.0 and image[:, :, 16:].min() == 1.0
    assert demo.generate().shape == (1, 4, 3, 32, 32)  # no controls: still a video
    other = demo.run(index=0, frame=5, show=False)
    assert torch.equal(other, load_frame(f"{demo.dataset.data_path}:0:5", 32, 32))
    demo.run(show=False)
    assert demo.source in (0, 1, 2)  # no index: a random clip


def test_animation_snapshot_and_save(demo, tmp_path):
    demo.run(index=0, show=False)
    with pytest.raises(RuntimeError, match="generate"):
        demo.save(tmp_path / "early.gif")
    demo.select(cells=[(2, 2)])
    demo.move(offset=(1, 1))
    first = demo.snapshot()
    assert demo.out_images == [first] and len(np.unique(np.asarray(first).reshape(-1, 3), axis=0)) > 10
    demo.generate()
    written = demo.save(tmp_path / "a.gif") + demo.save(tmp_path / "a.mp4") + demo.save(tmp_path / "a.png")
    assert all(p.is_file() and p.stat().st_size > 0 for p in written)
    with Image.open(tmp_path / "a.gif") as gif:
        assert gif.n_frames == 4 and gif.size == (32, 32)
    assert demo.control_boxes() == [[], [(12, 12, 16, 16)], [], []]  # frame 1 follows control frame 1
    folder = demo.save(tmp_path / "frames")
    assert sorted(p.name for p in folder) == ["frame_000.png", "frame_001.png", "frame_002.png", "frame_003.png",
                                              "snapshot_000.png"]
    with pytest.raises(ValueError, match="suffix"):
        demo.save(tmp_path / "a.jpg")
    demo.reinit()  # the original's reinit: everything but the model
    assert demo.images == [] and demo.out_images == [] and len(demo.masks) == 1 and demo.fig is None


def test_compose_script_paste_move_and_generate(compose):
    compose.run(indices=[1, 2], show=False)
    with pytest.raises(RuntimeError, match="select"):
        compose.paste(at=(0, 0))
    compose.select(cells=[(2, 2), (2, 3)])
    compose.next_image()
    compose.select(rect=(0.5, 24.5, 3.5, 31.5))  # cells (6, 0), (7, 0) of image 1
    assert compose.paste(at=(4, 1)) == [(4, 1), (4, 2)]
    assert compose.move(at=(4, 2)) == 1 and compose.move(at=(4, 3)) == 2 and compose.move(at=(4, 4)) == 3
    assert compose.next_object() == 1
    assert compose.paste(xy=(2.0, 4.0)) == [(0, 0), (1, 0)]  # corners' mean (0, 26), shift (2, -22)
    feats, masks = compose.control_tensors()
    assert [cells(m[0]) for m in masks[0]] == [[(0, 0), (1, 0), (4, 1), (4, 2)], [(4, 2), (4, 3)], [(4, 3), (4, 4)],
                                               [(4, 4), (4, 5)]]
    assert torch.equal(feats[0, 0, :, 1, 0], compose.features[1][:, 7, 0])
    calls = []
    video = compose.generate(on_call=calls.append)
    assert video.shape == (1, 3, 3, 32, 32) and video is compose.generated_frames  # num_frames; no input frame
    assert "last 1 control frame(s) are not used" in compose.message
    assert calls[0]["masks"][0, -3:].flatten(1).sum(1).tolist() == [4.0, 2.0, 2.0]
    expected = generate(compose.model, 3, "cpu", initial_frames=None, feats=feats, feats_masks=masks, num_steps=2,
                        chunk_size=4, seed=0)  # noise context and reference, as the original
    assert torch.equal(video, expected)
    assert compose.generate(num_frames=4).shape == (1, 4, 3, 32, 32)
    canvas, pixels = compose.canvas(0), to_video(torch.stack(compose.images)).transpose(0, 2, 3, 1)
    assert (canvas[12:16, 0:4] == 255).all()  # an empty cell is white
    assert np.array_equal(canvas[16:20, 4:8], pixels[0, 8:12, 8:12])  # cell (4, 1) <- image 0 cell (2, 2)
    assert np.array_equal(canvas[4:8, 0:4], pixels[1, 28:32, 0:4])  # cell (1, 0) <- image 1 cell (7, 0)


def test_compose_sources_are_in_minus_one_one(compose, png):
    images = [compose.run(indices=[0], images=[png], show=False)]
    images.append(compose.images[compose.next_image()])
    assert compose.sources == [0, png] and torch.equal(images[0], compose.dataset[0][0])
    assert images[1][:, :, :16].max() == -1.0 and images[1][:, :, 16:].min() == 1.0  # not [0, 1]
    assert torch.allclose(torch.stack(compose.features), compose.model.get_features(torch.stack(images)))


# The display-free core -------------------------------------------------------------------------------------------

def test_the_editors_import_no_matplotlib():
    """demo, demo.common and the editors load without matplotlib; only showing or rendering (demo/view.py) needs it."""
    code = ("import sys\nimport demo, demo.common, demo.editor, demo.loading\nfrom demo import Demo, DemoCompose\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib'))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def test_a_front_end_drives_the_core_with_plain_calls_and_draws_its_scene(demo):
    """What a front end other than matplotlib uses: pointer and key calls in image pixels, change notifications,
    and scene() to draw. Selection (0, 0), (1, 1): corners (0, 0), (4, 4), mean (2, 2)."""
    scenes = []
    demo.add_listener(lambda: scenes.append(demo.scene()))
    demo.run(index=1, show=False)
    assert demo.fig is None and demo.ax is None
    assert demo.key_press("c") and not demo.key_press("q")
    demo.pointer_press((1.5, 1.5))
    demo.pointer_move((5.5, 5.5))
    demo.pointer_release()
    assert demo.selected == [(0, 0), (1, 1)] and scenes[-1].mode == "C"
    demo.key_press("m")
    demo.pointer_press((6.5, 2.5))  # shift (4.5, 0.5): (0, 1), (1, 2)
    demo.pointer_move((10.5, 6.5))  # shift (8.5, 4.5): (1, 2), (2, 3)
    dragging = scenes[-1]
    assert dragging.marks[-1].cells == [(1, 2), (2, 3)] and dragging.marks[-1].colour == "blue"
    assert len(demo.masks) == 1  # nothing written before the release
    demo.pointer_release()
    assert cells(demo.masks[1]) == [(1, 2), (2, 3)]
    assert torch.equal(demo.features[1][:, 2, 3], demo.features[0][:, 1, 1])
    demo.pointer_move((20.5, 20.5))  # a move without a press does nothing
    assert demo.moving is None

    scene = demo.scene()
    assert np.array_equal(scene.image, to_video(demo.images[0][None])[0].transpose(1, 2, 0))  # uint8 [H W 3]
    assert (scene.size, scene.grid, scene.cell_size) == (32, (GRID, GRID), (4.0, 4.0))
    assert scene.mode == "M" and "mode: move (m)" in scene.caption and "control frame 1" in scene.caption
    selection, current, frame1 = scene.marks
    assert (selection.cells, selection.fill, current.cells) == ([(0, 0), (1, 1)], True, [(0, 0), (1, 1)])
    assert (frame1.cells, frame1.colour, frame1.label) == ([(1, 2), (2, 3)], FRAME_COLOURS[1], "1")

    demo.key_press("c")  # a new, empty selection; moving it is an error shown in the scene, not raised
    demo.key_press("m")
    demo.pointer_press((5.5, 5.5))
    assert scenes[-1].caption.endswith("error: select cells (c, then drag over them) before moving them")
    count = len(scenes)
    demo.reinit()
    demo.key_press("c")
    assert len(scenes) == count + 1


def test_control_tensors_fitted_to_a_number_of_frames(demo, compose):
    demo.run(index=0, show=False)
    demo.select(cells=[(2, 2)])
    demo.move(offset=(0, 1))
    demo.move(offset=(0, 2))
    feats, masks = demo.control_tensors()
    longer = demo.control_tensors(num_frames=4)
    assert longer[0].shape == (1, 4, demo.model.feats_dim, GRID, GRID) and longer[1].shape == (1, 4, 1, GRID, GRID)
    assert torch.equal(longer[0][:, :2], feats) and torch.equal(longer[1][:, :2], masks) and not longer[1][:, 2:].any()
    assert torch.equal(demo.control_tensors(num_frames=1)[1], masks[:, :1])
    compose.run(indices=[0], show=False)
    assert compose.control_tensors() == (None, None) and compose.num_control_frames == 0
    empty_feats, empty_masks = compose.control_tensors(num_frames=2)
    assert empty_feats.shape == (1, 2, compose.model.feats_dim, GRID, GRID) and not empty_masks.any()
    assert compose.control_boxes() == []


def test_editors_write_their_controls_as_a_controls_file_and_load_it_back(demo, compose):
    from model.controls import Controls, controls_from_dict

    demo.run(index=0, show=False)
    demo.select(cells=[(2, 2), (2, 3), (3, 2)])
    demo.move(offset=(0, 1))
    demo.move(xy=(30, 30))  # two of three cells land off the grid: only (2, 2) is placed, at (7, 7)
    demo.move(offset=(1, -1))
    content = demo.controls_file(["input"])
    assert content["grid"] == [GRID, GRID] and content["sources"] == ["input"]
    assert [(p["cells"], p["frames"], p["offset"]) for p in content["placements"]] == [
        ([[2, 2], [2, 3], [3, 2]], [0], [0, 1]), ([[2, 2]], [1], [5, 5]), ([[2, 2], [2, 3], [3, 2]], [2], [1, -1])]
    controls, sources = controls_from_dict(content, demo.grid, 3)
    expected = demo.control_tensors(num_frames=3)
    built = controls.build(demo.features[0][None])  # the file gives generate.py the editor's tensors
    assert torch.equal(built[0], expected[0]) and torch.equal(built[1], expected[1])
    demo.load_controls(Controls(demo.grid, 3), ["input"])  # clearing keeps the image
    assert demo.num_control_frames == 0 and demo.images
    assert demo.load_controls(controls, sources) == 3
    again = demo.control_tensors(num_frames=3)
    assert torch.equal(again[0], expected[0]) and torch.equal(again[1], expected[1])
    assert demo.selected == [(2, 2), (2, 3), (3, 2)] and demo.frame_id == 4  # moving goes on from frame 4
    with pytest.raises(ValueError, match="source 0 is 'other.png'"):
        demo.load_controls(controls, ["other.png"])

    compose.run(indices=[0, 1], show=False)
    compose.select(cells=[(1, 1), (1, 2)])
    compose.next_image()
    compose.select(cells=[(5, 5)])
    compose.paste(at=(0, 0))
    compose.move(at=(1, 1))
    compose.next_object()
    compose.paste(at=(4, 4))
    compose.move(at=(6, 6))
    content = compose.controls_file(["a.png", "b.png"])
    assert [(p["source"], p["frames"]) for p in content["placements"]] == [(0, [0]), (0, [1]), (1, [0]), (1, [1])]
    controls, sources = controls_from_dict(content, compose.grid, 3)
    expected = compose.control_tensors(num_frames=3)
    built = controls.build(torch.stack(compose.features))
    assert torch.equal(built[0], expected[0]) and torch.equal(built[1], expected[1])
    images = list(compose.images)
    assert compose.load_controls(controls, images, sources) == 2
    again = compose.control_tensors(num_frames=3)
    assert torch.equal(again[0], expected[0]) and torch.equal(again[1], expected[1])
    assert compose.groups == [[(1, 1), (1, 2)], [(5, 5)]] and compose.group_images == [0, 1]
    assert compose.sources == ["a.png", "b.png"] and compose.view == "canvas"


def test_undo_takes_back_the_last_write_and_the_next_move_rewrites_its_frame(demo, compose):
    demo.run(index=0, show=False)
    demo.select(cells=[(2, 2), (2, 3)])
    demo.move(offset=(0, 1))
    demo.move(offset=(0, 2))
    before = demo.control_tensors()
    demo.move(offset=(1, 2))
    assert demo.undo() == 3 and demo.num_control_frames == 2 and demo.frame_id == 3
    after = demo.control_tensors()
    assert torch.equal(after[0], before[0]) and torch.equal(after[1], before[1])
    assert demo.move(offset=(2, 2)) == 3 and cells(demo.masks[3]) == [(4, 4), (4, 5)]
    for _ in range(3):
        demo.undo()
    assert demo.num_control_frames == 0 and cells(demo.masks[0]) == [(2, 2), (2, 3)]  # the selection stays
    with pytest.raises(RuntimeError, match="nothing to undo"):
        demo.undo()

    compose.run(indices=[0, 1], show=False)
    compose.select(cells=[(1, 1)])
    compose.paste(at=(0, 0))
    compose.paste(at=(5, 5))  # a second instance
    compose.move(at=(1, 1))
    assert compose.undo() == 1 and compose.ctrl_id == 0 and compose.num_control_frames == 1
    assert compose.undo() == 0 and cells(compose.masks[0]) == [(0, 0)]
    assert [frame for frame, _, _ in compose.placements] == [0]
    assert compose.move(at=(2, 2)) == 1 and cells(compose.masks[1]) == [(2, 2)]


# Built the original way ------------------------------------------------------------------------------------------

def fake_project(golden_dir: Path, root: Path, split: Path, name: str = "clevrer") -> Path:
    """A folder laid out like the original repository: configs/<name>.yaml (the tiny config, with relative data and
    autoencoder paths), model_weights/<name>/model.pth, the autoencoder file and the test split."""
    text = (golden_dir / "tiny_ldm" / "config.yaml").read_text()
    text = text.replace("data_root: ./data/none", "data_root: ./data/tiny").replace("ckpt_path: ae.pth",
                                                                                   "ckpt_path: ./weights/ae.pth")
    assert "./data/tiny" in text and "./weights/ae.pth" in text
    (root / "configs").mkdir(parents=True)
    (root / "configs" / f"{name}.yaml").write_text(text)
    (root / "model_weights" / name).mkdir(parents=True)
    shutil.copy(golden_dir / "tiny_ldm" / "model.pth", root / "model_weights" / name / "model.pth")
    (root / "weights").mkdir()
    shutil.copy(golden_dir / "tiny_ldm" / "ae.pth", root / "weights" / "ae.pth")
    shutil.copytree(split, root / "data" / "tiny" / "test")
    return root


def test_editors_built_the_original_way_from_the_working_directory(golden_dir, split, tmp_path, monkeypatch, png):
    root = fake_project(golden_dir, tmp_path / "project", split)
    monkeypatch.chdir(root)
    editor = Demo("clevrer", random_time=False, device="cpu", steps=2, num_frames=2, past_horizon=-1)
    assert editor.dataset.data_path == root / "data" / "tiny" / "test" and len(editor.dataset) == 3
    assert editor.grid_size == GRID and editor.ts == 4 and editor.im_res == 32 and not editor.model.training
    golden = torch.load(golden_dir / "tiny_ldm" / "model.pth", weights_only=True)["model"]
    name = next(k for k in golden if k.startswith("vector_field_regressor.") and golden[k].ndim == 2)
    assert torch.equal(editor.model.state_dict()[name], golden[name])
    editor.reinit()
    editor.run(index=2)
    assert editor.fig is not None and editor.source == 2
    editor.close()

    composer = DemoCompose("clevrer", source_image=str(png), steps=2, num_frames=2)
    composer.run(indices=None)
    image = composer.images[0]  # the source image, in [-1, 1] (the original's [0, 1] was its bug)
    assert image[:, :, :16].max() == -1.0 and image[:, :, 16:].min() == 1.0
    composer.next_image()
    assert composer.sources == [str(png), str(png)]
    composer.close()

    # the original's first argument was `config`; the original notebook's run(indices=[0, 1, 2]) with a
    # source_image shows it as index 0, and index 1 does not exist
    composer = DemoCompose(config="clevrer", source_image=str(png), steps=2)
    composer.run(indices=[0, 1, 2])
    assert torch.equal(composer.images[0], image) and composer.dataset is None
    with pytest.raises(IndexError, match="only image is index 0"):
        composer.next_image()
    composer.close()


def test_checkpoints_is_the_registry_the_user_edits(golden_dir, split, tmp_path, monkeypatch):
    root = fake_project(golden_dir, tmp_path / "project", split, name="mine")
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "configs").mkdir(parents=True)
    shutil.copy(root / "configs" / "mine.yaml", elsewhere / "configs" / "mine.yaml")
    monkeypatch.chdir(elsewhere)
    with pytest.raises(FileNotFoundError, match=r"CHECKPOINTS\['mine'\] = "):
        Demo("mine")  # a config without a registered checkpoint says which entry to add
    monkeypatch.setitem(CHECKPOINTS, "mine", str(root / "model_weights" / "mine" / "model.pth"))
    monkeypatch.setattr(loading, "PROJECT_ROOT", root)  # data and autoencoder paths fall back to this root
    editor = Demo("mine", steps=2)
    assert editor.dataset.data_path == root / "data" / "tiny" / "test"
    editor.close()
    monkeypatch.setitem(CHECKPOINTS, "mine", "./model_weights/mine/missing.pth")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        Demo("mine")


def test_load_errors_name_the_missing_file(golden_dir, split, tmp_path, monkeypatch):
    paths = tiny_paths(golden_dir)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as error:
        Demo("nonexistent")
    message = str(error.value)
    assert "configs/nonexistent.yaml" in message and "clevrer" in message and "CHECKPOINTS['nonexistent']" in message
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_model_and_data(paths["config"], tmp_path / "missing.pth", split, overrides=paths["overrides"])
    with pytest.raises(FileNotFoundError, match="no_data"):
        load_model_and_data(paths["config"], paths["ckpt"], tmp_path / "no_data", overrides=paths["overrides"])
    with pytest.raises(FileNotFoundError, match="data/none/test") as error:  # the config's data_root
        load_model_and_data(paths["config"], paths["ckpt"], overrides=paths["overrides"])
    assert "data.data_root" in str(error.value) and "Demo.from_config(name, data_path=PATH)" in str(error.value)
    assert str(ROOT) in str(error.value)  # every folder searched is named


def test_load_from_another_directory_with_a_project_root(golden_dir, split, tmp_path, monkeypatch):
    root = fake_project(golden_dir, tmp_path / "project", split)
    monkeypatch.chdir(tmp_path)
    editor = Demo.from_config("clevrer", project_root=root, steps=2, num_frames=2)
    assert editor.config.path == root / "configs" / "clevrer.yaml"
    assert torch.equal(editor.dataset[1][0], load_frame(f"{root / 'data' / 'tiny' / 'test'}:1:0", 32, 32))


def test_checkpoint_paths_follow_the_original_then_the_weights_root(tmp_path, monkeypatch):
    assert set(CHECKPOINTS) == {"bair", "clevrer", "epic"}
    assert CHECKPOINTS["bair"] == "./model_weights/bair/model.pth"  # the original's dict
    monkeypatch.chdir(tmp_path)
    assert checkpoint_path("bair") == tmp_path / "model_weights" / "bair" / "model.pth"  # as the original: the CWD
    monkeypatch.setenv("CAGE_WEIGHTS_ROOT", str(tmp_path / "weights"))
    assert checkpoint_path("epic") == tmp_path / "weights" / "model_weights" / "epic" / "model.pth"
    assert checkpoint_path("epic", project_root="/x") == Path("/x/model_weights/epic/model.pth")
    (tmp_path / "model_weights" / "epic").mkdir(parents=True)
    (tmp_path / "model_weights" / "epic" / "model.pth").write_bytes(b"")
    assert checkpoint_path("epic") == tmp_path / "model_weights" / "epic" / "model.pth"  # the first that exists
    with pytest.raises(KeyError, match="CHECKPOINTS"):
        checkpoint_path("nope")


# Notebooks -------------------------------------------------------------------------------------------------------

def execute(nb, cwd: Path, timeout: int = 300):
    from nbclient import NotebookClient

    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors, "\n".join(f"{o.ename}: {o.evalue}" for o in errors)
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    return text, [o for o in outputs if "image/png" in o.get("data", {})]


EVENTS_CELL = '''
from matplotlib.backend_bases import KeyEvent, MouseEvent
def key(name):
    event = KeyEvent("key_press_event", demo.fig.canvas, name)
    demo.fig.canvas.callbacks.process(event.name, event)
def drag(*points):
    kinds = ["button_press_event"] + ["motion_notify_event"] * (len(points) - 1) + ["button_release_event"]
    for kind, xy in zip(kinds, list(points) + [points[-1]]):
        x, y = demo.ax.transData.transform(xy)
        event = MouseEvent(kind, demo.fig.canvas, x, y, button=1)
        demo.fig.canvas.callbacks.process(event.name, event)
'''

SUMMARY_CELL = '''
import json
print("SUMMARY " + json.dumps({"class": type(demo).__name__, "video": list(demo.generated_frames.shape),
    "masks": [sorted(map(tuple, m.nonzero().tolist())) for m in demo.masks], "sources": demo.sources
    if hasattr(demo, "sources") else demo.source, "images": len(demo.images)}))
'''


def original_notebook(name: str, golden_dir: Path, tmp_path: Path, gestures: str):
    """The root notebook, run in a project folder whose 'clevrer' is the tiny model: the registration of the tiny
    checkpoint in CHECKPOINTS comes first, a non-interactive backend replaces the widget one, and the gestures a
    user would make in the figure are sent as matplotlib events after the cell that shows it."""
    import nbformat

    nb = nbformat.read(ROOT / f"{name}.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.source for c in code] == ORIGINAL_CODE[name]  # the original's code, device aside
    split = tmp_path / "data"
    rng = np.random.default_rng(0)
    write_videos(split, [rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8) for _ in range(48)])
    project = fake_project(golden_dir, tmp_path / "project", split)
    weights = tmp_path / "elsewhere" / "tiny.pth"
    weights.parent.mkdir()
    shutil.move(project / "model_weights" / "clevrer" / "model.pth", weights)
    register = nbformat.v4.new_code_cell(f"import demo.common\ndemo.common.CHECKPOINTS['clevrer'] = {str(weights)!r}")
    show = next(i for i, c in enumerate(nb.cells) if "%matplotlib widget" in c.source)
    nb.cells[show].source = nb.cells[show].source.replace("%matplotlib widget", "%matplotlib agg")
    nb.cells.insert(show + 1, nbformat.v4.new_code_cell(EVENTS_CELL + gestures))
    nb.cells.insert(0, register)
    nb.cells.append(nbformat.v4.new_code_cell(SUMMARY_CELL))
    text, images = execute(nb, project)
    summary = json.loads(text.split("SUMMARY ", 1)[1].splitlines()[0])
    return summary, images


ORIGINAL_CODE = {
    "demo": ['from demo import Demo\nfrom demo.common import show_video',
             'import torch\n\ndemo = Demo("clevrer", device="cuda:0" if torch.cuda.is_available() else "cpu", '
             'num_frames=12, random_time=False)',
             '%matplotlib widget\ndemo.reinit()\ndemo.run(index=47)',
             '%matplotlib inline\n_ = show_video(demo.generated_frames)'],
    "demo_compose": ['from demo import DemoCompose as Demo\nfrom demo.common import show_video',
                     'import torch\n\ndemo = Demo("clevrer", source_image=None, device="cuda:0" if '
                     'torch.cuda.is_available() else "cpu", steps=10, num_frames=9, past_horizon=4, random_time=False)',
                     '%matplotlib widget\ndemo.reinit()\ndemo.run(indices=[0, 1, 2])',
                     '%matplotlib inline\n_ = show_video(demo.generated_frames)'],
}


@pytest.mark.slow
def test_original_animation_notebook_runs_unchanged(golden_dir, tmp_path):
    gestures = ('key("c"); drag((4.5, 4.5), (8.5, 4.5))\n'  # cells (1, 1), (1, 2): corners' mean (6, 4)
                'key("m"); drag((6.5, 4.5), (10.0, 6.0)); drag((10.0, 6.0), (14.0, 6.0))\n'  # shifts (4, 2), (8, 2)
                'key("enter")\n')
    summary, images = original_notebook("demo", golden_dir, tmp_path, gestures)
    assert summary["class"] == "Demo" and summary["sources"] == 47 and summary["images"] == 1
    assert summary["video"] == [1, 13, 3, 32, 32]  # the image and 12 generated frames
    assert summary["masks"] == [[[1, 1], [1, 2]], [[1, 2], [1, 3]], [[1, 3], [1, 4]]]
    assert len(images) >= 13  # show_video: one figure per frame


@pytest.mark.slow
def test_original_composition_notebook_runs_unchanged(golden_dir, tmp_path):
    gestures = ('key("c"); drag((4.5, 4.5), (8.5, 4.5))\n'  # object 1 of image 0: (1, 1), (1, 2)
                'key("n"); key("c"); drag((20.5, 24.5), (20.5, 28.5))\n'  # object 2 of image 1: (6, 5), (7, 5)
                'key("v"); drag((10.0, 2.0))\n'  # paste object 1: (0, 2), (0, 3)
                'key("m"); drag((10.0, 2.0), (18.0, 6.0))\n'  # frame 1: (1, 4), (1, 5)
                'key("n"); drag((6.0, 20.0))\n'  # paste object 2: (4, 1), (5, 1)
                'key("m"); drag((6.0, 20.0), (14.0, 24.0))\n'  # frame 1: (5, 3), (6, 3)
                'key("enter")\n')
    summary, images = original_notebook("demo_compose", golden_dir, tmp_path, gestures)
    assert summary["class"] == "DemoCompose" and summary["sources"] == [0, 1] and summary["images"] == 2
    assert summary["video"] == [1, 9, 3, 32, 32]
    assert summary["masks"] == [[[0, 2], [0, 3], [4, 1], [5, 1]], [[1, 4], [1, 5], [5, 3], [6, 3]]]
    assert len(images) >= 9


def run_our_notebook(name: str, golden_dir: Path, split: Path, out: Path, backend: str):
    import nbformat

    paths = tiny_paths(golden_dir)
    nb = nbformat.read(ROOT / "demo" / f"{name}.ipynb", as_version=4)
    assert nb.metadata.kernelspec.name == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    for key_ in ("CONFIG", "CKPT", "DATA_PATH", "DEVICE", "NUM_FRAMES", "STEPS", "OUTPUT_DIR"):
        assert f"\n{key_} = " in code[0].source, key_
        assert not any(f"{key_} = " in c.source for c in code[1:]), key_  # parameters only in the first cell
    code[0].source += (f"\nCONFIG = {str(paths['config'])!r}\nOVERRIDES = {paths['overrides']!r}\n"
                       f"CKPT = {str(paths['ckpt'])!r}\nDATA_PATH = {str(split)!r}\nDEVICE = 'cpu'\n"
                       f"INDEX = 1\nSOURCES = [0, 2]\nNUM_FRAMES = 3\nSTEPS = 2\nBACKEND = {backend!r}\n"
                       f"OUTPUT_DIR = {str(out)!r}\n")
    return execute(nb, ROOT / "demo", timeout=120)


def test_our_animation_notebook_runs_headless(golden_dir, split, tmp_path):
    text, images = run_our_notebook("demo", golden_dir, split, tmp_path, backend="auto")
    assert "latent grid: 8x8" in text and "3 videos" in text
    assert "generated video: (1, 4, 3, 32, 32)" in text
    assert len(images) >= 2 + 4  # snapshot, contact sheet, 4 frames
    assert (tmp_path / "animation.gif").is_file() and (tmp_path / "animation.png").is_file()
    assert len(list((tmp_path / "animation_frames").glob("frame_*.png"))) == 4


def test_our_composition_notebook_runs_headless(golden_dir, split, tmp_path):
    text, images = run_our_notebook("demo_compose", golden_dir, split, tmp_path, backend="inline")
    assert "matplotlib backend: inline" in text
    assert "2 objects from images [0, 1]" in text and "generated video: (1, 3, 3, 32, 32)" in text
    assert len(images) >= 1 + 2 + 3  # editor figure, snapshot, contact sheet, 3 frames
    assert (tmp_path / "composition.gif").is_file()
    assert len(list((tmp_path / "composition_frames").glob("frame_*.png"))) == 3
