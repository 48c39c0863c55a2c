"""Grid-aware dispatch end to end: a real coordinator (its annual-average carbon source) and
real worker processes on two grids over loopback TLS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hydracompute.carbon.annual import annual_table
from hydracompute.core.carbon import grams
from tests.e2e_support import Pool, pool, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def two_grids(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    with pool(tmp_path_factory.mktemp("carbon") / "pool", target_chunk_s=0.1) as p:
        p.add_worker(1, "--grid-zone", "FR")
        p.add_worker(1, "--grid-zone", "de")
        wait_until(lambda: p.online_workers() == 2, what="both workers to join")
        yield p


def test_a_deadline_job_runs_on_the_clean_grid_and_reports_its_co2(two_grids: Pool) -> None:
    table = annual_table()
    with two_grids.client() as client:
        # A carbon-blind job first: both workers learn their speed (a worker of unknown
        # speed holds nothing back), and both grids compute.
        warm = client.submit("pi", samples=4 * 10**7, seed=1)
        warm.wait(timeout=120)
        workers = {w["name"]: w for w in client.workers()}
        assert {w["grid_zone"] for w in workers.values()} == {"FR", "DE"}
        assert workers["test-1"]["grid_gco2_per_kwh"] == table.average("DE")
        job = client.submit("pi", samples=4 * 10**7, seed=2, deadline_s=3600, carbon="prefer-clean")
        info = job.wait(timeout=120)
        emitted = client.request("GET", f"/api/v1/jobs/{job.job_id}").json()
    assert info.state == "done"
    assert emitted["carbon"] == "prefer-clean"
    assert emitted["deadline_s"] == pytest.approx(emitted["created_s"] + 3600)
    # France's cores hold an hour's worth of this job many times over: Germany's took none.
    zones = {z["zone"]: z for z in emitted["emissions"]["zones"]}
    assert set(zones) == {"FR"}
    energy_j = emitted["emissions"]["energy_kwh"] * 3.6e6
    assert emitted["emissions"]["gco2"] == pytest.approx(grams(energy_j, table.average("FR")))
    # Carbon-blind, the same energy at the pool's mean intensity when it was submitted
    # (the grids weighed by their workers' measured speeds: between France's and Germany's).
    blind = emitted["emissions"]["gco2_blind"]
    assert emitted["emissions"]["gco2"] < blind < grams(energy_j, table.average("DE"))
    assert emitted["emissions"]["saved_share"] == pytest.approx(
        1 - emitted["emissions"]["gco2"] / blind
    )


def test_the_owners_grid_rule_pauses_a_worker_on_a_dirty_grid(tmp_path: Path) -> None:
    with pool(tmp_path / "pool", target_chunk_s=0.1) as p:
        p.add_worker(1, "--grid-zone", "DE", "--max-grid-intensity", "100")
        p.add_worker(1, "--grid-zone", "FR", "--max-grid-intensity", "100")
        wait_until(lambda: p.online_workers() == 2, what="both workers to join")
        with p.client() as client:

            def german_paused() -> dict[str, object] | None:
                # Paused at first for want of an intensity (until its first exchange's
                # answer), then for its grid's.
                worker = next(w for w in client.workers() if w["name"] == "test-0")
                grid_rule = "grid at" in str(worker["state_reason"])
                return worker if worker["state"] == "paused" and grid_rule else None

            paused = wait_until(german_paused, what="the German worker to pause")
            assert "grid at 381 gCO2/kWh" in str(paused["state_reason"])
            job = client.submit("pi", samples=10**7, seed=5)
            job.wait(timeout=120)
            done = {w["name"]: w["chunks_done"] for w in client.workers()}
    assert done["test-0"] == 0 and done["test-1"] > 0
