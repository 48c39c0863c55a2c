"""The dashboard in a real browser (Debian's Chromium, headless) against a real pool.

A coordinator and a worker process run on loopback over TLS; Playwright drives the page as
a person would: signs in, submits, watches, drags to zoom.
"""

from __future__ import annotations

import base64
import io
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, sync_playwright

from hydracompute.client import Client
from tests.e2e_support import Pool, pool, wait_until
from tests.wasm_support import example, sha256

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def live_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    with pool(tmp_path_factory.mktemp("dashboard") / "pool", target_chunk_s=0.05) as p:
        p.add_worker(cores=2)
        wait_until(lambda: p.online_workers() == 1, what="the worker to join")
        yield p


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


@pytest.fixture
def client(live_pool: Pool) -> Iterator[Client]:
    with live_pool.client() as opened:
        yield opened


class Console:
    """Everything the page complained about."""

    def __init__(self, page: Page) -> None:
        self.problems: list[str] = []
        page.on("console", self._message)
        page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))

    def _message(self, message: Any) -> None:
        if message.type in ("error", "warning"):
            self.problems.append(f"{message.type}: {message.text}")


@pytest.fixture
def page(browser: Browser, live_pool: Pool) -> Iterator[tuple[Page, Console]]:
    # The coordinator's own CA is not in the browser's store; the tests pin it elsewhere.
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1200, "height": 900})
    opened = context.new_page()
    console = Console(opened)
    opened.goto(live_pool.url + "/")
    opened.fill("input[name=api_key]", live_pool.coordinator.admin_key)
    opened.click("#sign-in button[type=submit]")
    opened.wait_for_selector("#jobs")
    yield opened, console
    context.close()
    assert console.problems == []


def canvas_pixels(page: Page) -> np.ndarray:
    data_url = page.eval_on_selector("canvas#picture", "c => c.toDataURL('image/png')")
    png = base64.b64decode(data_url.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))


def test_overview_shows_the_pool(page: tuple[Page, Console], live_pool: Pool) -> None:
    view, _ = page
    view.wait_for_function("document.querySelector('#workers-online')?.textContent === '1'")
    assert "2" in view.inner_text("#totals")  # cores
    assert view.locator("#workers tbody tr").count() == 1
    assert view.locator("#throughput-chart").count() == 1


def test_a_job_submitted_from_the_form_runs_to_100_percent_live(
    page: tuple[Page, Console], client: Client
) -> None:
    view, _ = page
    view.goto(view.url.split("#")[0] + "#/submit")
    view.select_option("#kind", "pi")
    view.fill("input[name=samples]", "6e9")
    view.fill("input[name=seed]", "5")
    view.evaluate("window.notReloaded = true")
    view.click("#submit-form button[type=submit]")
    view.wait_for_selector("#job-progress")
    seen = set()
    deadline = time.monotonic() + 120
    while "100.0%" not in seen:
        seen.add(view.inner_text("#job-progress"))
        assert time.monotonic() < deadline, f"progress seen: {sorted(seen)}"
        view.wait_for_timeout(50)
    assert any(s not in ("0.0%", "100.0%") for s in seen), f"no progress in between: {seen}"
    assert view.evaluate("window.notReloaded") is True
    view.wait_for_selector("#job-state.state-done")
    job_id = view.url.rsplit("/", 1)[1]
    assert client.job(job_id).info().answer["samples"] == 6 * 10**9
    # The π chart: the estimate, its ±3σ band and the true value.
    points = view.get_attribute("#pi-chart polyline.series", "points") or ""
    assert len(points.split()) > 2
    assert view.locator("#pi-chart polygon.band").count() == 1
    assert view.locator("#pi-chart line.truth").count() == 1
    assert view.inner_text("#digits").startswith("3.14")


def test_the_form_uploads_a_wasm_module_and_asks_for_labels(
    page: tuple[Page, Console], client: Client, tmp_path: Path
) -> None:
    view, console = page
    module = tmp_path / "pi.wasm"
    module.write_bytes(example("pi"))
    view.goto(view.url.split("#")[0] + "#/submit")
    view.select_option("#kind", "wasm")
    view.set_input_files("input[name=module]", str(module))
    view.fill("input[name=units]", "3")
    view.fill("textarea[name=args]", '{"seed": 5, "samples": 3000000}')
    view.fill("input[name=__labels]", "trusted, site-a")
    view.click("#submit-form button[type=submit]")
    view.wait_for_selector("#job-progress")
    job = client.job(view.url.rsplit("/", 1)[1])
    info = job.info().raw
    job.cancel()  # the live pool's worker did not opt in to wasm jobs: it would wait
    assert info["params"]["module"] == sha256(example("pi"))
    assert info["params"]["args"] == {"samples": 3000000, "seed": 5}
    assert info["required_labels"] == ["site-a", "trusted"]
    assert info["waiting_reason"] == "no online worker has kind wasm"
    assert console.problems == []


