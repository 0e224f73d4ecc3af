"""The web editor's HTTP API (demo/app), through Starlette's test client, on the tiny golden model.

Geometry of the tiny golden model: 32x32 frames, an 8x8 latent grid, cells of 4 pixels; cell (row, col) holds the
pixels x in [4 col, 4 col + 4), y in [4 row, 4 row + 4).
"""
from __future__ import annotations

import io
import json
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("starlette", reason="the web editor's extra is not installed: pip install -e '.[app]'")
from starlette.testclient import TestClient  # noqa: E402

from conftest import tiny_paths  # noqa: E402
from dataset.h5 import write_videos  # noqa: E402
from dataset.synthetic import render_video  # noqa: E402
from demo.app.jobs import JobQueue  # noqa: E402
from demo.app.server import create_app  # noqa: E402
from demo.app.workspace import Limits, Workspace  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def tiny_files(golden_dir: Path) -> dict:
    """conftest.tiny_paths with the paths as strings, as the command line and the page give them."""
    paths = tiny_paths(golden_dir)
    return {"config": str(paths["config"]), "ckpt": str(paths["ckpt"]), "overrides": paths["overrides"]}


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("app_data") / "test"
    write_videos(path, [render_video(12, 32, seed=i) for i in range(3)])
    return path


@pytest.fixture(scope="module")
def app(golden_dir, split):
    files = tiny_files(golden_dir)
    workspace = Workspace(files["config"], files["ckpt"], str(split), device="cpu", overrides=files["overrides"],
                          limits=Limits(upload_bytes=200_000, image_pixels=1_000_000))
    with TestClient(create_app(workspace)) as client:
        yield client, workspace
    workspace.close()
    assert not workspace.root.exists()  # uploads and videos lived only in the temporary folder


