"""End to end, with real processes: a submitter's huge π job holds the pool, another's small
job is submitted behind it and finishes while the huge one still runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from hydracompute.client import Client
from tests.e2e_support import Pool, pool, wait_until

pytestmark = pytest.mark.e2e


def submitter_client(p: Pool, admin: Client, name: str) -> Client:
    key = admin.request("POST", "/api/v1/keys", json={"role": "submitter", "name": name}).json()
    return Client(p.url, api_key=key["secret"], ca_fingerprint=p.coordinator.ca_fingerprint)


def test_a_small_job_behind_a_huge_one_finishes_while_it_runs(tmp_path: Path) -> None:
    with pool(tmp_path / "pool", target_chunk_s=0.2, heartbeat_s=0.5) as p:
        p.add_worker(cores=1)
        p.add_worker(cores=1)
        with p.client() as admin:
            alice, bob = submitter_client(p, admin, "alice"), submitter_client(p, admin, "bob")
            with alice, bob:
                huge = alice.submit("pi", samples=10**15, seed=1)
                wait_until(lambda: huge.info().units_done > 0, what="the huge job to start")
                small = bob.submit("pi", samples=2 * 10**8, seed=2)
                shares = {s["owner"]: s for s in admin.shares()}
                assert [s["share"] for s in shares.values() if s["running_jobs"]] == [0.5, 0.5]
                done = small.wait(timeout=60)
                assert done.state == "done", done.raw
                status = huge.info()
                assert status.state == "running"  # it still had nearly all its work to do
                # Bob has no running job left: Alice is entitled to the whole pool again.
                assert status.raw["owner_share"]["share"] == 1.0
                assert status.raw["owner_share"]["usage_s"] > 0
                huge.cancel()