def test_the_form_asks_for_verification(page: tuple[Page, Console], client: Client) -> None:
    view, _ = page
    view.goto(view.url.split("#")[0] + "#/submit")
    view.select_option("#kind", "pi")
    view.fill("input[name=samples]", "1e6")
    view.select_option("select[name=__verify]", "3")
    view.click("#submit-form button[type=submit]")
    view.wait_for_selector("#job-progress")
    job = client.job(view.url.rsplit("/", 1)[1])
    info = job.info().raw
    job.cancel()  # the live pool has one worker: three copies from different ones never come
    assert (info["replication"], info["quorum"], info["adaptive"]) == (3, 2, False)


@pytest.mark.parametrize("tile", [None, 16], ids=["tiles-64", "tiles-16"])
def test_mandelbrot_canvas_fills_in_to_exactly_the_png(
    page: tuple[Page, Console], client: Client, tile: int | None
) -> None:
    view, _ = page
    # Keep the worker busy so the page is open before the first tile arrives.
    blocker = client.submit("pi", samples=10**13, seed=1)
    job = client.submit(
        "mandelbrot",
        # Enough tiles for several chunks: a new worker's probe is sized in cost (16 typical
        # tiles), so a picture of 20 tiles can be a single chunk.
        width=641,
        height=403,
        max_iter=400,
        x_min=-1.5,
        x_max=0.3,
        y_min=-0.9,
        y_max=0.9,
        # Tiles of 16² (a job's side is in its parameters): the previews' pieces place them.
        **({} if tile is None else {"tile": tile}),
    )
    fetched: list[str] = []
    view.on("request", lambda request: fetched.append(request.url))
    view.goto(view.url.split("#")[0] + f"#/jobs/{job.job_id}")
    view.wait_for_selector("canvas#picture")
    blocker.cancel()
    view.wait_for_selector("canvas#picture[data-complete=true]", timeout=120_000)
    assert view.get_attribute("canvas#picture", "data-source") == "chunks"
    drawn = canvas_pixels(view)
    png = np.asarray(Image.open(io.BytesIO(job.artefact("image.png"))).convert("RGBA"))
    assert drawn.shape == png.shape == (403, 641, 4)
    np.testing.assert_array_equal(drawn, png)
    # Incremental: each finished chunk's picture was fetched once, the whole image never.
    previews = [url for url in fetched if "/preview" in url and job.job_id in url]
    assert len(previews) == len(set(previews)) > 1
    assert not [url for url in fetched if url.endswith("image.png")]


def test_drag_to_zoom_submits_the_region(page: tuple[Page, Console], client: Client) -> None:
    view, _ = page
    params = {
        "width": 200,
        "height": 200,
        "max_iter": 100,
        "x_min": -2.0,
        "x_max": 0.5,
        "y_min": -1.25,
        "y_max": 1.25,
    }
    job = client.submit("mandelbrot", **params)
    job.wait(timeout=120)
    view.goto(view.url.split("#")[0] + f"#/jobs/{job.job_id}")
    view.wait_for_selector("canvas#picture[data-complete=true]")
    box = view.locator("canvas#picture").bounding_box()
    assert box is not None
    start = (box["x"] + box["width"] * 0.25, box["y"] + box["height"] * 0.30)
    end = (box["x"] + box["width"] * 0.55, box["y"] + box["height"] * 0.60)  # a square
    view.mouse.move(*start)
    view.mouse.down()
    view.mouse.move(*end, steps=5)
    view.mouse.up()
    view.wait_for_function(f"!location.hash.endsWith('{job.job_id}')")
    zoomed_job = client.job(view.url.rsplit("/", 1)[1])
    zoomed = zoomed_job.info().params
    # Let the new job's picture finish before the page closes: closing it with previews
    # still being fetched (a loaded machine) makes the browser report the aborted fetches.
    zoomed_job.wait(timeout=120)
    view.wait_for_selector("canvas#picture[data-complete=true]")

    def plane(point: tuple[float, float]) -> tuple[float, float]:
        px = (point[0] - box["x"]) * 200 / box["width"]
        py = (point[1] - box["y"]) * 200 / box["height"]
        return -2.0 + px * 2.5 / 200, 1.25 - py * 2.5 / 200

    (x0, y0), (x1, y1) = plane(start), plane(end)
    expected = {"x_min": x0, "x_max": x1, "y_min": y1, "y_max": y0}
    # The browser reports mouse positions in whole CSS pixels: allow one picture pixel.
    pixel = 2.5 / 200
    for name, value in expected.items():
        assert math.isclose(zoomed[name], value, abs_tol=pixel), (name, zoomed[name], value)
    # A square selection on a square picture: the region stays square.
    assert math.isclose(
        zoomed["x_max"] - zoomed["x_min"], zoomed["y_max"] - zoomed["y_min"], rel_tol=1e-9
    )
    assert (zoomed["width"], zoomed["height"], zoomed["max_iter"]) == (200, 200, 100)