def png_bytes(seed: int, size=(40, 48)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def ok(response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def pointer(client, sid, action, x=None, y=None) -> dict:
    body = {"action": action} if x is None else {"action": action, "x": x, "y": y}
    return ok(client.post(f"/api/sessions/{sid}/pointer", json=body))


def key(client, sid, name) -> dict:
    return ok(client.post(f"/api/sessions/{sid}/key", json={"key": name}))


def wait(client, job: str, timeout: float = 240) -> dict:
    end = time.time() + timeout
    while time.time() < end:
        info = ok(client.get(f"/api/jobs/{job}"))
        if info["status"] not in ("queued", "running"):
            return info
        time.sleep(0.1)
    raise AssertionError(f"generation {job} did not finish in {timeout} s")


def run_command(command: str, controls: Path, out: Path) -> subprocess.CompletedProcess:
    """The page's generate.py command, with controls.json and the output put in a folder of the test's."""
    parts = shlex.split(command)
    assert parts[:2] == ["python", "generate.py"]
    parts[0] = sys.executable
    parts[parts.index("--controls") + 1], parts[parts.index("--out") + 1] = str(controls), str(out)
    return subprocess.run(parts, cwd=ROOT, capture_output=True, text=True, timeout=300)


def cells(state: dict, frame: int) -> list:
    return sorted(tuple(c) for c in next(f for f in state["timeline"] if f["frame"] == frame)["cells"])


def test_status_names_the_model_the_grid_and_the_clips(app, split):
    client, _ = app
    status = ok(client.get("/api/status"))
    assert status["loaded"] and status["error"] is None
    assert status["grid"] == [8, 8] and status["size"] == 32 and status["num_videos"] == 3
    assert status["data"] == str(split)
    page = client.get("/")
    assert page.status_code == 200 and "<canvas id=\"canvas\"" in page.text
    assert client.get("/static/app.js").status_code == 200


def test_animate_paint_drag_generate_download_and_reproduce_with_generate_py(app, split, tmp_path):
    client, _ = app
    sid = ok(client.post("/api/sessions", json={"kind": "animate"}))["session"]
    state = ok(client.post(f"/api/sessions/{sid}/clip", json={"index": 1, "frame": 0}))
    assert state["has_image"] and state["timeline"] == []
    image = Image.open(io.BytesIO(client.get(f"/api/sessions/{sid}/image.png").content))
    assert image.size == (32, 32)

    key(client, sid, "c")  # paint cells (2, 2), (2, 3), (3, 3): press, drag through them, release
    pointer(client, sid, "press", 9.0, 9.0)
    pointer(client, sid, "move", 13.5, 9.0)
    pointer(client, sid, "move", 13.5, 13.0)
    state = pointer(client, sid, "release")
    assert state["mode"] == "C" and "3 cell(s) selected" in state["message"]
    assert sorted(map(tuple, state["marks"][0]["cells"])) == [(2, 2), (2, 3), (3, 3)]

    key(client, sid, "m")  # drag the selection to two places: control frames 1 and 2
    # mean of the top-left corners: x (8 + 12 + 12) / 3 = 10.67, y (8 + 8 + 12) / 3 = 9.33
    pointer(client, sid, "press", 11.0, 9.0)
    pointer(client, sid, "move", 14.0, 10.0)
    pointer(client, sid, "move", 14.7, 9.5)  # shift (+4.03, +0.17) px: one column right
    state = pointer(client, sid, "release")
    pointer(client, sid, "press", 18.7, 13.5)  # shift (+8.03, +4.17): one row down, two columns right
    state = pointer(client, sid, "release")
    assert [f["frame"] for f in state["timeline"]] == [1, 2]
    assert cells(state, 1) == [(2, 3), (2, 4), (3, 4)]
    assert cells(state, 2) == [(3, 4), (3, 5), (4, 5)]

    controls = ok(client.get(f"/api/sessions/{sid}/controls.json"))
    assert controls["grid"] == [8, 8] and controls["sources"] == ["input"]
    assert [(p["frames"], p["offset"]) for p in controls["placements"]] == [([0], [0, 1]), ([1], [1, 2])]

    job = ok(client.post(f"/api/sessions/{sid}/generate", json={"num_frames": 3, "steps": 2, "gamma": 0.5,
                                                                  "seed": 5}))
    assert "--input" in job["command"] and f"{split}:1:0" in job["command"] and "--seed 5" in job["command"]
    info = wait(client, job["job"])
    assert info["status"] == "done", info
    assert info["num_frames"] == 4 and info["total"] == info["done"] > 0
    files = {}
    for name in ("video.mp4", "video.gif", "strip.png", "controls.json"):
        response = client.get(f"/api/jobs/{job['job']}/files/{name}?download")
        assert response.status_code == 200 and "attachment" in response.headers["content-disposition"]
        files[name] = response.content
    assert json.loads(files["controls.json"]) == controls
    with Image.open(io.BytesIO(files["video.gif"])) as gif:
        assert gif.n_frames == 4 and gif.size == (32, 32)
    strip = np.asarray(Image.open(io.BytesIO(files["strip.png"])).convert("RGB")).astype(int)
    assert strip.shape == (36, 2 + 4 * 34, 3)  # 4 frames of 32 px, padded by 2
    red = (strip[..., 0] == 255) & (strip[..., 1] == 0) & (strip[..., 2] == 0)
    assert not red[:, :34].any() and red[:, 34:68].any()  # the input frame has no controls, frame 1 has

    (tmp_path / "controls.json").write_bytes(files["controls.json"])
    result = run_command(job["command"], tmp_path / "controls.json", tmp_path / "video.mp4")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "video.mp4").read_bytes() == files["video.mp4"]  # the same video, bit for bit
    result = run_command(job["command"], tmp_path / "controls.json", tmp_path / "video.gif")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "video.gif").read_bytes() == files["video.gif"]

    # the controls file loads back into a new editor on the same image, giving the same control frames
    other = ok(client.post("/api/sessions", json={"kind": "animate"}))["session"]
    ok(client.post(f"/api/sessions/{other}/clip", json={"index": 1}))
    loaded = ok(client.post(f"/api/sessions/{other}/controls?name=controls.json&num_frames=3",
                            content=files["controls.json"]))
    assert loaded["timeline"] == state["timeline"]
    assert ok(client.get(f"/api/sessions/{other}/controls.json")) == controls
    undone = ok(client.post(f"/api/sessions/{other}/undo"))
    assert [f["frame"] for f in undone["timeline"]] == [1] and "undid the write into control frame 2" in \
        undone["message"]
    assert ok(client.post(f"/api/sessions/{other}/clear"))["timeline"] == []
    response = client.post(f"/api/sessions/{other}/undo")
    assert response.status_code == 400 and "nothing to undo" in response.json()["error"]


