"""Demos: loading (paths independent of the CWD), the animation and composition editors driven through their methods
and through synthetic matplotlib events (no display), and both notebooks executed headless with a tiny model."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from dataset.frames import load_frame  # noqa: E402
from dataset.h5 import write_videos  # noqa: E402
from dataset.synthetic import render_video  # noqa: E402
from lutils.logging import to_video  # noqa: E402
from demo.common import CHECKPOINTS, checkpoint_path, load_model_and_data  # noqa: E402
from demo.demo import Demo  # noqa: E402
from demo.demo_compose import DemoCompose  # noqa: E402
from model.controls import ControlsError  # noqa: E402
from model.generation import generate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
GRID = 8  # tiny_ldm: 32x32 frames, 8x8 latent grid, cells of 4 pixels
CELL = 4


def tiny_paths(golden_dir: Path) -> dict:
    folder = golden_dir / "tiny_ldm"
    return {"config": folder / "config.yaml", "ckpt": folder / "model.pth",
            "overrides": [f"model.autoencoder.ckpt_path={folder / 'ae.pth'}"]}


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
    return Demo(model, config, dataset, steps=2, num_frames=3)


@pytest.fixture
def compose(tiny):
    model, dataset, config = tiny
    return DemoCompose(model, config, dataset, steps=2, num_frames=3)


@pytest.fixture
def png(tmp_path) -> Path:
    """32x32 image: black left half, white right half."""
    pixels = np.zeros((32, 32, 3), dtype=np.uint8)
    pixels[:, 16:] = 255
    path = tmp_path / "half.png"
    Image.fromarray(pixels).save(path)
    return path


def control_cells(masks: torch.Tensor) -> list:
    """Per control frame, the sorted (row, col) cells whose mask is set."""
    return [sorted(map(tuple, torch.nonzero(m[0]).tolist())) for m in masks[0]]


# Loading -------------------------------------------------------------------------------------------------------

def fake_project(golden_dir: Path, root: Path, split: Path) -> Path:
    """A project folder with configs/clevrer.yaml (the tiny config, relative data and AE paths), its default
    checkpoint at model_weights/clevrer/model.pth, the AE file and the data."""
    text = (golden_dir / "tiny_ldm" / "config.yaml").read_text()
    text = text.replace("data_root: ./data/none", "data_root: ./data/tiny").replace("ckpt_path: ae.pth",
                                                                                   "ckpt_path: ./weights/ae.pth")
    assert "./data/tiny" in text and "./weights/ae.pth" in text
    (root / "configs").mkdir(parents=True)
    (root / "configs" / "clevrer.yaml").write_text(text)
    (root / "model_weights" / "clevrer").mkdir(parents=True)
    shutil.copy(golden_dir / "tiny_ldm" / "model.pth", root / "model_weights" / "clevrer" / "model.pth")
    (root / "weights").mkdir()
    shutil.copy(golden_dir / "tiny_ldm" / "ae.pth", root / "weights" / "ae.pth")
    shutil.copytree(split, root / "data" / "tiny" / "test")
    return root


def test_load_model_and_data_from_another_cwd(golden_dir, split, tmp_path, monkeypatch, caplog):
    root = fake_project(golden_dir, tmp_path / "project", split)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    caplog.set_level("WARNING")
    demo = Demo.from_config("clevrer", project_root=root, steps=2, num_frames=2)
    model, dataset, config = demo.model, demo.dataset, demo.config
    assert config.path == root / "configs" / "clevrer.yaml"
    assert dataset.data_path == root / "data" / "tiny" / "test" and len(dataset) == 3
    assert not model.training and model.state_res == (GRID, GRID)
    golden = torch.load(golden_dir / "tiny_ldm" / "model.pth", weights_only=True)["model"]
    key = next(k for k in golden if k.startswith("vector_field_regressor.") and golden[k].ndim == 2)
    assert torch.equal(model.state_dict()[key], golden[key])
    assert not [r for r in caplog.records if "not found" in r.getMessage()]  # AE path resolved under the root
    # dataset clips: no flip, no augmentation, frame 0
    assert torch.equal(dataset[1][0], load_frame(f"{root / 'data' / 'tiny' / 'test'}:1:0", 32, 32))


def test_load_errors_name_the_missing_file(golden_dir, split, tmp_path, monkeypatch):
    paths = tiny_paths(golden_dir)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"configs/nonexistent\.yaml"):
        load_model_and_data("nonexistent")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_model_and_data(paths["config"], tmp_path / "missing.pth", split, overrides=paths["overrides"])
    with pytest.raises(FileNotFoundError, match="no_data"):
        load_model_and_data(paths["config"], paths["ckpt"], tmp_path / "no_data", overrides=paths["overrides"])
    with pytest.raises(FileNotFoundError, match="data/none/test"):  # the config's data_root, under the project
        load_model_and_data(paths["config"], paths["ckpt"], overrides=paths["overrides"])


def test_checkpoint_defaults_follow_the_weights_root(tmp_path, monkeypatch):
    assert set(CHECKPOINTS) == {"bair", "clevrer", "epic"}
    assert checkpoint_path("bair") == ROOT / "model_weights" / "bair" / "model.pth"
    monkeypatch.setenv("CAGE_WEIGHTS_ROOT", str(tmp_path))
    assert checkpoint_path("epic") == tmp_path / "model_weights" / "epic" / "model.pth"
    assert checkpoint_path("epic", project_root="/x") == Path("/x/model_weights/epic/model.pth")


# Demo (animation) ----------------------------------------------------------------------------------------------

def test_demo_moves_write_one_control_frame_each(demo, tiny):
    model, dataset, _ = tiny
    image = demo.run(index=1)
    assert torch.equal(image, dataset[1][0])
    assert torch.allclose(demo.source_feats, model.get_features(image[None]))
    # x 9..14 -> columns 2, 3; y 5..10 -> rows 1, 2
    assert demo.select(rect=(9, 5, 14, 10)) == [(1, 2), (1, 3), (2, 2), (2, 3)]
    assert demo.move((9, 5), (13, 5)) == 0  # one cell right
    assert demo.move((9, 5), (13, 13)) == 1  # two down, one right
    feats, masks = demo.build_controls()
    assert feats.shape == (1, 3, model.feats_dim, GRID, GRID) and masks.shape == (1, 3, 1, GRID, GRID)
    assert control_cells(masks) == [[(1, 3), (1, 4), (2, 3), (2, 4)], [(3, 3), (3, 4), (4, 3), (4, 4)], []]
    source = demo.source_feats[0]
    for (r, c) in [(1, 2), (2, 3)]:
        assert torch.equal(feats[0, 0, :, r, c + 1], source[:, r, c])
        assert torch.equal(feats[0, 1, :, r + 2, c + 1], source[:, r, c])
    assert feats[0, 2].abs().sum() == 0

    # a new selection restarts at control frame 0; the first part's controls stay
    demo.select(cells=[(6, 6)])
    assert demo.move(offset=(0, -1)) == 0
    _, masks = demo.build_controls()
    assert control_cells(masks)[0] == [(1, 3), (1, 4), (2, 3), (2, 4), (6, 5)]
    demo.reset()
    assert demo.controls.placements == [] and demo.selected == [] and demo.next_frame == 0


def test_demo_clips_moves_at_the_border_and_checks_order(demo):
    with pytest.raises(RuntimeError, match="run"):
        demo.select(cells=[(0, 0)])
    demo.run(index=0)
    with pytest.raises(RuntimeError, match="select"):
        demo.move(offset=(0, 1))
    demo.select(cells=[(0, 6), (0, 7)])
    demo.move(offset=(1, 1))  # (0, 7) would land at column 8: dropped
    assert demo.controls.cells_by_frame()[0] == [(1, 7)]
    with pytest.raises(ControlsError, match="outside"):
        demo.move(offset=(0, 5))
    with pytest.raises(ValueError, match="outside"):
        demo.select(cells=[(8, 0)])


def test_demo_generate_animates_the_input(demo):
    demo.run(index=2)
    demo.select(cells=[(3, 3), (3, 4)])
    for k in range(1, 4):
        demo.move(offset=(0, -k))
    calls = []
    video = demo.generate(on_call=calls.append)
    assert video.shape == (1, 4, 3, 32, 32) and video is demo.generated_frames
    assert torch.equal(video[0, 0], demo.source_image)  # frame 0 is the input image
    assert torch.isfinite(video).all() and video[0, 1:].std() > 0
    masked = [call["masks"][0, -3:].flatten(1).sum(1).tolist() for call in calls]  # the controls reach the model
    assert masked[0] == [2.0, 2.0, 2.0]
    again = demo.generate()
    assert torch.equal(video, again)  # seeded
    assert demo.generate(num_frames=5).shape == (1, 6, 3, 32, 32)


def test_demo_runs_on_an_image_file_in_minus_one_one(demo, png):
    image = demo.run(image=png)
    assert image.shape == (3, 32, 32)
    assert image[:, :, :16].max() == -1.0 and image[:, :, 16:].min() == 1.0
    assert demo.source_feats.shape[-2:] == (GRID, GRID)
    assert demo.generate().shape == (1, 4, 3, 32, 32)  # no controls: still a video
    other = demo.run(index=0, frame=5)
    assert torch.equal(other, load_frame(f"{demo.dataset.data_path}:0:5", 32, 32))


def test_demo_snapshot_and_save(demo, tmp_path):
    demo.run(index=0)
    with pytest.raises(RuntimeError, match="generate"):
        demo.save(tmp_path / "early.gif")
    demo.select(cells=[(2, 2)])
    demo.move(offset=(1, 1))
    first = demo.snapshot()
    assert isinstance(first, Image.Image) and demo.out_images == [first]
    assert len(np.unique(np.asarray(first).reshape(-1, 3), axis=0)) > 10  # a real picture
    demo.generate()
    written = demo.save(tmp_path / "a.gif") + demo.save(tmp_path / "a.mp4") + demo.save(tmp_path / "a.png")
    assert all(p.is_file() and p.stat().st_size > 0 for p in written)
    with Image.open(tmp_path / "a.gif") as gif:
        assert gif.n_frames == 4 and gif.size == (32, 32)
    with Image.open(tmp_path / "a.png") as sheet:  # one row of 4 frames
        assert sheet.size == (4 * 34 + 2, 36)
    folder = demo.save(tmp_path / "frames")
    assert sorted(p.name for p in folder) == ["frame_000.png", "frame_001.png", "frame_002.png", "frame_003.png",
                                              "snapshot_000.png"]
    with pytest.raises(ValueError, match="suffix"):
        demo.save(tmp_path / "a.jpg")


def key(editor, name: str) -> None:
    """A key press on the editor's figure, through matplotlib's event machinery."""
    from matplotlib.backend_bases import KeyEvent

    event = KeyEvent("key_press_event", editor.figure.canvas, name)
    editor.figure.canvas.callbacks.process(event.name, event)


def drag(editor, axes: str, from_xy, to_xy) -> None:
    """Press at from_xy and release at to_xy, in data (pixel) coordinates of the editor's axes `axes`."""
    from matplotlib.backend_bases import MouseEvent

    for kind, xy in (("button_press_event", from_xy), ("button_release_event", to_xy)):
        x, y = editor._axes[axes].transData.transform(xy)
        event = MouseEvent(kind, editor.figure.canvas, x, y, button=1)
        editor.figure.canvas.callbacks.process(event.name, event)


