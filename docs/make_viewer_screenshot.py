"""Regenerate docs/viewer.png: ng_viewer on 200 synthetic rollouts, one conversation open, in headless Chromium.

    python docs/make_viewer_screenshot.py

Needs Debian's `chromium` and the dev extra (playwright). The rows come from
benchmarks/viewer_large_file.py's generator, so the picture shows the same shapes the benchmark measures.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from viewer_large_file import write_file  # noqa: E402

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def main() -> None:
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "example_rollouts.jsonl"
        write_file(path, 200, seed=1)
        server = subprocess.Popen(
            [sys.executable, "-m", "nemo_gym.cli.viewer", f"+jsonl_fpath={path}", "+port=0"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert server.stdout is not None
            url = re.search(r"http://\S+/", server.stdout.readline()).group(0)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1280, "height": 720})
                page.goto(url)
                page.wait_for_selector("#rows tbody tr")
                page.click("#rows tbody tr:nth-child(8)")
                page.wait_for_selector("#detail .item.function_call")
                page.screenshot(path=str(ROOT / "docs" / "viewer.png"))
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=10)
    print(f"wrote {ROOT / 'docs' / 'viewer.png'}")


if __name__ == "__main__":
    main()