def test_compose_two_images_paste_move_reload_and_reproduce(app, tmp_path):
    client, _ = app
    sid = ok(client.post("/api/sessions", json={"kind": "compose"}))["session"]
    ok(client.post(f"/api/sessions/{sid}/image?name=scene_a.png", content=png_bytes(1)))
    key(client, sid, "c")
    pointer(client, sid, "press", 5.0, 5.0)  # object 1: cells (1, 1), (1, 2) of scene_a.png
    pointer(client, sid, "move", 9.0, 5.0)
    pointer(client, sid, "release")
    state = ok(client.post(f"/api/sessions/{sid}/clip", json={"index": 2}))  # the next image: a dataset clip
    assert state["sources"] == ["scene_a.png", "clip 2"]
    key(client, sid, "c")
    pointer(client, sid, "press", 21.0, 21.0)  # object 2: cell (5, 5) of clip 2
    state = pointer(client, sid, "release")
    assert state["objects"] == 2
    state = key(client, sid, "v")  # paste object 1 at the top left, then move it
    assert state["view"] == "canvas"
    pointer(client, sid, "press", 2.0, 2.0)
    pointer(client, sid, "release")
    key(client, sid, "m")
    pointer(client, sid, "press", 6.5, 6.5)
    pointer(client, sid, "release")
    key(client, sid, "n")  # object 2: paste it, then move it twice
    pointer(client, sid, "press", 25.0, 25.0)
    pointer(client, sid, "release")
    key(client, sid, "m")
    for x in (21.0, 17.0):
        pointer(client, sid, "press", x, 25.0)
        state = pointer(client, sid, "release")
    assert cells(state, 0) == [(0, 0), (0, 1), (6, 6)]
    assert cells(state, 1) == [(1, 1), (1, 2), (6, 5)]
    assert cells(state, 2) == [(6, 4)]
    picture = np.asarray(Image.open(io.BytesIO(client.get(f"/api/sessions/{sid}/image.png").content)))
    assert (picture[16:24, :8] == 255).all()  # the canvas is white where nothing is pasted

    controls = ok(client.get(f"/api/sessions/{sid}/controls.json"))
    assert controls["sources"][0] == "scene_a.png" and controls["sources"][1].endswith(":2:0")
    job = ok(client.post(f"/api/sessions/{sid}/generate", json={"num_frames": 3, "steps": 2, "seed": 1}))
    assert "--input" not in job["command"]
    info = wait(client, job["job"])
    assert info["status"] == "done" and info["num_frames"] == 3
    gif = client.get(f"/api/jobs/{job['job']}/files/video.gif").content

    (tmp_path / "scene_a.png").write_bytes(png_bytes(1))  # the uploaded image beside the controls file
    (tmp_path / "controls.json").write_text(json.dumps(controls))
    result = run_command(job["command"], tmp_path / "controls.json", tmp_path / "video.gif")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "video.gif").read_bytes() == gif

    other = ok(client.post("/api/sessions", json={"kind": "compose"}))["session"]
    ok(client.post(f"/api/sessions/{other}/image?name=scene_a.png", content=png_bytes(1)))
    loaded = ok(client.post(f"/api/sessions/{other}/controls?name=c.json&num_frames=3",
                            content=json.dumps(controls).encode()))
    assert loaded["timeline"] == state["timeline"] and loaded["objects"] == 2
    assert ok(client.get(f"/api/sessions/{other}/controls.json")) == controls