def test_demo_matplotlib_layer(demo):
    demo.run(index=0)
    figure = demo.connect()
    try:
        figure.canvas.draw()
        key(demo, "c")
        drag(demo, "image", (5, 5), (10, 6))  # select: cols 1-2, row 1
        assert demo.selected == [(1, 1), (1, 2)] and demo.mode == "select"
        key(demo, "m")
        drag(demo, "image", (5, 5), (5, 13))  # two rows down
        drag(demo, "image", (5, 5), (5, 17))
        assert demo.mode == "move" and demo.controls.cells_by_frame()[:2] == [[(3, 1), (3, 2)], [(4, 1), (4, 2)]]
        key(demo, "x")
        assert len(demo.out_images) == 1
        key(demo, "enter")
        assert demo.generated_frames.shape == (1, 4, 3, 32, 32)
        drag(demo, "image", (5, 5), (40, 40))  # release outside the axes: ignored
        assert demo.next_frame == 2
        key(demo, "c")
        assert demo.selected == [] and demo.next_frame == 0
        drag(demo, "image", (30, 30), (31, 31))
        assert demo.selected == [(7, 7)]
        key(demo, "m")
        drag(demo, "image", (30, 30), (30, 50))  # lands outside the axes: ignored
        drag(demo, "image", (30, 30), (30, 22))
        assert demo.controls.cells_by_frame()[0] == [(3, 1), (3, 2), (5, 7)]
        demo.mode = "move"
        demo.selected = []
        drag(demo, "image", (30, 30), (30, 22))  # an error is shown, not raised
        assert demo.message.startswith("error:")
    finally:
        plt.close(figure)


