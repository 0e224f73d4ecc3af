"""lutils.logging (to_video/to_image), lutils.logger (Logger, metrics.jsonl, wandb offline/disabled) and lutils.media."""
from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lutils.configuration import Configuration
from lutils.logger import Logger, read_metrics
from lutils.logging import to_image, to_video
from lutils.media import (as_uint8_frames, contact_sheet, save_contact_sheet, write_gif, write_mp4,
                          write_video)

ROOT = Path(__file__).resolve().parents[1]

# Flat, clearly distinct colours (consecutive frames differ, so GIF writers cannot merge them).
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (200, 200, 40), (30, 120, 220), (128, 128, 128), (10, 10, 10)]
RED = np.array([255, 0, 0], dtype=np.uint8)


def flat_frames(colours, height: int, width: int) -> np.ndarray:
    """uint8 [T H W 3], frame t filled with colours[t]."""
    frames = np.empty((len(colours), height, width, 3), dtype=np.uint8)
    for t, colour in enumerate(colours):
        frames[t] = colour
    return frames


def decode_mp4(path: Path):
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    return np.stack(frames), rate


def read_gif(path: Path):
    with Image.open(path) as image:
        assert image.format == "GIF"
        frames, durations = [], []
        for i in range(image.n_frames):
            image.seek(i)
            frames.append(np.array(image.convert("RGB")))
            durations.append(image.info.get("duration"))
        loop = image.info.get("loop")
    return np.stack(frames), durations, loop


def strict_json(line: str):
    """json.loads that refuses the non-standard NaN/Infinity tokens."""
    def reject(token):
        raise ValueError(f"non-standard JSON constant {token}")

    return json.loads(line, parse_constant=reject)


def files_under(path: Path) -> list:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    """Keep wandb silent, offline-safe, and out of the home directory."""
    home = tmp_path / "wandb_home"
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(home / var.lower()))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_DIR", raising=False)
    return home


# --------------------------------------------------------------------------------------------------------------------
# to_video / to_image
# --------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_to_video_inverts_data_normalisation_for_all_256_values(dtype):
    values = np.arange(256, dtype=np.uint8)
    x = torch.from_numpy(values).to(dtype) / 127.5 - 1  # the data pipeline's mapping
    out = to_video(x)
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, values)
    image = to_image(x)
    assert isinstance(image, torch.Tensor) and image.dtype == torch.uint8
    np.testing.assert_array_equal(image.numpy(), values)


def test_to_video_closed_form_rounding():
    x = torch.tensor([-1.0, -0.999, 0.0, 0.5, 0.999, 1.0])
    expected = np.array([round((v + 1) * 127.5) for v in x.tolist()], dtype=np.uint8)
    np.testing.assert_array_equal(to_video(x), expected)
    assert to_video(torch.tensor([0.0])).tolist() == [128]  # 127.5 rounds to even -> 128


def test_to_video_clamps_out_of_range():
    x = torch.tensor([-100.0, -1.5, -1.0000001, 1.0000001, 1.5, 7.0, float("inf"), float("-inf")])
    np.testing.assert_array_equal(to_video(x), [0, 0, 0, 255, 255, 255, 255, 0])


@pytest.mark.parametrize("shape", [(2, 3, 3, 4, 5), (3, 4, 5, 3), (4, 5), (7,)])
def test_to_video_keeps_layout(shape, rng):
    x = torch.from_numpy(rng.uniform(-1.2, 1.2, size=shape).astype(np.float32))
    out = to_video(x)
    assert out.shape == shape
    expected = np.round((np.clip(x.numpy(), -1, 1) + 1) * 127.5)
    assert np.abs(out.astype(np.float64) - expected).max() <= 0  # elementwise, same positions
    # non-contiguous input (a permuted view) keeps its logical layout too
    if x.ndim >= 2:
        view = x.transpose(0, -1)
        np.testing.assert_array_equal(to_video(view), out.swapaxes(0, -1))


