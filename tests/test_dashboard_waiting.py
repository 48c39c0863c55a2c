"""The dashboard says why a job waits, in a real browser (Debian's Chromium, headless),
against a real pool that has no worker at first; the note goes once a worker joins."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.e2e_support import pool, wait_until
from tests.test_dashboard import CHROMIUM, CHROMIUM_ARGS, Console

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


def test_a_job_no_worker_can_run_says_so_until_one_joins(browser: Browser, tmp_path: Path) -> None:
    with pool(tmp_path / "pool", target_chunk_s=0.05) as p, p.client() as client:
        job = client.submit("pi", samples=10**13, seed=3)  # hours on one core
        assert job.known is not None
        assert job.known.raw["waiting_reason"] == "no worker is online to run kind pi"
        context = browser.new_context(ignore_https_errors=True)
        view = context.new_page()
        console = Console(view)
        view.goto(p.url + "/")
        view.fill("input[name=api_key]", p.coordinator.admin_key)
        view.click("#sign-in button[type=submit]")
        row = f"#jobs tr[data-job='{job.job_id}']"
        view.wait_for_selector(f"{row} [data-waiting]")
        assert view.inner_text(f"{row} [data-waiting]") == (
            "Waiting: no worker is online to run kind pi"
        )
        view.goto(f"{p.url}/#/jobs/{job.job_id}")
        view.wait_for_selector("#job-header [data-waiting]")
        assert "no worker is online to run kind pi" in view.inner_text("#job-header")
        assert "ETA" not in view.inner_text("#job-header")
        view.evaluate("window.notReloaded = true")
        p.add_worker(cores=1)
        # Live, without reloading: the note goes while the job runs.
        view.wait_for_selector("#job-header [data-waiting]", state="detached", timeout=120_000)
        assert view.inner_text("#job-state") == "running"
        assert "ETA" in view.inner_text("#job-header")
        assert view.evaluate("window.notReloaded") is True
        assert wait_until(lambda: client.job(job.job_id).info().progress > 0)
        job.cancel()
        context.close()
        assert console.problems == []