# DemoCompose ---------------------------------------------------------------------------------------------------

def test_compose_sources_are_in_minus_one_one(compose, tiny, png):
    model, dataset, _ = tiny
    images = compose.run(indices=[0], images=[png])
    assert images.shape == (2, 3, 32, 32) and compose.sources == [0, png]
    assert torch.equal(images[0], dataset[0][0])
    assert images[1, :, :, :16].max() == -1.0 and images[1, :, :, 16:].min() == 1.0  # not [0, 1]
    assert torch.allclose(compose.source_feats, model.get_features(images))


def test_compose_paste_and_move_build_controls(compose):
    compose.run([0, 2])
    with pytest.raises(RuntimeError, match="select"):
        compose.paste(at=(0, 0))
    compose.select(rect=(4, 4, 11, 7))  # cols 1-2, row 1 of source 0
    with pytest.raises(RuntimeError, match="paste"):
        compose.move(offset=(0, 1))
    assert compose.paste(at=(5, 5)) == (4, 4)
    assert compose.move(offset=(0, 1)) == 1
    assert compose.move((22, 22), (22, 30)) == 2  # canvas pixels: two rows down
    assert compose.next_source() == 1 and compose.selected == []
    compose.select(cells=[(6, 0), (7, 0)])
    compose.paste(xy=(1, 1))  # top-left cell (0, 0)
    feats, masks = compose.build_controls()
    assert control_cells(masks) == [[(0, 0), (1, 0), (5, 5), (5, 6)], [(5, 6), (5, 7)], [(7, 5), (7, 6)]]
    source = compose.source_feats
    for frame, dst, src in [(0, (5, 5), (0, 1, 1)), (0, (5, 6), (0, 1, 2)), (2, (7, 6), (0, 1, 2)),
                            (0, (0, 0), (1, 6, 0)), (0, (1, 0), (1, 7, 0))]:
        assert torch.equal(feats[0, frame, :, dst[0], dst[1]], source[src[0], :, src[1], src[2]])
    assert [o["source"] for o in compose.objects] == [0, 1]

    compose.paste(at=(2, 2))  # re-place the current object: its old paste goes
    assert compose.controls.cells_by_frame()[0] == [(2, 2), (3, 2), (5, 5), (5, 6)]
    compose.select(cells=[(0, 0)])  # a selection after a paste is a new object of the current source
    compose.paste(at=(7, 7))
    assert len(compose.objects) == 3 and compose.objects[-1]["source"] == 1
    assert compose.next_source() == 0  # cycles through the given sources
    canvas, pixels = compose.canvas(0), to_video(compose.source_images).transpose(0, 2, 3, 1)
    assert canvas.shape == (32, 32, 3) and (canvas[16:20, 16:20] == 255).all()  # an empty cell is white
    assert np.array_equal(canvas[20:24, 20:24], pixels[0, 4:8, 4:8])  # cell (5, 5) <- source 0 cell (1, 1)
    assert np.array_equal(canvas[8:12, 8:12], pixels[1, 24:28, 0:4])  # cell (2, 2) <- source 1 cell (6, 0)


