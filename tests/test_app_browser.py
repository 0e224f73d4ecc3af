"""The web editor in a real browser: Debian's headless Chromium driven by Playwright with real pointer events.

The test starts `python -m demo.app` on a free loopback port with the tiny golden model, uploads an image, paints
cells (c), drags them into two control frames (m), clicks Generate and waits for the video element to have a source
it can play. It saves a screenshot in $CAGE_TEST_ARTIFACTS (default: test-artifacts/). Without Chromium or Playwright
it skips, saying how to enable it; with CAGE_REQUIRE_BROWSER=1 (set by .ci/run) it fails instead.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
ENABLE = ("install them with `apt-get install chromium` and `pip install -e '.[app,test]'` (Playwright, with the "
          "system browser: no browser download), or point CAGE_CHROMIUM at a Chromium executable")
#: the flags a headless Chromium needs on a machine without network or GPU, running as root
BROWSER_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_executable():
    return os.environ.get("CAGE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def playwright_browser():
    problems = []
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        problems.append("Playwright is not installed")
    executable = chromium_executable()
    if not executable:
        problems.append("no Chromium executable found")
    if problems:
        message = f"browser test: {' and '.join(problems)}; {ENABLE}"
        if os.environ.get("CAGE_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=BROWSER_FLAGS, headless=True)
        yield browser
        browser.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(golden_dir, tmp_path_factory):
    folder = golden_dir / "tiny_ldm"
    port = free_port()
    log = tmp_path_factory.mktemp("app_server") / "server.log"
    command = [sys.executable, "-m", "demo.app", "--config", str(folder / "config.yaml"), "--ckpt",
               str(folder / "model.pth"), "--port", str(port), "--device", "cpu",
               f"model.autoencoder.ckpt_path={folder / 'ae.pth'}"]
    with open(log, "w") as output:
        process = subprocess.Popen(command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            if process.poll() is not None:
                raise AssertionError(f"the server stopped: {log.read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/api/status", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        else:
            raise AssertionError(f"the server did not answer in 120 s: {log.read_text()}")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=60)


def test_paint_drag_generate_in_chromium(playwright_browser, server, tmp_path):
    image = tmp_path / "scene.png"
    pixels = np.full((32, 32, 3), 40, np.uint8)
    pixels[8:16, 8:16] = (230, 60, 40)  # a red square on cells (2..3, 2..3)
    Image.fromarray(pixels).resize((64, 64), Image.NEAREST).save(image)
    artifacts = Path(os.environ.get("CAGE_TEST_ARTIFACTS", ROOT / "test-artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)

    page = playwright_browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(server)
    page.wait_for_selector("body[data-ready='1']", timeout=60_000)
    assert "grid 8×8" in page.text_content("#model-line")

    page.set_input_files("#image-file", str(tmp_path / "scene.png"))
    page.wait_for_selector("#placeholder", state="hidden")
    box = page.locator("#canvas").bounding_box()
    scale = box["width"] / 32  # screen pixels per image pixel

    def at(x: float, y: float) -> tuple:
        return box["x"] + x * scale, box["y"] + y * scale

    def drag(start: tuple, end: tuple) -> None:
        """Press at image pixel `start`, move to `end` in 6 pointer events, release."""
        page.mouse.move(*at(*start))
        page.mouse.down()
        page.mouse.move(*at(*end), steps=6)
        page.mouse.up()

    page.focus("#image-file")  # as after choosing a file: the mode keys still work
    page.keyboard.press("c")  # select mode, then paint cells (2, 2), (2, 3), (3, 3), (3, 2) by dragging
    page.wait_for_selector("#key-c.active")
    page.mouse.move(*at(9, 9))
    page.mouse.down()
    for point in ((13, 9), (13, 13), (9, 13)):
        page.mouse.move(*at(*point), steps=4)
    page.mouse.up()
    page.wait_for_function("document.getElementById('message').textContent.includes('4 cell(s) selected')")

    page.click("#key-m")  # move mode, then drag the square two columns right, then two rows down as well
    drag((10, 10), (18, 10))
    page.wait_for_selector("#timeline .thumb >> nth=0")
    drag((18, 10), (18, 18))
    page.wait_for_function("document.querySelectorAll('#timeline .thumb').length === 2")
    assert "control frame 2: 4 cell(s) placed" in page.text_content("#message")
    page.keyboard.press("u")  # undo the second drag, then drag again
    page.wait_for_function("document.querySelectorAll('#timeline .thumb').length === 1")
    drag((18, 10), (18, 18))
    page.wait_for_function("document.querySelectorAll('#timeline .thumb').length === 2")

    page.fill("#num-frames", "3")
    page.fill("#steps", "2")
    page.fill("#seed", "7")
    page.click("#generate")
    page.wait_for_function("document.getElementById('video').src.includes('/video.mp4')", timeout=240_000)
    page.wait_for_function("document.getElementById('video').readyState >= 1", timeout=60_000)
    assert page.text_content("#job-status").startswith("done: 4 frames")
    assert "--seed 7" in page.text_content("#command")
    assert page.locator("#download-video-gif").get_attribute("href").endswith("/video.gif?download")
    page.wait_for_function("document.getElementById('strip').complete && document.getElementById('strip')"
                           ".naturalWidth === 2 + 4 * 34")  # the frames with the control cells outlined
    page.screenshot(path=str(artifacts / "web_editor.png"), full_page=True)

    page.set_input_files("#image-file", files=[{"name": "notes.txt", "mimeType": "text/plain",
                                                "buffer": b"not an image"}])
    page.wait_for_selector("#error", state="visible")
    assert "notes.txt: cannot read the image" in page.text_content("#error-text")
    page.close()