def test_bad_requests_are_clear_messages_and_the_server_goes_on(app):
    client, _ = app
    sid = ok(client.post("/api/sessions", json={"kind": "animate"}))["session"]

    def error(response, status: int, needle: str) -> None:
        assert response.status_code == status, response.text
        assert needle in response.json()["error"]

    error(client.post(f"/api/sessions/{sid}/image?name=notes.txt", content=b"not an image"), 415,
          "notes.txt: cannot read the image")
    tiff = io.BytesIO()
    Image.new("RGB", (8, 8)).save(tiff, "TIFF")
    error(client.post(f"/api/sessions/{sid}/image?name=a.tif", content=tiff.getvalue()), 415,
          "TIFF images are not accepted")
    error(client.post(f"/api/sessions/{sid}/image?name=big.png", content=b"\0" * 300_000), 413,
          "big.png: 0.3 MiB is over the upload limit of 0.2 MiB")
    huge = io.BytesIO()
    Image.new("RGB", (1100, 1000)).save(huge, "PNG")  # a few kB, but more pixels than allowed
    error(client.post(f"/api/sessions/{sid}/image?name=huge.png", content=huge.getvalue()), 413,
          "1100x1000 pixels is over the limit of 1000000 pixels")
    error(client.post(f"/api/sessions/{sid}/clip", json={"index": 3}), 400, "clip 3 does not exist")
    error(client.post(f"/api/sessions/{sid}/generate", json={"num_frames": 2}), 400, "load an image first")
    error(client.post("/api/sessions/nosuch/pointer", json={"action": "release"}), 404, "reload the page")
    error(client.post("/api/sessions", json={"kind": "paint"}), 400, "animate, compose")

    ok(client.post(f"/api/sessions/{sid}/image?name=a.png", content=png_bytes(3)))
    error(client.post(f"/api/sessions/{sid}/pointer", json={"action": "press", "x": "left", "y": 1}), 400,
          "'x' must be a number")
    state = pointer(client, sid, "press", 5, 5)  # a press before choosing a mode does nothing
    assert state["timeline"] == [] and state["mode"] == ""
    key(client, sid, "m")  # moving before selecting: the core's message
    assert "select cells" in pointer(client, sid, "press", 5, 5)["message"]
    pointer(client, sid, "release")
    key(client, sid, "c")
    pointer(client, sid, "press", 29, 29)
    pointer(client, sid, "move", 29, 25)
    pointer(client, sid, "release")  # cells (6, 7) and (7, 7) selected
    key(client, sid, "m")
    pointer(client, sid, "press", 28.5, 30.5)  # shift (+0.5, +4.5) px: cell (7, 7) goes to row 8
    state = pointer(client, sid, "release")
    assert state["message"].startswith("warning:") and "land off the 8x8 grid" in state["message"]
    pointer(client, sid, "press", 28.5, 26.5)  # control frame 2: in place
    assert cells(pointer(client, sid, "release"), 2) == [(6, 7), (7, 7)]

    off_grid = {"placements": [{"cells": [[7, 7]], "frames": [0], "offset": [0, 1]}]}
    error(client.post(f"/api/sessions/{sid}/controls?name=off.json&num_frames=2",
                      content=json.dumps(off_grid).encode()), 400, "outside the 8x8 grid")
    error(client.post(f"/api/sessions/{sid}/controls?name=late.json&num_frames=2",
                      content=json.dumps({"placements": [{"cells": [[1, 1]], "frames": [5]}]}).encode()), 400,
          "late.json")
    error(client.post(f"/api/sessions/{sid}/controls?name=x.json&num_frames=2", content=b"{nope"), 400,
          "x.json: cannot parse")
    error(client.post(f"/api/sessions/{sid}/controls?name=x.json&num_frames=2",
                      content=json.dumps({"sources": ["missing.png"], "placements": [{"cells": [[1, 1]]}]})
                      .encode()), 400, "missing.png")
    error(client.post(f"/api/sessions/{sid}/generate", json={"num_frames": 0}), 400, "num_frames must be at least 1")
    error(client.post(f"/api/sessions/{sid}/generate", json={"num_frames": 1}), 400,
          "generate at least 2 frames")  # control frames 1 and 2 are written
    assert ok(client.get("/api/status"))["loaded"]  # still serving
    assert ok(client.get(f"/api/sessions/{sid}"))["num_control_frames"] == 2

    fresh = ok(client.post("/api/sessions", json={"kind": "animate"}))["session"]
    error(client.post(f"/api/sessions/{fresh}/controls?name=c.json&num_frames=2", content=b"{}"), 400,
          "c.json: load the image to animate first")


