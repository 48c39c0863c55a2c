"""Screenshots of the dashboard for the README: a real pool on loopback, Debian's Chromium.

.venv/bin/python scripts/screenshots.py [docs/img]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

from hydracompute.demo import start_coordinator, start_worker, stop

ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/img")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        coordinator = start_coordinator(Path(tmp) / "pool")
        workers = [start_worker(coordinator, 1, f"laptop-{n}") for n in range(2)]
        try:
            with coordinator.client() as client:
                while sum(w["online"] for w in client.workers()) < 2:
                    time.sleep(0.1)
                mandel = client.submit(
                    "mandelbrot",
                    width=1024,
                    height=768,
                    max_iter=2000,
                    center_re=-0.7435,
                    center_im=0.1314,
                    span=0.012,
                    colour_map="classic",
                    name="seahorse valley",
                )
                client.submit("pi", samples=2 * 10**11, seed=7, name="π, 2·10¹¹ samples")
                mandel.wait()
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path="/usr/bin/chromium", headless=True, args=ARGS
                )
                for name, viewport in (
                    ("desktop", {"width": 1280, "height": 900}),
                    ("phone", {"width": 390, "height": 844}),
                ):
                    page = browser.new_context(
                        ignore_https_errors=True, viewport=viewport
                    ).new_page()
                    page.goto(coordinator.url + "/")
                    page.fill("input[name=api_key]", coordinator.admin_key)
                    page.click("#sign-in button[type=submit]")
                    page.wait_for_selector("#jobs tbody tr")
                    page.wait_for_timeout(6000)  # a few pool samples for the chart
                    suffix = "" if name == "desktop" else "-phone"
                    page.screenshot(path=str(out / f"dashboard-overview{suffix}.png"))
                    page.goto(coordinator.url + f"/#/jobs/{mandel.job_id}")
                    page.wait_for_selector("canvas#picture[data-complete=true]")
                    page.screenshot(
                        path=str(out / f"dashboard-mandelbrot{suffix}.png"), full_page=True
                    )
                browser.close()
        finally:
            for worker in workers:
                stop(worker)
            stop(coordinator.process)


if __name__ == "__main__":
    main()
