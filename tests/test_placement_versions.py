"""Mixed versions: a job whose parameters older workers would refuse goes only to workers
that run a version that knows them (core/placement.py, Store exchange, the API)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hydracompute import __version__
from hydracompute.core.config import SchedulerConfig
from hydracompute.core.placement import may_run, version_key
from hydracompute.kinds import KindRegistry
from hydracompute.kinds.mandelbrot import TILE_SINCE, MandelbrotKind
from hydracompute.store import Store
from tests.test_store_verification import BACKEND_KINDS, backend_for, backend_kind_of


def test_versions_compare_by_their_release_numbers() -> None:
    assert version_key("0.2.0") == (0, 2)  # trailing zeros dropped: "0.2" is the same
    assert version_key("0.10.1rc2") == (0, 10, 1)
    assert version_key("") == version_key("dev") == ()
    assert may_run("", "") and may_run("", "0.1.0")  # no minimum: anyone
    assert may_run("0.2.0", "0.2.0") and may_run("0.2.0", "0.10.0") and may_run("0.2", "0.2.0")
    assert not may_run("0.2.0", "0.1.9") and not may_run("0.2.0", "")
    assert may_run(TILE_SINCE, __version__)  # this version runs what it submits


@pytest.fixture(params=BACKEND_KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    kinds = KindRegistry()
    kinds.register(MandelbrotKind())
    backend = backend_for(backend_kind_of(request), tmp_path / "s.db")
    s = Store(backend, kinds, SchedulerConfig(target_chunk_s=1.0, heartbeat_s=1.0))
    yield s
    s.close()


def test_a_job_naming_its_tile_side_skips_workers_too_old_to_know_it(store: Store) -> None:
    tiled = store.submit_job("mandelbrot", {"width": 1024, "height": 1024, "tile": 16}, now=0.0)
    assert store.get_job(tiled.job_id).params["tile"] == 16
    old, _ = store.enrol_worker("old", 1, ["mandelbrot"], now=0.0, version="0.1.0")
    silent, _ = store.enrol_worker("silent", 1, ["mandelbrot"], now=0.0, version="")
    new, _ = store.enrol_worker("new", 1, ["mandelbrot"], now=0.0, version=TILE_SINCE)
    assert [w.version for w in store.list_workers() if w.worker_id == old.worker_id] == ["0.1.0"]
    for worker in (old, silent):
        assert store.exchange(worker.worker_id, [], [], 1, now=0.1).leases == []
    (lease,) = store.exchange(new.worker_id, [], [], 1, now=0.1).leases
    assert lease.job_id == tiled.job_id
    # A job of the same kind that names no tile goes to the old worker as before.
    plain = store.submit_job("mandelbrot", {"width": 256, "height": 256}, now=0.2)
    assert "tile" not in store.get_job(plain.job_id).params
    (lease,) = store.exchange(old.worker_id, [], [], 1, now=0.3).leases
    assert lease.job_id == plain.job_id
    # Upgraded and started again, the old worker says so and gets the tiled job too.
    store.cancel_job(plain.job_id, now=0.4)
    store.update_worker_profile(old.worker_id, 1, ["mandelbrot"], now=0.4, version="0.2.1")
    (lease,) = store.exchange(old.worker_id, [], [], 1, now=0.5).leases
    assert lease.job_id == tiled.job_id


def test_a_worker_says_its_version_when_it_joins_and_the_pool_shows_it() -> None:
    from tests.test_api import open_pool

    with open_pool() as pool:
        new = pool.enrol("new", version=__version__)  # as the agent does (worker/link.py)
        old = pool.enrol("old")  # an agent from before versions were sent
        workers = pool.client.get("/api/v1/workers").json()["workers"]
        shown = {w["worker_id"]: w["version"] for w in workers}
        assert shown == {new.worker_id: __version__, old.worker_id: ""}


def test_trailing_zeros_do_not_make_a_version_older() -> None:
    # "0.2" is release 0.2.0: a worker saying so runs what a job needing 0.2.0 asks.
    assert version_key("0.2") == version_key("0.2.0") == version_key("0.2.0.0")
    assert may_run("0.2.0", "0.2") and may_run("1.0.0", "1")
    assert version_key("0") == version_key("0.0") and version_key("0") != version_key("")
    assert not may_run("0.2.0", "0.1") and not may_run("1.0.1", "1")


def test_a_job_only_older_workers_could_run_says_why_it_waits() -> None:
    from tests.test_api import open_pool, registry_with_pi

    kinds = registry_with_pi()
    kinds.register(MandelbrotKind())
    with open_pool(kinds=kinds) as pool:
        params = {"width": 256, "height": 256, "tile": 16}
        body = {"kind": "mandelbrot", "params": params}
        job_id = pool.client.post("/api/v1/jobs", json=body).json()["job_id"]
        pool.enrol("old", kinds=("mandelbrot",), version="0.1.0")
        why = "no online worker with kind mandelbrot runs Hydra Compute 0.2.0 or later"
        assert why in str(pool.job(job_id)["waiting_reason"])
        (listed,) = pool.client.get("/api/v1/jobs").json()["jobs"]
        assert why in str(listed["waiting_reason"])
        pool.enrol("new", kinds=("mandelbrot",), version=TILE_SINCE)
        assert pool.job(job_id)["waiting_reason"] is None