def test_compose_tells_two_uploads_of_one_name_apart(app):
    client, _ = app
    sid = ok(client.post("/api/sessions", json={"kind": "compose"}))["session"]
    for seed in (1, 2, 3, 1):  # the last is the first image again: one file serves both
        state = ok(client.post(f"/api/sessions/{sid}/image?name=image.png", content=png_bytes(seed)))
    assert state["sources"] == ["image.png", "image-2.png", "image-3.png", "image.png"]
    assert ok(client.get(f"/api/sessions/{sid}/controls.json"))["sources"] == state["sources"]


def test_a_public_server_reads_no_files_named_in_the_page(golden_dir, tmp_path):
    files = tiny_files(golden_dir)
    workspace = Workspace(files["config"], files["ckpt"], overrides=files["overrides"], public=True)
    try:
        with TestClient(create_app(workspace)) as client:
            response = client.post("/api/model", json={"config": files["config"], "ckpt": files["ckpt"]})
            assert response.status_code == 403 and "restart it with --config" in response.json()["error"]
            sid = ok(client.post("/api/sessions", json={"kind": "compose"}))["session"]
            Image.open(io.BytesIO(png_bytes(5))).save(tmp_path / "secret.png")
            content = {"sources": [str(tmp_path / "secret.png")], "placements": [{"cells": [[1, 1]], "frames": [0]}]}
            response = client.post(f"/api/sessions/{sid}/controls?name=c.json&num_frames=1",
                                   content=json.dumps(content).encode())
            assert response.status_code == 400 and "reads no other files" in response.json()["error"]
    finally:
        workspace.close()


def test_missing_checkpoint_and_mismatched_config_show_in_status(golden_dir, tmp_path):
    files = tiny_files(golden_dir)
    workspace = Workspace(files["config"], str(tmp_path / "absent.pth"), overrides=files["overrides"])
    try:
        with TestClient(create_app(workspace)) as client:
            status = ok(client.get("/api/status"))
            assert not status["loaded"] and "model checkpoint not found" in status["error"]
            response = client.post("/api/sessions", json={"kind": "animate"})
            assert response.status_code == 409 and "absent.pth" in response.json()["error"]
            other = tmp_path / "wide.yaml"  # a config whose regressor does not match the checkpoint's weights
            other.write_text(Path(files["config"]).read_text().replace("inner_dim: 64", "inner_dim: 96"))
            assert "inner_dim: 96" in other.read_text()
            response = client.post("/api/model", json={"config": str(other), "ckpt": files["ckpt"]})
            assert response.status_code == 400 and "cannot load the model" in response.json()["error"]
            status = ok(client.post("/api/model", json={"config": files["config"], "ckpt": files["ckpt"]}))
            assert status["loaded"] and status["error"] is None
    finally:
        workspace.close()