def test_compose_generate_uses_no_input_frame(compose):
    compose.run([1, 2])
    compose.select(cells=[(2, 2), (2, 3)])
    compose.paste(at=(4, 1))
    compose.move(offset=(0, 1))
    compose.move(offset=(0, 2))
    compose.move(offset=(0, 3))  # a fourth control frame: the video gets 4 frames
    calls = []
    video = compose.generate(on_call=calls.append)
    assert video.shape == (1, 4, 3, 32, 32) and video is compose.generated_frames  # no input frame prepended
    assert torch.isfinite(video).all()
    assert calls[0]["masks"][0, -3:].flatten(1).sum(1).tolist() == [2.0, 2.0, 2.0]
    feats, masks = compose.build_controls()
    expected = generate(compose.model, 4, "cpu", initial_frames=None, feats=feats, feats_masks=masks, num_steps=2,
                        chunk_size=4, seed=0)  # noise context and reference, as the original
    assert torch.equal(video, expected)


def test_compose_random_sources(compose):
    compose.run()
    assert compose.random_sources and len(compose.sources) == 1 and 0 <= compose.sources[0] < 3
    compose.next_source()
    compose.next_source()
    assert len(compose.sources) == 3 and compose.current_source == 2
    assert compose.source_feats.shape[0] == 3