def test_to_video_does_not_modify_input_and_accepts_grad():
    x = torch.tensor([-2.0, 0.3, 2.0], requires_grad=True)
    before = x.detach().clone()
    to_video(x)
    to_image(x)
    assert torch.equal(x.detach(), before)


# --------------------------------------------------------------------------------------------------------------------
# Logger
# --------------------------------------------------------------------------------------------------------------------
def test_metrics_jsonl_two_steps(tmp_path):
    run_dir = tmp_path / "run"
    logger = Logger("proj", "r1", run_dir=run_dir)
    logger.log("loss", 0.5)
    logger.log("lr", 1e-4)
    first = logger.finalize_logs(10)
    logger.log("loss", 0.25)
    second = logger.finalize_logs(20)
    logger.close()
    assert first == {"loss": 0.5, "lr": 1e-4}
    assert second == {"loss": 0.25}  # the buffer was cleared: no stale "lr"
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2
    records = [strict_json(line) for line in lines]
    assert set(records[0]) == {"step", "time", "loss", "lr"}
    assert set(records[1]) == {"step", "time", "loss"}
    assert records[0]["step"] == 10 and records[0]["loss"] == 0.5 and records[0]["lr"] == 1e-4
    assert records[1]["step"] == 20 and records[1]["loss"] == 0.25
    assert isinstance(records[0]["time"], float) and records[0]["time"] <= records[1]["time"]
    assert read_metrics(run_dir / "metrics.jsonl") == records


def test_finalize_with_empty_buffer_writes_nothing(tmp_path):
    with Logger("proj", "r", run_dir=tmp_path) as logger:
        logger.log("a", 1.0)
        logger.finalize_logs(1)
        assert logger.finalize_logs(2) == {}
        assert logger.finalize_logs(3) == {}
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1]


def test_metrics_file_appends_across_loggers(tmp_path):
    for step in (1, 2):
        with Logger("proj", "r", run_dir=tmp_path) as logger:
            logger.log("x", float(step))
            logger.finalize_logs(step)
    assert [(r["step"], r["x"]) for r in read_metrics(tmp_path / "metrics.jsonl")] == [(1, 1.0), (2, 2.0)]


def test_tensor_and_numpy_scalars_become_python_numbers(tmp_path):
    with Logger("proj", "r", run_dir=tmp_path) as logger:
        logger.log("t0", torch.tensor(0.75))
        logger.log("t1", torch.tensor([[2.5]]))
        logger.log("tint", torch.tensor(3))
        logger.log("tbf16", torch.tensor(1.5, dtype=torch.bfloat16))
        logger.log("tgrad", torch.tensor(0.5, requires_grad=True) * 2)
        logger.log("np32", np.float32(0.125))
        logger.log("npint", np.int64(4))
        logged = logger.finalize_logs(5)
    expected = {"t0": 0.75, "t1": 2.5, "tint": 3.0, "tbf16": 1.5, "tgrad": 1.0, "np32": 0.125, "npint": 4}
    assert logged == expected
    for key in ("t0", "t1", "tint", "tbf16", "tgrad", "np32"):
        assert type(logged[key]) is float, key
    assert type(logged["npint"]) is int
    record = strict_json((tmp_path / "metrics.jsonl").read_text())
    assert {k: record[k] for k in expected} == expected
    assert type(record["tint"]) is float


@pytest.mark.parametrize("value", [torch.zeros(2), torch.ones(2, 3), torch.zeros(0)])
def test_non_scalar_tensor_raises(tmp_path, value):
    with Logger("proj", "r", run_dir=tmp_path) as logger:
        with pytest.raises(ValueError):
            logger.log("bad", value)


def test_non_finite_values_are_written_as_null_and_read_back_as_nan(tmp_path):
    """One JSON convention for the project (lutils.io.json_safe): NaN and inf are null, which is standard JSON; they
    read back as NaN (null does not say which non-finite value it was)."""
    with Logger("proj", "r", run_dir=tmp_path) as logger:
        logger.log("nan", float("nan"))
        logger.log("inf", float("inf"))
        logger.log("ninf", torch.tensor(float("-inf")))
        logger.log("ok", 1.0)
        logger.finalize_logs(1)
    text = (tmp_path / "metrics.jsonl").read_text()
    raw = strict_json(text)  # still standard JSON
    assert raw["nan"] is None and raw["inf"] is None and raw["ninf"] is None and raw["ok"] == 1.0
    (record,) = read_metrics(tmp_path / "metrics.jsonl")
    assert all(math.isnan(record[key]) for key in ("nan", "inf", "ninf"))
    assert record["ok"] == 1.0 and record["step"] == 1


