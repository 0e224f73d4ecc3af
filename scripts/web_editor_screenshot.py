"""The README's screenshot of the web editor on the toy model: after the main command (scripts/main.sh), it serves
`python -m demo.app` on the toy run, and in headless Chromium (Playwright, the system browser) opens test clip 1,
paints the cyan triangle's cells, drags them 3 cells right over 6 control frames, generates (10 steps, γ 2, seed 0)
and saves the page, showing the last generated frame, and the video as a strip of frames.

    python scripts/web_editor_screenshot.py [--out docs/images] [--port 7870]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "images"))
    parser.add_argument("--port", type=int, default=7870)
    parser.add_argument("--ckpt", default="runs/toy_run-toy/snapshots/final_step_4000.pth", help="relative to the project")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    out = Path(args.out)
    url = f"http://127.0.0.1:{args.port}"
    server = subprocess.Popen([sys.executable, "-m", "demo.app", "--config", "configs/toy.yaml", "--ckpt", args.ckpt,
                               "--data", "data/toy_h5/test", "--port", str(args.port)], cwd=ROOT)
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{url}/api/status", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium, args=FLAGS)
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto(url)
            page.wait_for_selector("body[data-ready='1']")
            assert "grid 8×8" in page.text_content("#model-line"), page.text_content("#model-line")
            page.fill("#clip-index", "1")
            page.click("#load-clip")
            page.wait_for_selector("#placeholder", state="hidden")
            box = page.locator("#canvas").bounding_box()
            scale = (box["width"] - 2) / 64  # 64-pixel frames; the canvas has a 1-pixel border

            def at(x, y):
                return box["x"] + 1 + x * scale, box["y"] + 1 + y * scale

            page.keyboard.press("c")
            page.mouse.move(*at(20, 20))
            page.mouse.down()
            for point in ((28, 20), (28, 28), (20, 28), (20, 36), (28, 36)):  # rows 2-4, columns 2-3
                page.mouse.move(*at(*point), steps=3)
            page.mouse.up()
            page.wait_for_function("document.getElementById('message').textContent.includes('6 cell(s) selected')")
            page.keyboard.press("m")
            for cells in (1, 1, 2, 2, 3, 3):  # the mean top-left corner is (20, 24): drag to (22 + 8k, 26)
                page.mouse.move(*at(22, 26))
                page.mouse.down()
                page.mouse.move(*at(22 + 8 * cells, 26), steps=4)
                page.mouse.up()
                time.sleep(0.3)
            page.wait_for_function("document.querySelectorAll('#timeline .thumb').length === 6")
            page.fill("#num-frames", "6")
            page.fill("#steps", "10")
            page.fill("#gamma", "2")
            page.click("#generate")
            page.wait_for_function("document.getElementById('video').readyState >= 2", timeout=300_000)
            page.evaluate("(() => { const v = document.getElementById('video'); v.pause(); "
                          "v.currentTime = v.duration - 0.06; })()")
            time.sleep(1)
            page.screenshot(path=str(out / "web_editor_toy.png"), full_page=True)
            gif = out / "web_editor_toy.gif"
            urllib.request.urlretrieve(url + page.locator("#download-video-gif").get_attribute("href"), gif)
            browser.close()
        with Image.open(gif) as video:
            frames = []
            for index in range(video.n_frames):
                video.seek(index)
                frames.append(video.convert("RGB").resize((128, 128), Image.NEAREST))
        strip = Image.new("RGB", (130 * len(frames) - 2, 128), "white")
        for index, frame in enumerate(frames):
            strip.paste(frame, (130 * index, 0))
        strip.save(out / "web_editor_toy_strip.png")
        gif.unlink()
        print(f"wrote {out / 'web_editor_toy.png'} and {out / 'web_editor_toy_strip.png'}")
    finally:
        server.terminate()
        server.wait(timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
