"""figures/app.png: the web page driven in a real headless browser, after restoring a photo.

    python tools/app_screenshot.py [--checkpoint PATH] [--out figures/app.png] [--chromium /usr/bin/chromium]

Needs the extra (`pip install -r requirements-app.txt`), Playwright's Python package (`pip install
playwright`; no browser download: it drives the system Chromium, `apt-get install chromium` on Debian).
Starts `python -m dwgn.app` on a free 127.0.0.1 port, uploads a packaged test photo under synthetic rain
(dwgn.weather; SYNTHETIC, the page says which checkpoint ran), presses Restore, waits for the result and
screenshots the page. Exits non-zero if any step fails, so it doubles as an end-to-end check of the page.
"""
from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

from dwgn.data.images import read_image
from dwgn.data.photos import packaged_photos
from dwgn.data.weather import synthesize

REPO = Path(__file__).resolve().parents[1]


def rainy_photo(out: Path, size: tuple[int, int] = (384, 512), seed: int = 3) -> Path:
    """A centre crop of the first packaged test photo under synthetic rain, as PNG."""
    photo = read_image(packaged_photos("test")[0])
    h, w = min(size[0], photo.shape[0]), min(size[1], photo.shape[1])
    y, x = (photo.shape[0] - h) // 2, (photo.shape[1] - w) // 2
    rainy = synthesize(photo[y:y + h, x:x + w], "rain", np.random.default_rng(seed))  # float32 in [0, 1]
    Image.fromarray((rainy * 255).round().astype(np.uint8)).save(out)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, server: subprocess.Popen, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the app exited with code {server.returncode} before serving")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {seconds:.0f} s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None, help="default: the app's default (the demo checkpoint)")
    p.add_argument("--out", default=str(REPO / "figures" / "app.png"))
    p.add_argument("--chromium", default="/usr/bin/chromium", help="the browser Playwright drives")
    p.add_argument("--timeout", type=float, default=300, help="seconds for the restore to show up")
    args = p.parse_args(argv)
    from playwright.sync_api import sync_playwright

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    command = [sys.executable, "-m", "dwgn.app", "--port", str(port)]
    if args.checkpoint:
        command += ["--checkpoint", args.checkpoint]
    with tempfile.TemporaryDirectory() as tmp:
        photo = rainy_photo(Path(tmp) / "synthetic-rain.png")
        server = subprocess.Popen(command, cwd=REPO)
        try:
            wait_for(url, server, 120)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=args.chromium, headless=True,
                                             args=["--no-sandbox"])  # root in a container has no sandbox
                page = browser.new_page(viewport={"width": 1400, "height": 640})
                page.goto(url)
                page.locator("input[type=file]").first.set_input_files(str(photo))
                page.get_by_text("synthetic-rain.png").first.wait_for(timeout=30_000)  # the upload finished
                page.get_by_role("button", name="Restore").click()
                page.locator("#status").get_by_text("Restored").wait_for(timeout=args.timeout * 1000)
                page.locator("#compare img").last.wait_for(timeout=30_000)
                page.wait_for_timeout(1000)  # let the images paint
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=args.out, full_page=True)
                print(f"wrote {args.out}: {page.locator('#status').inner_text().strip()}")
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
