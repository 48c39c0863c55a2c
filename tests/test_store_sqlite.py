"""What only the SQLite backend promises: durability across reopening, and migrations."""

from __future__ import annotations

import dataclasses
import gc
import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from hydracompute.core.config import SchedulerConfig
from hydracompute.core.fairshare import RunningJob
from hydracompute.core.models import ChunkState, JobState, LeaseState
from hydracompute.errors import NotFound, StoreError, Unauthorized
from hydracompute.kinds import Answer, KindRegistry
from hydracompute.store import ResultReport, SQLiteBackend, Store, open_backend
from hydracompute.store.backend import StoredOutput
from hydracompute.store.memory import MemoryBackend
from hydracompute.store.records import ExchangeRequest
from hydracompute.store.sqlite import MIGRATIONS
from tests.sum_kind import SumKind, sum_registry

CONFIG = SchedulerConfig(target_chunk_s=1.0, heartbeat_s=1.0)


def test_a_removed_or_updated_worker_stays_so_after_reopening(tmp_path: Path) -> None:
    path = tmp_path / "pool.db"
    store = Store(SQLiteBackend(path), sum_registry(), CONFIG)
    kept, kept_secret = store.enrol_worker("kept", 1, ["sum"], now=0.0)
    gone, gone_secret = store.enrol_worker("gone", 1, ["sum"], now=0.0)
    store.update_worker_profile(kept.worker_id, 6, ["pi", "sum"], now=1.0)
    store.authenticate_worker(gone.worker_id, gone_secret)  # its row is remembered now
    store.remove_worker(gone.worker_id, now=2.0)
    with pytest.raises(Unauthorized):  # not served from the remembered rows
        store.authenticate_worker(gone.worker_id, gone_secret)
    reopened = Store(SQLiteBackend(path), sum_registry(), CONFIG)
    (worker,) = reopened.list_workers()
    assert (worker.worker_id, worker.cores, worker.kinds) == (kept.worker_id, 6, ["pi", "sum"])
    assert reopened.authenticate_worker(kept.worker_id, kept_secret).cores == 6
    with pytest.raises(Unauthorized):
        reopened.authenticate_worker(gone.worker_id, gone_secret)


def test_acknowledged_state_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "pool.db"
    store = Store(SQLiteBackend(path), sum_registry(), CONFIG)
    job = store.submit_job("sum", {"n": 10}, now=0.0)
    worker, secret = store.enrol_worker("a", 1, ["sum"], now=0.0)
    (grant,) = store.exchange(worker.worker_id, [], [], 1, now=0.0).leases
    report = ResultReport(grant.lease_id, {"total": sum(range(grant.start, grant.stop))}, 0.1)
    store.exchange(worker.worker_id, [report], [], 0, now=0.5)
    # No close(): as if the process had been killed after acknowledging.
    reopened = Store(SQLiteBackend(path), sum_registry(), CONFIG)
    assert reopened.authenticate_worker(worker.worker_id, secret).chunks_done == 1
    assert reopened.get_job(job.job_id).units_done == grant.stop - grant.start
    assert reopened.job_outputs(job.job_id)[0].output == report.output
    assert reopened.get_job(job.job_id).state is JobState.RUNNING


def test_schema_version_is_recorded_and_newer_schemas_refused(tmp_path: Path) -> None:
    path = tmp_path / "pool.db"
    SQLiteBackend(path).close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="newer"):
        SQLiteBackend(path)


def test_store_urls(tmp_path: Path) -> None:
    assert isinstance(open_backend("memory://"), MemoryBackend)
    backend = open_backend(f"sqlite:///{tmp_path}/a.db")
    assert isinstance(backend, SQLiteBackend) and backend.path == f"{tmp_path}/a.db"
    assert isinstance(open_backend(str(tmp_path / "b.db")), SQLiteBackend)
    with pytest.raises(ValueError, match="unsupported"):
        open_backend("mysql://x")


