"""The fair share between submitters, through the store, on every backend: usage is
charged at each grant and kept by the backend, and it orders the jobs a worker gets."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from hydracompute.core.config import SchedulerConfig
from hydracompute.core.fairshare import Usage
from hydracompute.core.models import CredentialKind, Role
from hydracompute.errors import InvalidParams, InvalidRequest
from hydracompute.store import ResultReport, SQLiteBackend, Store
from hydracompute.store.records import ExchangeRequest
from hydracompute.store.sqlite import MIGRATIONS
from tests.sum_kind import SumKind, sum_registry
from tests.test_store_verification import BACKEND_KINDS, backend_for, backend_kind_of

CONFIG = SchedulerConfig(target_chunk_s=1.0, heartbeat_s=1.0, max_failures=3)


@pytest.fixture(params=BACKEND_KINDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s = Store(backend_for(backend_kind_of(request), tmp_path / "s.db"), sum_registry(), CONFIG)
    yield s
    s.close()


def fast_worker(store: Store, name: str, now: float) -> str:
    """A one-core worker whose speed is known (100 units/s): its chunks cost units/100 s."""
    worker, _ = store.enrol_worker(name, 1, ["sum"], now)
    lease = store.exchange(worker.worker_id, [], [], 1, now).leases
    if lease:  # its probe, computed at once (and charged to whoever owned it)
        grant = lease[0]
        output = SumKind().compute(grant.params, grant.start, grant.stop)
        report = ResultReport(grant.lease_id, output, compute_s=(grant.stop - grant.start) / 100)
        store.exchange(worker.worker_id, [report], [], 0, now + 1.0)
    return worker.worker_id


def owners_of(store: Store, grants: list[tuple[str, str]]) -> list[str]:
    return [store.get_job(job_id).owner for _, job_id in grants]


def test_a_small_job_behind_a_huge_one_gets_the_next_chunk(store: Store) -> None:
    store.submit_job("sum", {"n": 10**9}, now=0.0, owner="k-alice")
    workers = [fast_worker(store, f"w{i}", 0.0) for i in range(4)]
    for worker_id in workers:  # Alice's job has the pool to itself for a while
        store.exchange(worker_id, [], [], 1, 2.0)
    small = store.submit_job("sum", {"n": 1000}, now=3.0, owner="k-bob")
    extra = fast_worker(store, "late", 3.0)
    grant = store.exchange(extra, [], [], 1, 3.5).leases[0]
    assert grant.job_id == small.job_id


def test_two_owners_alternate_and_usage_is_kept_by_the_backend(store: Store) -> None:
    first = store.submit_job("sum", {"n": 10**9}, now=0.0, owner="k-alice")
    second = store.submit_job("sum", {"n": 10**9}, now=0.0, owner="k-bob")
    workers = [fast_worker(store, f"w{i}", 0.0) for i in range(6)]
    now, seen = 2.0, []
    for _ in range(5):
        for worker_id in workers:
            seen += [g.job_id for g in store.exchange(worker_id, [], [], 1, now).leases]
        now += 1.0
    assert abs(seen.count(first.job_id) - seen.count(second.job_id)) <= 2, seen
    with store.backend.transaction():
        usage = store.backend.owner_usage()
    assert usage["k-alice"].usage_s > 0 and usage["k-bob"].usage_s > 0
    assert usage["k-alice"].usage_s == pytest.approx(usage["k-bob"].usage_s, rel=0.5)
    shares = {s.owner: s for s in store.owner_shares(now)}
    assert shares["k-alice"].share == shares["k-bob"].share == 0.5
    assert shares["k-alice"].running_jobs == 1


def test_a_second_store_on_the_same_database_sees_the_usage(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    one = Store(SQLiteBackend(path), sum_registry(), CONFIG)
    two = Store(SQLiteBackend(path), sum_registry(), CONFIG)
    one.submit_job("sum", {"n": 10**9}, now=0.0, owner="k-alice")
    worker = fast_worker(one, "w", 0.0)
    one.exchange(worker, [], [], 1, 2.0)
    # The other coordinator, whose cache of the usage was filled before: it follows.
    with two.backend.transaction():
        assert two.backend.owner_usage()["k-alice"].usage_s > 0
    bob = two.submit_job("sum", {"n": 100}, now=2.5, owner="k-bob")
    other = fast_worker(two, "w2", 2.5)  # its probe goes to Bob, who has no usage
    assert two.get_job(bob.job_id).next_unit > 0
    assert two.exchange(other, [], [], 1, 3.0).leases[0].job_id == bob.job_id
    one.close()
    two.close()


def test_replicas_are_charged_to_their_owner(store: Store) -> None:
    single = store.submit_job("sum", {"n": 10**6}, now=0.0, owner="k-single")
    double = store.submit_job("sum", {"n": 10**6}, now=0.0, owner="k-double", replication=2)
    workers = [fast_worker(store, f"w{i}", 0.0) for i in range(4)]
    store.cancel_job(single.job_id, 1.0)  # the probes went to either: start from here
    with store.backend.transaction():
        before = store.backend.owner_usage()
    grants = [g for w in workers for g in store.exchange(w, [], [], 1, 1.0).leases]
    assert {g.job_id for g in grants} == {double.job_id}
    chunks = {g.chunk_index for g in grants}
    assert len(grants) == 2 * len(chunks)  # two copies of each chunk, each charged
    with store.backend.transaction():
        after = store.backend.owner_usage()["k-double"]
    units = sum(g.stop - g.start for g in grants)
    charged = after.usage_s - store.fair_share.usage_at(before.get("k-double"), 1.0)
    assert charged == pytest.approx(units / 100.0, rel=0.01)


def test_an_admin_weight_shifts_the_share(store: Store) -> None:
    key, _ = store.credentials.issue(CredentialKind.API_KEY, "big", 0.0, Role.SUBMITTER)
    store.credentials.set_weight(key.cred_id, 3.0)
    heavy = store.submit_job("sum", {"n": 10**9}, now=0.0, owner=key.cred_id)
    light = store.submit_job("sum", {"n": 10**9}, now=0.0, owner="k-light")
    workers = [fast_worker(store, f"w{i}", 0.0) for i in range(8)]
    now, seen = 2.0, []
    for _ in range(6):
        for worker_id in workers:
            seen += [g.job_id for g in store.exchange(worker_id, [], [], 1, now).leases]
        now += 1.0
    assert seen.count(heavy.job_id) > 2 * seen.count(light.job_id) > 0
    shares = {s.owner: s.share for s in store.owner_shares(now)}
    assert shares == {key.cred_id: 0.75, "k-light": 0.25}
    with pytest.raises(InvalidRequest):
        store.credentials.set_weight(key.cred_id, 0.0)


def test_priority_orders_an_owners_jobs(store: Store) -> None:
    store.submit_job("sum", {"n": 10**6}, now=0.0, owner="k-alice")
    urgent = store.submit_job("sum", {"n": 10**6}, now=1.0, owner="k-alice", priority=10)
    worker = fast_worker(store, "w", 1.0)
    assert store.exchange(worker, [], [], 1, 2.0).leases[0].job_id == urgent.job_id
    assert store.get_job(urgent.job_id).priority == 10
    with pytest.raises(InvalidParams):
        store.submit_job("sum", {"n": 10}, now=0.0, priority=101)


def test_a_refused_exchange_in_a_batch_charges_nobody(store: Store) -> None:
    store.submit_job("sum", {"n": 10**9}, now=0.0, owner="k-alice")
    worker = fast_worker(store, "w", 0.0)
    with store.backend.transaction():
        before = store.backend.owner_usage()
    refused = ExchangeRequest(worker, [ResultReport("ffff", {"total": 0})], [], 1, 2.0)
    answers = store.exchange_many([refused])
    assert isinstance(answers[0], Exception)
    with store.backend.transaction():
        assert store.backend.owner_usage() == before
    answers = store.exchange_many([ExchangeRequest(worker, [], [], 1, 2.0)])
    with store.backend.transaction():
        after = store.backend.owner_usage()["k-alice"]
    assert after.usage_s > store.fair_share.usage_at(before["k-alice"], 2.0)


def test_the_fair_share_migration_keeps_existing_jobs(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path, isolation_level=None)
    for migration in MIGRATIONS[:-1]:
        db.executescript(migration)
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) - 1}")
    db.close()
    old = Store(SQLiteBackend(path), sum_registry(), CONFIG)
    job = old.submit_job("sum", {"n": 10}, now=0.0, owner="k-a", priority=3)
    old.backend.put_owner_usage({"k-a": Usage(1.0, 0.0)})
    assert old.get_job(job.job_id).priority == 3
    old.close()