def test_invalid_form_value_shows_the_error_and_submits_nothing(
    page: tuple[Page, Console], client: Client
) -> None:
    view, console = page
    before = len(client.jobs(limit=1000))
    view.goto(view.url.split("#")[0] + "#/submit")
    view.select_option("#kind", "pi")
    view.fill("input[name=samples]", "0")
    view.click("#submit-form button[type=submit]")
    error = view.locator('[data-error-for="samples"]')
    error.wait_for()
    view.wait_for_function(
        "document.querySelector('[data-error-for=samples]').textContent.includes('between')"
    )
    assert len(client.jobs(limit=1000)) == before
    # The refusal is the coordinator's 422: the browser logs the failed request; nothing else.
    console.problems = [p for p in console.problems if "422" not in p]


def test_the_grids_panel_shows_each_zones_intensity_and_workers(
    page: tuple[Page, Console], client: Client, live_pool: Pool
) -> None:
    view, _ = page
    # A volunteer of its own (the other tests count the default token's workers).
    token = client.request("POST", "/api/v1/join-tokens", json={"name": "france"}).json()
    enrolment = {
        "name": "in-france",
        "cores": 2,
        "kinds": ["pi"],
        "join_token": token["secret"],
        "grid_zone": "FR",
    }
    # Enrolled through the API as a worker would (it never exchanges: it shows as offline).
    client.request("POST", "/api/v1/workers", json=enrolment, headers={"Authorization": ""})
    grids = client.request("GET", "/api/v1/carbon").json()
    (france,) = [z for z in grids["zones"] if z["zone"] == "FR"]
    view.reload()
    view.wait_for_selector("#grids tbody tr td.num")
    row = view.locator("#grids tbody tr", has_text="FR").first
    assert row.locator("td").nth(1).inner_text() == f"{france['gco2_per_kwh']:.0f}"
    assert "annual" in row.locator("td").nth(2).inner_text()
    # The chart draws the zone's intensity over the next 24 hours, with its legend.
    assert "FR" in view.locator("#grid-legend").inner_text()
    assert view.locator("#grid-chart polyline.series").count() >= 1


def test_the_overview_ranks_volunteers_by_verified_work(
    page: tuple[Page, Console], client: Client
) -> None:
    view, _ = page
    job = client.submit("pi", samples=10**7, seed=3)
    job.wait(timeout=120)
    view.reload()  # the leaderboard is read when the overview opens, then every 10 s
    view.wait_for_selector("#leaderboard tbody tr td.num")
    row = view.locator("#leaderboard tbody tr").first
    cells = [row.locator("td").nth(i).inner_text() for i in range(5)]
    # One volunteer (the default join token) did all the pool's verified work.
    board = client.request("GET", "/api/v1/leaderboard").json()
    assert [v["name"] for v in board["volunteers"]] == ["default"]
    assert board["volunteers"][0]["credit"] >= 10**7
    assert cells[0] == "default" and cells[4] == "100.0%"


def test_a_volunteers_page_opens_from_the_leaderboard_with_its_figures(
    page: tuple[Page, Console], client: Client
) -> None:
    view, _ = page
    job = client.submit("pi", samples=10**6, seed=5)
    job.wait(timeout=120)
    view.reload()
    view.click("#leaderboard tbody tr a")
    view.wait_for_selector("#volunteer-workers tbody tr")
    board = client.request("GET", "/api/v1/leaderboard").json()
    (volunteer,) = board["volunteers"]
    assert view.evaluate("location.hash") == f"#/volunteers/{volunteer['key']}"
    assert view.inner_text("#volunteer-name") == "default"
    assert view.inner_text("#volunteer-share") == "100.0%"
    shown = client.request("GET", f"/api/v1/volunteers/{volunteer['key']}").json()
    assert view.inner_text("#volunteer-chunks") == str(shown["chunks"])
    assert shown["chunks"] > 0 and shown["credit"] >= 10**6
    # The pool's one worker, with all the credit, and the latest grants.
    (worker,) = shown["workers"]
    cells = view.locator("#volunteer-workers tbody tr td")
    assert cells.nth(0).inner_text() == worker["name"]
    assert cells.nth(3).inner_text() == str(worker["chunks"])
    grants = view.locator("#volunteer-entries tbody tr.entry-grant")
    assert grants.count() == len(shown["entries"]) > 0
    assert grants.first.locator("td").nth(3).inner_text() == shown["entries"][0]["job_id"]
