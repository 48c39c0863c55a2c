"""What only the SQLite backend promises: durability across reopening, and migrations."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from hydracompute.core.config import SchedulerConfig
from hydracompute.core.models import JobState
from hydracompute.errors import StoreError
from hydracompute.store import ResultReport, SQLiteBackend, Store, open_backend
from hydracompute.store.memory import MemoryBackend
from hydracompute.store.sqlite import MIGRATIONS
from tests.sum_kind import sum_registry

CONFIG = SchedulerConfig(target_chunk_s=1.0, heartbeat_s=1.0)


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
