"""Grid zones, deadlines, carbon modes and emissions over the HTTP API, in process, with
the annual-average source behind the coordinator's cache."""

from __future__ import annotations

import pytest

from hydracompute.carbon.annual import AnnualSource, annual_table
from hydracompute.carbon.cache import IntensityCache
from hydracompute.core.carbon import grams
from tests.test_api import assert_problem, finish_job, open_pool


def test_zones_deadlines_and_emissions_through_the_api() -> None:
    table = annual_table()
    with open_pool(carbon=IntensityCache(AnnualSource())) as pool:
        france = pool.enrol("fr", grid_zone="FR", watts_per_core=4.0, power_measured=True)
        nowhere = pool.enrol("nowhere")
        assert_problem(
            pool.client.post(
                "/api/v1/workers",
                json={
                    "name": "x",
                    "cores": 1,
                    "kinds": ["sum"],
                    "join_token": pool.join_token,
                    "grid_zone": "DE; rm -rf",
                },
            ),
            422,
        )
        answer = pool.exchange(france, want=0)
        assert answer["grid_gco2_per_kwh"] == table.average("FR")
        assert "grid_gco2_per_kwh" not in pool.exchange(nowhere, want=0)
        # prefer-clean needs a deadline; a deadline has limits; nothing is recorded.
        before = pool.client.get("/api/v1/jobs").json()
        for bad in ({"carbon": "prefer-clean"}, {"deadline_s": 10}, {"carbon": "greenest"}):
            response = pool.client.post(
                "/api/v1/jobs", json={"kind": "sum", "params": {"n": 10}, **bad}
            )
            assert_problem(response, 422)
        assert pool.client.get("/api/v1/jobs").json() == before
        job = pool.submit(n=300, deadline_s=6 * 3600.0, carbon="prefer-clean")
        assert job["carbon"] == "prefer-clean"
        assert job["deadline_s"] == pytest.approx(job["created_s"] + 6 * 3600)
        finish_job(pool, france, job["job_id"])
        emitted = pool.job(job["job_id"])["emissions"]
        (zone,) = emitted["zones"]
        assert zone["zone"] == "FR" and zone["chunks"] > 0
        assert emitted["energy_measured_kwh"] == emitted["energy_kwh"] > 0
        energy_j = emitted["energy_kwh"] * 3.6e6
        assert emitted["gco2"] == pytest.approx(grams(energy_j, table.average("FR")))
        # The pool's grids, and the credit statement's CO2.
        grids = pool.client.get("/api/v1/carbon").json()
        assert [z["zone"] for z in grids["zones"]] == ["FR"]
        (fr,) = grids["zones"]
        assert fr["workers_online"] == 1 and fr["cores_online"] == 4
        assert fr["gco2_per_kwh"] == table.average("FR") and fr["origin"] == "annual"
        assert fr["forecast"][0][1] == table.average("FR")
        assert grids["gco2"] == pytest.approx(emitted["gco2"])
        statement = pool.client.get("/api/v1/credit", params={"by": "worker"}).json()
        assert statement["total"]["gco2"] == pytest.approx(emitted["gco2"])
        workers = {w["name"]: w for w in pool.client.get("/api/v1/workers").json()["workers"]}
        assert workers["fr"]["grid_zone"] == "FR"
        assert (
            workers["nowhere"]["grid_zone"] == ""
            and workers["nowhere"]["grid_gco2_per_kwh"] is None
        )
        # A list of jobs leaves the ledger alone: no emissions there.
        assert all(j["emissions"] is None for j in pool.client.get("/api/v1/jobs").json()["jobs"])