def test_read_metrics_reads_the_older_string_spelling(tmp_path):
    """Files written before json_safe spelled non-finite values as strings; they still read back as floats."""
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "a": "nan", "b": "inf", "c": "-inf", "d": 0.5}\n\n')
    (record,) = read_metrics(path)
    assert math.isnan(record["a"]) and record["b"] == math.inf and record["c"] == -math.inf and record["d"] == 0.5


def test_messages_go_to_console_and_log_file(tmp_path, capsys):
    with Logger("proj", "r", run_dir=tmp_path) as logger:
        logger.info("hello info")
        logger.warning("careful now")
        logger.debug("debug detail")
    err = capsys.readouterr().err
    assert "hello info" in err and "careful now" in err
    log_text = (tmp_path / "log.txt").read_text()
    assert "hello info" in log_text and "careful now" in log_text and "WARNING" in log_text
    assert "debug detail" in log_text


def test_rank_nonzero_writes_nothing(tmp_path, capsys, wandb_env):
    run_dir = tmp_path / "run"
    logger = Logger("proj", "r", rank=1, run_dir=run_dir, use_wandb=True, wandb_mode="offline")
    logger.info("should not appear")
    logger.warning("nor this")
    logger.log("loss", 1.0)
    assert logger.finalize_logs(1) == {}
    logger.close()
    assert not run_dir.exists()
    assert "should not appear" not in capsys.readouterr().err
    assert not wandb_env.exists() or not any(p.name.startswith("offline-run") for p in wandb_env.rglob("*"))


def test_wandb_offline_run(tmp_path, wandb_env):
    run_dir = tmp_path / "run"
    logger = Logger("proj", "offline-test", use_wandb=True, config={"model": {"sigma": 1e-7}},
                    run_dir=run_dir, wandb_mode="offline")
    assert logger.wandb_mode == "offline"
    logger.log("loss", 0.5)
    logger.finalize_logs(1)
    logger.log("loss", torch.tensor(0.25))
    logger.finalize_logs(2)
    logger.close()
    runs = [p for p in (run_dir / "wandb").iterdir() if p.is_dir() and p.name.startswith("offline-run-")]
    assert len(runs) == 1
    assert list(runs[0].glob("run-*.wandb")), files_under(runs[0])
    assert [(r["step"], r["loss"]) for r in read_metrics(run_dir / "metrics.jsonl")] == [(1, 0.5), (2, 0.25)]


def test_wandb_offline_receives_configuration_as_nested_dict(tmp_path, wandb_env):
    """The training script hands the whole Configuration to the logger; wandb must see real nested values."""
    import wandb

    cfg = Configuration(ROOT / "configs" / "bair.yaml")
    logger = Logger("proj", "cfg-test", use_wandb=True, config=cfg, run_dir=tmp_path / "run", wandb_mode="offline")
    try:
        seen = dict(wandb.run.config)
    finally:
        logger.close()
    assert seen["name"] == "bair"
    assert isinstance(seen["model"], dict), type(seen["model"])
    assert seen["model"]["sigma"] == 1e-7
    assert seen["model"]["vector_field_regressor"]["state_res"] == [16, 16]