def test_compose_matplotlib_layer_snapshot_and_save(compose, tmp_path):
    compose.run([0, 1])
    figure = compose.connect()
    try:
        figure.canvas.draw()
        key(compose, "c")
        drag(compose, "source", (1, 1), (6, 2))  # cells (0, 0), (0, 1)
        key(compose, "v")
        drag(compose, "canvas", (9, 9), (9, 9))  # paste at (2, 2)
        key(compose, "m")
        drag(compose, "canvas", (9, 9), (13, 9))  # frame 1: one column right
        key(compose, "n")
        assert compose.current_source == 1 and compose.mode == "select"
        drag(compose, "source", (30, 30), (30, 30))
        key(compose, "v")
        drag(compose, "canvas", (1, 30), (1, 30))
        assert compose.controls.cells_by_frame()[:2] == [[(2, 2), (2, 3), (7, 0)], [(2, 3), (2, 4)]]
        key(compose, "x")
        key(compose, "enter")
        assert compose.generated_frames.shape == (1, 3, 3, 32, 32) and len(compose.out_images) == 1
    finally:
        plt.close(figure)
    written = compose.save(tmp_path / "c.gif") + compose.save(tmp_path / "frames")
    assert [p.name for p in written] == ["c.gif", "frame_000.png", "frame_001.png", "frame_002.png", "snapshot_000.png"]
    assert all(p.stat().st_size > 0 for p in written)


# Notebooks -----------------------------------------------------------------------------------------------------

def run_notebook(name: str, golden_dir: Path, split: Path, out: Path, backend: str):
    import nbformat
    from nbclient import NotebookClient

    paths = tiny_paths(golden_dir)
    nb = nbformat.read(ROOT / "demo" / f"{name}.ipynb", as_version=4)
    assert nb.metadata.kernelspec.name == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    for key in ("CONFIG", "CKPT", "DATA_PATH", "DEVICE", "NUM_FRAMES", "STEPS", "OUTPUT_DIR"):
        assert f"\n{key} = " in code[0].source, key
        assert not any(f"{key} = " in c.source for c in code[1:]), key  # parameters only in the first cell
    code[0].source += (f"\nCONFIG = {str(paths['config'])!r}\nOVERRIDES = {paths['overrides']!r}\n"
                       f"CKPT = {str(paths['ckpt'])!r}\nDATA_PATH = {str(split)!r}\nDEVICE = 'cpu'\n"
                       f"INDEX = 1\nSOURCES = [0, 2]\nNUM_FRAMES = 3\nSTEPS = 2\nBACKEND = {backend!r}\n"
                       f"OUTPUT_DIR = {str(out)!r}\n")
    start = time.time()
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "demo")}}).execute()
    elapsed = time.time() - start
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    return elapsed, text, images


def test_demo_notebook_runs_headless(golden_dir, split, tmp_path):
    elapsed, text, images = run_notebook("demo", golden_dir, split, tmp_path, backend="auto")
    assert elapsed < 60
    assert "latent grid: 8x8" in text and "3 videos" in text
    assert "generated video: (1, 4, 3, 32, 32)" in text
    assert len(images) >= 2 + 4  # snapshot, contact sheet, 4 frames
    assert (tmp_path / "animation.gif").is_file() and (tmp_path / "animation.png").is_file()
    assert len(list((tmp_path / "animation_frames").glob("frame_*.png"))) == 4


def test_compose_notebook_runs_headless(golden_dir, split, tmp_path):
    elapsed, text, images = run_notebook("demo_compose", golden_dir, split, tmp_path, backend="inline")
    assert elapsed < 60
    assert "matplotlib backend: inline" in text
    assert "2 objects from sources [0, 1]" in text and "generated video: (1, 3, 3, 32, 32)" in text
    assert len(images) >= 1 + 2 + 3  # static editor figure, snapshot, contact sheet, 3 frames
    assert (tmp_path / "composition.gif").is_file()
    assert len(list((tmp_path / "composition_frames").glob("frame_*.png"))) == 3