def _exchange_cost(
    backend: SQLiteBackend, store: Store, worker_id: str, report: Any, now: float
) -> tuple[int, Any]:
    """SQLite virtual-machine steps of one exchange (a deterministic count, unlike time)."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    backend._db.set_progress_handler(count, 1)
    try:
        outcome = store.exchange(worker_id, [report] if report else [], [], 1, now=now)
    finally:
        backend._db.set_progress_handler(None, 1)
    return steps, outcome


def test_the_cost_of_an_exchange_does_not_grow_with_the_job(tmp_path: Path) -> None:
    # Each exchange returns one chunk and takes the next; measured after 50 and after
    # 3,000 finished chunks of the same job. A query that reads every chunk of the job (as
    # the pending-chunk lookup once did, walking the primary key) shows up as growth.
    backend = SQLiteBackend(tmp_path / "pool.db")
    store = Store(backend, sum_registry(), SchedulerConfig(target_chunk_s=0.01))
    store.submit_job("sum", {"n": 10**6}, now=0.0)
    worker, _ = store.enrol_worker("a", 1, ["sum"], now=0.0)
    costs: dict[int, int] = {}
    report = None
    for n in range(3001):
        now = float(n)
        steps, outcome = _exchange_cost(backend, store, worker.worker_id, report, now)
        (grant,) = outcome.leases
        total = sum(range(grant.start, grant.stop))
        report = ResultReport(grant.lease_id, {"total": total}, compute_s=1.0)
        costs[n] = steps
    assert costs[3000] < 1.2 * costs[50], costs


def test_the_running_jobs_seen_by_exchanges_follow_commits_and_rollbacks(tmp_path: Path) -> None:
    backend = SQLiteBackend(tmp_path / "pool.db")
    store = Store(backend, sum_registry(), CONFIG)
    first = store.submit_job("sum", {"n": 10}, now=0.0)
    with backend.transaction():
        assert list(backend.running_jobs()) == [RunningJob(first.job_id, "sum", "")]
    # A change undone (a refused exchange's savepoint, or the whole transaction) is not seen.
    with pytest.raises(RuntimeError), backend.transaction():
        with backend.transaction():
            first.state = JobState.DONE
            backend.put_job(first)
            assert list(backend.running_jobs()) == []
        raise RuntimeError("refused")
    with backend.transaction():
        assert list(backend.running_jobs()) == [RunningJob(first.job_id, "sum", "")]
    # A change committed by another connection to the same file is seen.
    other = sqlite3.connect(tmp_path / "pool.db")
    other.execute("UPDATE jobs SET state = 'cancelled'")
    other.commit()
    other.close()
    with backend.transaction():
        assert list(backend.running_jobs()) == []
    second = store.submit_job("sum", {"n": 10}, now=1.0)
    with backend.transaction():
        assert list(backend.running_jobs()) == [RunningJob(second.job_id, "sum", "")]


def test_remembered_rows_follow_commits_and_rollbacks(tmp_path: Path) -> None:
    backend = SQLiteBackend(tmp_path / "pool.db")
    store = Store(backend, sum_registry(), CONFIG)
    worker, _ = store.enrol_worker("w", 1, ["sum"], now=0.0)
    with backend.transaction():
        assert backend.get_worker(worker.worker_id) == worker
    # A copy: changing what was read changes nothing until it is put back.
    with backend.transaction():
        backend.get_worker(worker.worker_id).speeds["sum"] = 9.0  # type: ignore[union-attr]
        assert backend.get_worker(worker.worker_id) == worker
    # A write undone by a savepoint's rollback (its transaction going on and committing, as
    # a batch does after a refused exchange), then by the whole transaction's, is not seen.
    with backend.transaction():
        with pytest.raises(RuntimeError), backend.transaction():
            backend.put_worker(dataclasses.replace(worker, chunks_done=5))
            raise RuntimeError("refused")
        assert backend.get_worker(worker.worker_id) == worker
    assert backend.get_worker(worker.worker_id) == worker
    with pytest.raises(RuntimeError), backend.transaction():
        backend.put_worker(dataclasses.replace(worker, chunks_done=5))
        raise RuntimeError("refused")
    with backend.transaction():
        assert backend.get_worker(worker.worker_id) == worker
    # A change committed by another connection to the same file is seen.
    other = sqlite3.connect(tmp_path / "pool.db")
    other.execute("UPDATE workers SET revoked = 1")
    other.commit()
    other.close()
    with backend.transaction():
        assert backend.get_worker(worker.worker_id).revoked  # type: ignore[union-attr]
    with pytest.raises(Unauthorized):
        store.exchange(worker.worker_id, [], [], 1, now=1.0)


def test_remembered_leases_follow_commits_and_rollbacks(tmp_path: Path) -> None:
    backend = SQLiteBackend(tmp_path / "pool.db")
    store = Store(backend, sum_registry(), CONFIG)
    store.submit_job("sum", {"n": 10}, now=0.0)
    worker, _ = store.enrol_worker("w", 1, ["sum"], now=0.0)
    (grant,) = store.exchange(worker.worker_id, [], [], 1, now=0.0).leases
    lease = backend.get_lease(grant.lease_id)
    assert lease is not None and lease.state is LeaseState.ACTIVE
    with pytest.raises(RuntimeError), backend.transaction():
        backend.put_lease(dataclasses.replace(lease, state=LeaseState.DONE))
        raise RuntimeError("refused")
    assert backend.get_lease(grant.lease_id) == lease
    other = sqlite3.connect(tmp_path / "pool.db")
    other.execute("UPDATE leases SET state = 'returned'")
    other.commit()
    other.close()
    assert backend.get_lease(grant.lease_id).state is LeaseState.RETURNED  # type: ignore[union-attr]


def test_pending_chunks_known_to_be_none_follow_commits_and_rollbacks(tmp_path: Path) -> None:
    backend = SQLiteBackend(tmp_path / "pool.db")
    store = Store(backend, sum_registry(), CONFIG)
    job = store.submit_job("sum", {"n": 10}, now=0.0)
    worker, _ = store.enrol_worker("w", 1, ["sum"], now=0.0)
    (grant,) = store.exchange(worker.worker_id, [], [], 1, now=0.0).leases
    with backend.transaction():
        assert backend.pending_chunks(job.job_id, 10) == []
    chunk = backend.get_chunk(job.job_id, grant.chunk_index)
    assert chunk is not None
    # Undone: still none.
    with pytest.raises(RuntimeError), backend.transaction():
        backend.put_chunk(dataclasses.replace(chunk, state=ChunkState.PENDING))
        assert [c.index for c in backend.pending_chunks(job.job_id, 10)] == [chunk.index]
        raise RuntimeError("refused")
    with backend.transaction():
        assert backend.pending_chunks(job.job_id, 10) == []
    # Made pending by this connection (an expired lease), then by another: found each time.
    assert store.expire_leases(now=CONFIG.lease_ttl_s + 1) == 1
    with backend.transaction():
        assert [c.index for c in backend.pending_chunks(job.job_id, 10)] == [chunk.index]
    store.exchange(worker.worker_id, [], [], 1, now=CONFIG.lease_ttl_s + 2)
    with backend.transaction():
        assert backend.pending_chunks(job.job_id, 10) == []
    other = sqlite3.connect(tmp_path / "pool.db")
    other.execute("UPDATE chunks SET state = 'pending'")
    other.commit()
    other.close()
    with backend.transaction():
        assert [c.index for c in backend.pending_chunks(job.job_id, 10)] == [chunk.index]


class LiveSumKind(SumKind):
    """The sum kind, answered from its live summary: its merge must never be needed."""

    def answer_from_live(self, params: dict[str, Any], live: dict[str, Any]) -> Answer:
        return Answer(summary={"total": live["total"]})

    def merge(self, params: dict[str, Any], outputs: Any) -> Answer:
        raise AssertionError("merge read every output of the job")


def test_a_job_answered_from_its_live_summary_is_finished_without_its_outputs(
    tmp_path: Path,
) -> None:
    kinds = KindRegistry()
    kinds.register(LiveSumKind())
    store = Store(SQLiteBackend(tmp_path / "pool.db"), kinds, CONFIG)
    job = store.submit_job("sum", {"n": 5000}, now=0.0)
    worker, _ = store.enrol_worker("a", 3, ["sum"], now=0.0)
    report: list[ResultReport] = []
    now = 0.0
    while store.get_job(job.job_id).state is JobState.RUNNING:
        now += 0.5
        leases = store.exchange(worker.worker_id, report, [], 3, now=now).leases
        report = [
            ResultReport(g.lease_id, {"total": sum(range(g.start, g.stop))}, 0.1) for g in leases
        ]
    done = store.get_job(job.job_id)
    assert done.state is JobState.DONE and done.answer == {"total": sum(range(5000))}


def test_a_refused_exchange_leaves_nothing_for_the_garbage_collector(tmp_path: Path) -> None:
    """The coordinator collects garbage only now and then: a refused exchange must not
    keep its batch alive in a reference cycle (its error's traceback held the batch)."""
    store = Store(SQLiteBackend(tmp_path / "pool.db"), sum_registry(), CONFIG)
    store.submit_job("sum", {"n": 10}, now=0.0)
    worker, _ = store.enrol_worker("w", 1, ["sum"], now=0.0)
    forged = ResultReport("ab" * 16, {"total": 1}, 0.1)
    gc.collect()
    gc.disable()
    try:
        answers = store.exchange_many([ExchangeRequest(worker.worker_id, [forged], [], 1, 1.0)] * 3)
        assert all(isinstance(a, NotFound) for a in answers)
        del answers
        assert gc.collect() == 0
    finally:
        gc.enable()


def test_payloads_written_before_the_blob_store_are_read_after_the_migration(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path, isolation_level=None)
    blob_migration = 6  # outputs and artefacts gained their blob column
    for migration in MIGRATIONS[: blob_migration - 1]:
        db.executescript(migration)
    db.execute(f"PRAGMA user_version = {blob_migration - 1}")
    big = {"counts": "y" * 100_000}
    db.execute("INSERT INTO outputs VALUES ('job1', 0, 0, 4, ?)", (json.dumps(big),))
    db.execute("INSERT INTO artefacts VALUES ('job1', 'image.png', 'image/png', X'89504e47')")
    db.close()
    backend = SQLiteBackend(path)
    assert backend.schema_version == len(MIGRATIONS) >= blob_migration
    with backend.transaction():
        output = backend.get_output("job1", 0)
        assert output is not None and output.output == big
        assert backend.get_artefact("job1", "image.png") == ("image/png", b"\x89PNG")
        backend.put_artefact("job1", "image.png", "image/png", b"new")  # now as a blob
        assert backend.get_artefact("job1", "image.png") == ("image/png", b"new")
    backend.close()


def test_workers_and_jobs_written_before_labels_have_none_after_the_migration(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    store = Store(SQLiteBackend(path), sum_registry(), CONFIG)
    worker, _ = store.enrol_worker("old", 2, ["sum"], 1.0)
    job = store.submit_job("sum", {"n": 10}, 1.0)
    store.close()
    db = sqlite3.connect(path, isolation_level=None)
    labels_migration = next(i for i, m in enumerate(MIGRATIONS, 1) if "labels" in m)
    for migration in reversed(MIGRATIONS[labels_migration - 1 :]):
        undo(db, migration)
    db.execute(f"PRAGMA user_version = {labels_migration - 1}")
    db.close()
    store = Store(SQLiteBackend(path), sum_registry(), CONFIG)
    assert store.get_job(job.job_id).required_labels == []
    assert store.label_worker(worker.worker_id, add=["trusted"]).labels == ["trusted"]
    store.close()
    reopened = Store(SQLiteBackend(path), sum_registry(), CONFIG)
    assert [w.labels for w in reopened.list_workers()] == [["trusted"]]
    reopened.close()


def undo(db: sqlite3.Connection, migration: str) -> None:
    """Take back what ``migration`` added (its tables, indexes and columns), as if the
    file had been written before it."""
    for index in re.findall(r"CREATE INDEX (\w+)", migration):
        db.execute(f"DROP INDEX IF EXISTS {index}")
    for table in re.findall(r"CREATE TABLE (\w+)", migration):
        db.execute(f"DROP TABLE IF EXISTS {table}")
    for table, column in re.findall(r"ALTER TABLE (\w+) ADD COLUMN (\w+)", migration):
        db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")


def test_the_blob_folder_is_beside_the_database_file(tmp_path: Path) -> None:
    store = Store(SQLiteBackend(tmp_path / "pool.db"), sum_registry(), CONFIG)
    big = {"counts": "z" * 20_000}
    with store.backend.transaction():
        store.backend.put_output(StoredOutput("job1", 3, 0, 1, big))
        store.backend.put_artefact("job1", "counts.npy", "application/octet-stream", b"npy")
    store.close()
    folder = tmp_path / "pool.db-blobs" / "jobs" / "job1"
    assert (folder / "artefacts" / "counts.npy").read_bytes() == b"npy"
    (output_blob,) = (folder / "outputs").iterdir()
    assert json.loads(output_blob.read_bytes()) == big
    db = sqlite3.connect(tmp_path / "pool.db")
    assert db.execute("SELECT output, blob FROM outputs").fetchall() == [
        ("", f"outputs/{output_blob.name}")
    ]
    db.close()
    reopened = SQLiteBackend(tmp_path / "pool.db")
    with reopened.transaction():
        assert reopened.get_output("job1", 3) == StoredOutput("job1", 3, 0, 1, big)
    reopened.close()