@pytest.mark.parametrize("how", ["mode-disabled", "use_wandb-false-env-offline"])
def test_wandb_disabled_still_writes_metrics(tmp_path, wandb_env, monkeypatch, how):
    run_dir = tmp_path / "run"
    if how == "mode-disabled":
        logger = Logger("proj", "r", use_wandb=True, run_dir=run_dir, wandb_mode="disabled")
    else:
        monkeypatch.setenv("WANDB_MODE", "offline")
        logger = Logger("proj", "r", use_wandb=False, run_dir=run_dir)
    assert logger.wandb_mode == "disabled"
    logger.log("loss", 2.0)
    logger.finalize_logs(3)
    logger.close()
    assert not (run_dir / "wandb").exists()
    assert [(r["step"], r["loss"]) for r in read_metrics(run_dir / "metrics.jsonl")] == [(3, 2.0)]


def test_wandb_mode_from_environment(tmp_path, wandb_env, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    with Logger("proj", "r", use_wandb=True, run_dir=tmp_path) as logger:
        assert logger.wandb_mode == "disabled"
    assert not (tmp_path / "wandb").exists()


@pytest.mark.parametrize("mode", ["bogus", "OFFLINE", " offline"])
def test_invalid_wandb_mode_raises(wandb_env, mode):
    with pytest.raises(ValueError, match="mode"):
        Logger("proj", "r", use_wandb=True, wandb_mode=mode)


def test_logger_without_run_dir_writes_no_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with Logger("proj", "r") as logger:
        logger.log("loss", 1.0)
        assert logger.finalize_logs(1) == {"loss": 1.0}
        assert logger.metrics_path is None
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------------------------------
# as_uint8_frames
# --------------------------------------------------------------------------------------------------------------------
def test_as_uint8_frames_layouts(rng):
    hwc = rng.integers(0, 256, size=(2, 5, 6, 3), dtype=np.uint8)
    np.testing.assert_array_equal(as_uint8_frames(hwc), hwc)
    np.testing.assert_array_equal(as_uint8_frames(hwc.transpose(0, 3, 1, 2)), hwc)
    np.testing.assert_array_equal(as_uint8_frames(torch.from_numpy(hwc)), hwc)
    floats = torch.from_numpy(hwc.transpose(0, 3, 1, 2).astype(np.float32)) / 127.5 - 1
    np.testing.assert_array_equal(as_uint8_frames(floats), hwc)
    with pytest.raises(TypeError):
        as_uint8_frames(hwc.astype(np.float32))
    with pytest.raises(ValueError):
        as_uint8_frames(hwc[0])
    with pytest.raises(ValueError):
        as_uint8_frames(np.zeros((2, 4, 5, 6), dtype=np.uint8))


# --------------------------------------------------------------------------------------------------------------------
# mp4 / gif
# --------------------------------------------------------------------------------------------------------------------
def test_mp4_round_trip_flat_colours(tmp_path):
    frames = flat_frames(COLOURS, 32, 48)
    path = write_mp4(tmp_path / "clip.mp4", frames, fps=8)
    assert path == tmp_path / "clip.mp4"
    decoded, rate = decode_mp4(path)
    assert decoded.shape == (len(COLOURS), 32, 48, 3)
    assert Fraction(rate) == 8
    means = decoded.reshape(len(COLOURS), -1, 3).mean(axis=1)
    np.testing.assert_allclose(means, np.array(COLOURS, dtype=np.float64), atol=8)
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


def test_mp4_from_float_tensor_and_odd_size_is_padded(tmp_path):
    frames = flat_frames(COLOURS[:4], 33, 47)
    tensor = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1  # [T 3 H W] in [-1,1]
    decoded, _ = decode_mp4(write_mp4(tmp_path / "odd.mp4", tensor, fps=12.5))
    assert decoded.shape == (4, 34, 48, 3)
    means = decoded.reshape(4, -1, 3).mean(axis=1)
    np.testing.assert_allclose(means, np.array(COLOURS[:4], dtype=np.float64), atol=8)


def test_gif_round_trip_flat_colours(tmp_path):
    frames = flat_frames(COLOURS, 20, 30)
    path = write_gif(tmp_path / "clip.gif", frames, fps=8)
    decoded, durations, loop = read_gif(path)
    assert decoded.shape == (len(COLOURS), 20, 30, 3)
    assert np.abs(decoded.astype(int) - frames.astype(int)).max() <= 4
    # GIF stores delays in centiseconds: 1000/fps = 125 ms is kept to the nearest 10 ms
    assert all(abs(d - 125) <= 10 for d in durations), durations
    assert loop == 0


@pytest.mark.parametrize("suffix", [".mp4", ".gif", ".MP4", ".Gif"])
def test_write_video_dispatches_on_suffix(tmp_path, suffix):
    frames = flat_frames(COLOURS[:3], 16, 16)
    path = write_video(tmp_path / f"v{suffix}", frames)
    if suffix.lower() == ".mp4":
        decoded, _ = decode_mp4(path)
        assert path.read_bytes()[4:8] == b"ftyp"
    else:
        decoded, _, _ = read_gif(path)
        assert path.read_bytes()[:6] in (b"GIF89a", b"GIF87a")
    assert decoded.shape == (3, 16, 16, 3)


@pytest.mark.parametrize("name", ["v.avi", "v.png", "v"])
def test_write_video_rejects_other_suffixes(tmp_path, name):
    with pytest.raises(ValueError):
        write_video(tmp_path / name, flat_frames(COLOURS[:2], 8, 8))
    assert list(tmp_path.iterdir()) == []


def test_video_write_failure_keeps_old_file(tmp_path, monkeypatch):
    target = tmp_path / "clip.gif"
    target.write_bytes(b"old gif")

    def failing_save(self, fp, *args, **kwargs):
        Path(fp).write_bytes(b"GIF89a-partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        write_gif(target, flat_frames(COLOURS[:2], 8, 8))
    with pytest.raises(OSError, match="disk full"):
        save_contact_sheet(tmp_path / "sheet.png", flat_frames(COLOURS[:2], 8, 8)[None])
    assert target.read_bytes() == b"old gif"
    assert [p.name for p in tmp_path.iterdir()] == ["clip.gif"]


# --------------------------------------------------------------------------------------------------------------------
# Contact sheets
# --------------------------------------------------------------------------------------------------------------------
def cell(sheet: np.ndarray, r: int, c: int, height: int, width: int, pad: int) -> np.ndarray:
    y, x = pad + r * (height + pad), pad + c * (width + pad)
    return sheet[y:y + height, x:x + width]


@pytest.mark.parametrize("rows, cols, height, width, pad", [(2, 3, 5, 7, 2), (1, 4, 6, 4, 0), (3, 1, 4, 4, 3)])
def test_contact_sheet_geometry_and_pixels(rng, rows, cols, height, width, pad):
    videos = rng.integers(0, 256, size=(rows, cols, height, width, 3), dtype=np.uint8)
    sheet = contact_sheet(videos, padding=pad, background=255)
    assert isinstance(sheet, Image.Image) and sheet.mode == "RGB"
    assert sheet.size == (cols * (width + pad) + pad, rows * (height + pad) + pad)
    array = np.array(sheet)
    mask = np.ones(array.shape[:2], dtype=bool)
    for r in range(rows):
        for c in range(cols):
            np.testing.assert_array_equal(cell(array, r, c, height, width, pad), videos[r, c])
            y, x = pad + r * (height + pad), pad + c * (width + pad)
            mask[y:y + height, x:x + width] = False
    assert (array[mask] == 255).all()  # everything else is background


def test_contact_sheet_float_tensor_input_and_background(rng):
    frames = rng.integers(0, 256, size=(2, 3, 4, 5, 3), dtype=np.uint8)
    tensor = torch.from_numpy(frames).permute(0, 1, 4, 2, 3).float() / 127.5 - 1  # [b l 3 H W]
    array = np.array(contact_sheet(tensor, padding=1, background=40))
    for r in range(2):
        for c in range(3):
            np.testing.assert_array_equal(cell(array, r, c, 4, 5, 1), frames[r, c])
    assert (array[0] == 40).all() and (array[:, 0] == 40).all()
    # a single [l 3 H W] tensor is one row
    single = np.array(contact_sheet(tensor[1], padding=1))
    assert single.shape == (4 + 2, 3 * 6 + 1, 3)
    np.testing.assert_array_equal(cell(single, 0, 2, 4, 5, 1), frames[1, 2])


def test_contact_sheet_rows_of_different_length(rng):
    long = rng.integers(0, 256, size=(3, 4, 4, 3), dtype=np.uint8)
    short = rng.integers(0, 256, size=(1, 4, 4, 3), dtype=np.uint8)
    array = np.array(contact_sheet([long, short], padding=2, background=255))
    assert array.shape == (2 * 6 + 2, 3 * 6 + 2, 3)
    np.testing.assert_array_equal(cell(array, 1, 0, 4, 4, 2), short[0])
    assert (cell(array, 1, 1, 4, 4, 2) == 255).all() and (cell(array, 1, 2, 4, 4, 2) == 255).all()


def test_contact_sheet_draws_red_boxes_in_place():
    rows, cols, height, width, pad = 2, 3, 16, 16, 2
    videos = np.full((rows, cols, height, width, 3), 90, dtype=np.uint8)
    box = (4, 8, 12, 16)  # x0, y0, x1, y1: the pixel cells [4,12) x [8,16), i.e. the bottom-middle cell pair
    boxes = [[[], [], []], [[], [], [box]]]
    array = np.array(contact_sheet(videos, padding=pad, boxes=boxes))

    expected_red = np.zeros(array.shape[:2], dtype=bool)
    x0, y0, x1, y1 = box
    oy, ox = pad + 1 * (height + pad), pad + 2 * (width + pad)
    expected_red[oy + y0, ox + x0:ox + x1] = True      # top edge
    expected_red[oy + y1 - 1, ox + x0:ox + x1] = True  # bottom edge
    expected_red[oy + y0:oy + y1, ox + x0] = True      # left edge
    expected_red[oy + y0:oy + y1, ox + x1 - 1] = True  # right edge
    is_red = (array == RED).all(axis=-1)
    np.testing.assert_array_equal(is_red, expected_red)
    # the rest of that frame is untouched
    frame = cell(array, 1, 2, height, width, pad)
    frame_red = expected_red[oy:oy + height, ox:ox + width]
    assert (frame[~frame_red] == 90).all()
    # every other frame is untouched
    for r in range(rows):
        for c in range(cols):
            if (r, c) != (1, 2):
                assert (cell(array, r, c, height, width, pad) == 90).all()


def test_contact_sheet_multiple_boxes_and_whole_frame():
    videos = np.zeros((1, 2, 8, 8, 3), dtype=np.uint8)
    boxes = [[[(0, 0, 8, 8)], [(0, 0, 2, 2), (6, 6, 8, 8)]]]
    array = np.array(contact_sheet(videos, padding=1, boxes=boxes))
    first = (cell(array, 0, 0, 8, 8, 1) == RED).all(axis=-1)
    border = np.zeros((8, 8), dtype=bool)
    border[[0, -1], :] = True
    border[:, [0, -1]] = True
    np.testing.assert_array_equal(first, border)
    second = (cell(array, 0, 1, 8, 8, 1) == RED).all(axis=-1)
    corners = np.zeros((8, 8), dtype=bool)
    corners[0:2, 0:2] = True
    corners[6:8, 6:8] = True
    np.testing.assert_array_equal(second, corners)
    assert (array[0] == 255).all()  # the padding stays background, boxes stay inside the frame


def test_save_contact_sheet_png_round_trip(tmp_path, rng):
    videos = rng.integers(0, 256, size=(2, 2, 6, 5, 3), dtype=np.uint8)
    path = save_contact_sheet(tmp_path / "sheets" / "grid.png", videos, padding=3, boxes=[[[(1, 1, 4, 4)]]])
    assert path == tmp_path / "sheets" / "grid.png"
    with Image.open(path) as image:
        assert image.format == "PNG"
        saved = np.array(image.convert("RGB"))
    expected = np.array(contact_sheet(videos, padding=3, boxes=[[[(1, 1, 4, 4)]]]))
    np.testing.assert_array_equal(saved, expected)
    assert [p.name for p in path.parent.iterdir()] == ["grid.png"]