def test_the_queue_runs_one_at_a_time_with_positions_and_cancels():
    queue = JobQueue()
    started, release = threading.Event(), threading.Event()

    def blocking(progress):
        started.set()
        while not release.wait(0.01):
            progress(1, 10)  # raises once cancelled
        return {"value": 1}

    first = queue.submit("a", blocking)
    assert started.wait(5)
    second = queue.submit("b", lambda progress: {"value": 2})
    third = queue.submit("c", lambda progress: {"value": 3})
    assert queue.info(first)["status"] == "running" and queue.position(first) == 0
    assert queue.position(second) == 1 and queue.position(third) == 2
    queue.cancel(second)
    assert second.status == "cancelled" and queue.position(third) == 1
    queue.cancel(first)  # stops at its next progress call
    for _ in range(500):
        if third.finished:
            break
        time.sleep(0.01)
    assert first.status == "cancelled" and third.status == "done" and third.result == {"value": 3}
    failing = queue.submit("d", lambda progress: 1 / 0)
    for _ in range(500):
        if failing.finished:
            break
        time.sleep(0.01)
    assert failing.status == "failed" and "ZeroDivisionError" in failing.error
    queue.close()


def test_a_long_generation_can_be_cancelled_through_the_api(app):
    client, _ = app
    sid = ok(client.post("/api/sessions", json={"kind": "animate"}))["session"]
    ok(client.post(f"/api/sessions/{sid}/image?name=a.png", content=png_bytes(4)))
    long = ok(client.post(f"/api/sessions/{sid}/generate", json={"num_frames": 8, "steps": 1000}))
    queued = ok(client.post(f"/api/sessions/{sid}/generate", json={"num_frames": 1, "steps": 1}))
    assert ok(client.get(f"/api/jobs/{queued['job']}"))["position"] >= 1
    ok(client.post(f"/api/jobs/{long['job']}/cancel"))
    assert wait(client, long["job"])["status"] == "cancelled"
    assert wait(client, queued["job"])["status"] == "done"  # the queue goes on
    response = client.get(f"/api/jobs/{long['job']}/files/video.gif")
    assert response.status_code == 404 and "cancelled" in response.json()["error"]


def test_command_line_binds_loopback_and_warns_when_shared(monkeypatch, caplog, golden_dir):
    import demo.app.__main__ as app_main

    served = {}

    class FakeUvicorn:
        @staticmethod
        def run(app, host, port, log_level):
            served.update(host=host, port=port)

    monkeypatch.setitem(sys.modules, "uvicorn", FakeUvicorn)
    files = tiny_files(golden_dir)
    args = ["--config", files["config"], "--ckpt", files["ckpt"], "--port", "7999", *files["overrides"]]
    assert app_main.main(args) == 0 and served == {"host": "127.0.0.1", "port": 7999}
    assert "open to everyone" not in caplog.text
    assert app_main.main(["--share", *args]) == 0 and served["host"] == "0.0.0.0"
    assert "open to everyone" in caplog.text
    assert app_main.is_loopback("::1") and app_main.is_loopback("localhost") and not app_main.is_loopback("10.0.0.2")


def test_command_line_without_the_extra_says_how_to_install(monkeypatch, capsys):
    import demo.app.__main__ as app_main

    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn now fails
    assert app_main.main([]) == 1
    assert 'pip install -e ".[app]"' in capsys.readouterr().err


def test_the_temporary_folder_is_private_and_a_killed_servers_is_removed():
    from dataset.staging import host_tag

    leftover = Path(tempfile.gettempdir()) / f".cage-app.{host_tag()}-pid{2 ** 22 + 7}.abc123.tmp"  # no such process
    (leftover / "session").mkdir(parents=True, exist_ok=True)
    workspace = Workspace()  # no model: only the folder
    try:
        assert not leftover.exists()
        assert workspace.root.name.startswith(f".cage-app.{host_tag()}-pid{os.getpid()}.")
        assert workspace.root.stat().st_mode & 0o777 == 0o700
    finally:
        workspace.close()
    assert not workspace.root.exists()
