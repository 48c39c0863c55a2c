"""Two coordinators in one process, each with its own connection to one SQLite file: what
one records wakes the other's long-polled workers, job-end waiters and event streams; failed
sign-ins count for both; a database locked beyond the wait is answered 503, changing nothing.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from hydracompute.coordinator.app import create_app
from hydracompute.coordinator.auth import SecuritySettings
from hydracompute.coordinator.changes import PollingFeed
from hydracompute.coordinator.service import Coordinator
from hydracompute.core.config import SchedulerConfig
from hydracompute.core.models import CredentialKind, Role
from hydracompute.errors import StoreUnavailable, TooManyRequests
from hydracompute.store import ResultReport, SQLiteBackend, Store, open_backend
from hydracompute.store.shared import Change
from tests.sum_kind import SumKind, sum_registry

CONFIG = SchedulerConfig(target_chunk_s=1.0, heartbeat_s=5.0)


def open_store(path: Path, busy_timeout_s: float = 10.0) -> Store:
    return Store(SQLiteBackend(path, busy_timeout_s=busy_timeout_s), sum_registry(), CONFIG)


@asynccontextmanager
async def two_coordinators(path: Path) -> AsyncIterator[tuple[Coordinator, Coordinator]]:
    a = Coordinator(open_store(path), url="http://a")
    b = Coordinator(open_store(path), url="http://b")
    await a.start()
    await b.start()
    try:
        # Each has seen the other at a heartbeat: both now write and read the change log.
        await wait_for(lambda: a.peers.shared and b.peers.shared, "the coordinators meet")
        yield a, b
    finally:
        await a.stop()
        await b.stop()


async def wait_for(condition: object, what: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out: {what}")
        await asyncio.sleep(0.01)


def test_a_job_submitted_on_one_wakes_a_worker_held_by_the_other(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with two_coordinators(tmp_path / "pool.db") as (a, b):
            worker, _ = await b.call(b.store.enrol_worker, "w", 1, ["sum"], time.time())
            held = asyncio.ensure_future(b.exchange(worker.worker_id, [], [], 1, wait_s=20.0))
            await asyncio.sleep(0.3)  # the exchange is held by b: there is no work yet
            assert not held.done()
            began = time.monotonic()
            job = await a.call(a.store.submit_job, "sum", {"n": 10}, time.time())
            outcome = await asyncio.wait_for(held, 5.0)
            assert [g.job_id for g in outcome.leases] == [job.job_id]
            assert time.monotonic() - began < 2.0  # woken by the change, not the timeout

    asyncio.run(scenario())


def test_results_recorded_on_one_reach_the_others_waiters_and_event_streams(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        async with two_coordinators(tmp_path / "pool.db") as (a, b):
            job = await a.call(a.store.submit_job, "sum", {"n": 4}, time.time())
            worker, _ = await a.call(a.store.enrol_worker, "w", 1, ["sum"], time.time())
            page = b.events.subscribe(job.job_id)
            page.jobs.clear()
            with b.events.job_end(job.job_id) as ended:
                outcome = await a.exchange(worker.worker_id, [], [], 2, wait_s=0.0)
                reports = [
                    ResultReport(g.lease_id, SumKind().compute(g.params, g.start, g.stop), 0.1)
                    for g in outcome.leases
                ]
                while reports:
                    outcome = await a.exchange(worker.worker_id, reports, [], 2, wait_s=0.0)
                    reports = [
                        ResultReport(g.lease_id, SumKind().compute(g.params, g.start, g.stop))
                        for g in outcome.leases
                    ]
                await asyncio.wait_for(ended.wait(), 5.0)
            assert job.job_id in page.jobs
            assert sorted((c.start, c.stop) for c in page.chunks) == [(0, 2), (2, 4)]
            finished = await b.call(b.store.get_job, job.job_id)
            assert finished.answer == {"total": 6}

    asyncio.run(scenario())


def test_alone_a_coordinator_writes_no_changes(tmp_path: Path) -> None:
    async def scenario() -> None:
        c = Coordinator(open_store(tmp_path / "pool.db"), url="http://a")
        await c.start()
        try:
            await wait_for(lambda: c.peers.live, "the first heartbeat")
            await c.call(c.store.submit_job, "sum", {"n": 4}, time.time())
            assert not c.peers.shared and not c.store.record_changes
            assert await c.call(c.store.sharing.changes_after, 0) == (0, [])
        finally:
            await c.stop()

    asyncio.run(scenario())


def test_coordinators_list_each_other_and_a_stopped_one_leaves(tmp_path: Path) -> None:
    async def scenario() -> None:
        path = tmp_path / "pool.db"
        async with two_coordinators(path) as (a, b):
            assert a.peers.urls() == ["http://a", "http://b"]
            assert b.peers.urls() == ["http://b", "http://a"]
            await b.stop()
            await asyncio.to_thread(a.peers.beat)
            assert a.peers.urls() == ["http://a"] and not a.store.record_changes
            b.stop = _stopped  # type: ignore[method-assign]

    async def _stopped() -> None:
        return None

    asyncio.run(scenario())


def test_changes_read_skip_a_position_no_longer_kept(tmp_path: Path) -> None:
    store = open_store(tmp_path / "pool.db")
    store.record_changes, store.origin = True, "c-a"
    store.submit_job("sum", {"n": 4}, now=0.0)
    seq, changes = store.sharing.changes_after(0)
    assert [(c.origin, c.work, len(c.jobs)) for c in changes] == [("c-a", True, 1)]
    store.sharing.prune(now=1000.0)
    assert store.sharing.changes_after(0) == (seq, [])  # the position is still valid
    assert isinstance(changes[0], Change)


def test_failed_sign_ins_count_for_every_coordinator_of_the_pool(tmp_path: Path) -> None:
    path = tmp_path / "pool.db"
    first, second = open_store(path), open_store(path)
    settings = [SecuritySettings(api_rate_per_s=0.01, api_burst=3) for _ in range(2)]
    key = "failed:10.0.0.9"
    for i in range(3):  # spent alternately through both
        settings[i % 2].failures.spend([first, second][i % 2], key, now=100.0)
    _, admin = first.credentials.issue(CredentialKind.API_KEY, "admin", 0.0, Role.ADMIN)
    with pytest.raises(TooManyRequests) as refused:
        settings[1].failures.guarded(
            second, key, 100.5, second.credentials.check, CredentialKind.API_KEY, admin, 100.5
        )
    assert refused.value.extra["retry_after_s"] >= 1
    settings[1].failures.check_here("failed:10.0.0.8", 100.5)  # another address is not


def test_a_database_locked_beyond_the_wait_is_answered_503_and_nothing_is_lost(
    tmp_path: Path,
) -> None:
    path = tmp_path / "pool.db"
    store = open_store(path, busy_timeout_s=0.2)
    _, admin = store.credentials.issue(CredentialKind.API_KEY, "admin", time.time(), Role.ADMIN)
    app = create_app(store)
    headers = {"Authorization": f"Bearer {admin}"}

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://pool", headers=headers) as http,
        ):
            other = sqlite3.connect(path, isolation_level=None)
            other.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
            try:
                answer = await http.post("/api/v1/jobs", json={"kind": "sum", "params": {"n": 5}})
            finally:
                other.execute("ROLLBACK")
                other.close()
            assert answer.status_code == 503
            assert answer.headers["content-type"].startswith("application/problem+json")
            assert int(answer.headers["Retry-After"]) >= 1
            assert answer.json()["title"] == "Store unavailable"
            assert (await http.get("/api/v1/jobs")).json()["jobs"] == []  # nothing recorded
            again = await http.post("/api/v1/jobs", json={"kind": "sum", "params": {"n": 5}})
            assert again.status_code == 201

    asyncio.run(scenario())


def test_the_sqlite_backend_reports_a_lock_as_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "pool.db"
    backend = SQLiteBackend(path, busy_timeout_s=0.05)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreUnavailable, match="locked"), backend.transaction():
            pass
    finally:
        other.execute("ROLLBACK")
    with backend.transaction():  # free again
        assert backend.get_setting("x") is None


def test_the_database_holding_the_pools_secrets_is_private(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh.db"
    SQLiteBackend(fresh).close()
    old = tmp_path / "old.db"
    old.touch(mode=0o644)
    old.chmod(0o644)  # made before the database held secrets
    SQLiteBackend(old).close()
    for path in (fresh, old):
        assert path.stat().st_mode & 0o777 == 0o600


def test_a_worker_removed_through_one_is_refused_by_the_other_that_knew_its_secret(
    tmp_path: Path,
) -> None:
    path = tmp_path / "pool.db"
    stores = [open_store(path), open_store(path)]
    worker, secret = stores[0].enrol_worker("w", 1, ["sum"], time.time())
    apps = [create_app(s) for s in stores]
    headers = {"Authorization": f"Bearer {secret}"}
    exchange = f"/api/v1/workers/{worker.worker_id}/exchange"

    async def scenario() -> None:
        async with (
            apps[0].router.lifespan_context(apps[0]),
            apps[1].router.lifespan_context(apps[1]),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=apps[1]), base_url="http://b") as b,
        ):
            assert (await b.post(exchange, json={}, headers=headers)).status_code == 200
            await asyncio.to_thread(stores[0].remove_worker, worker.worker_id, time.time())
            refused = await b.post(exchange, json={}, headers=headers)
            assert refused.status_code == 401  # not 404: the worker enrols again
            assert worker.worker_id not in apps[1].state.coordinator.verified_workers

    asyncio.run(scenario())


def test_the_feed_passes_on_the_others_changes_only_and_waits_through_the_hook(
    tmp_path: Path,
) -> None:
    store = open_store(tmp_path / "pool.db")
    store.record_changes = True
    delivered: list[Change] = []
    waits: list[float] = []

    async def call(fn: Any, *args: Any) -> Any:
        return fn(*args)

    async def wait(timeout_s: float) -> None:  # as a LISTEN/NOTIFY waiter would be given
        waits.append(timeout_s)
        await asyncio.sleep(0)

    async def scenario() -> None:
        feed = PollingFeed(call, store.sharing, "c-a", lambda: True, period_s=0.25, wait=wait)
        task = asyncio.ensure_future(feed.run(delivered.append))
        await wait_for(lambda: len(waits) > 1, "the start position is read")
        store.origin = "c-a"
        store.submit_job("sum", {"n": 4}, now=1.0)  # this coordinator's own
        store.origin = "c-b"
        theirs = store.submit_job("sum", {"n": 4}, now=2.0)
        await wait_for(lambda: delivered, "the other's change")
        task.cancel()
        assert [(c.origin, c.jobs) for c in delivered] == [("c-b", {theirs.job_id})]
        assert set(waits) == {0.25}

    asyncio.run(scenario())


def test_a_sqlite_url_may_set_how_long_to_wait_for_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "pool.db"
    backend = open_backend(f"sqlite:///{path}?busy_timeout_s=0.5")
    assert backend.path == str(path)  # type: ignore[attr-defined]
    for bad in ("?busy_timeout_s=0", "?busy_timeout_s=soon", "?timeout=1"):
        with pytest.raises(ValueError, match=r"busy_timeout_s|unknown"):
            open_backend(f"sqlite:///{path}{bad}")
