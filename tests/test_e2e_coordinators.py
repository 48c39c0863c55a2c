"""End to end: two coordinator processes sharing one store, worker processes that know
both. Answers are exact and every result counts once; a coordinator killed mid-job loses
nothing: its workers move to the other within seconds, and it rejoins when restarted.

The store is a parameter: every test here runs on each store several coordinators can
share (``shared_store_url``).
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql

from hydracompute.cli import main
from hydracompute.errors import StoreError
from hydracompute.kinds.pi_kernel import count_hits
from tests.e2e_support import wait_until
from tests.postgres_support import POSTGRES_URL
from tests.shared_pool_support import SharedPool, worker_status
from tests.test_e2e import MANDELBROT, SEED, direct_mandelbrot, downloaded_counts

pytestmark = pytest.mark.e2e
#: The longest a worker may take to move to the other coordinator (the issue's bound).
FAILOVER_BOUND_S = 10.0


@pytest.fixture(params=["sqlite", "postgresql"])
def shared_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store that several coordinator processes can share, by URL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    return str(request.getfixturevalue("postgres").url())


@contextmanager
def shared_pool(root: Path, store_url: str) -> Iterator[SharedPool]:
    pool = SharedPool(root, store_url)
    try:
        pool.start(0)
        pool.start(1)
        yield pool
    finally:
        pool.close()


def test_two_coordinators_give_exact_answers_counting_each_result_once(
    tmp_path: Path, shared_store_url: str
) -> None:
    samples = 3 * 10**8 + 12345
    with shared_pool(tmp_path / "pool", shared_store_url) as p:
        p.add_worker([0, 1])
        p.add_worker([1, 0])
        admin = (p.root / "c0" / "admin.key").read_text().strip()
        fingerprint = p.coordinator(1).ca_fingerprint
        with p.client(0) as a, p.client(1) as b:
            wait_until(lambda: sum(w["online"] for w in b.workers()) == 2, what="workers")
            assert sorted(c["url"] for c in b.coordinators()) == sorted(p.urls)
            options = ["--url", b.url, "--ca-fingerprint", str(fingerprint), "--api-key", admin]
            shown = CliRunner().invoke(main, ["coordinators", *options, "--json"])
            assert shown.exit_code == 0, shown.output
            assert [c["this"] for c in json.loads(shown.stdout)].count(True) == 1
            pi = a.submit("pi", samples=samples, seed=SEED)
            mandel = b.submit("mandelbrot", **MANDELBROT)
            # Each is waited for through the other coordinator: its end is learnt from the
            # change log, not from this coordinator's own exchanges alone.
            answer = b.job(pi.job_id).wait(timeout=300).answer
            a.job(mandel.job_id).wait(timeout=300)
            counts = downloaded_counts(b, mandel.job_id)
            served = {w["name"]: w["chunks_done"] for w in a.workers()}
            info = a.job(pi.job_id).info()
    assert answer["hits"] == count_hits(SEED, 0, samples)  # a result counted twice shows
    assert answer["samples"] == samples
    np.testing.assert_array_equal(counts, direct_mandelbrot())
    assert info.state == "done" and info.progress == 1.0
    assert all(n > 0 for n in served.values()) and len(served) == 2


def test_a_killed_coordinators_workers_move_to_the_other_and_come_back(
    tmp_path: Path, shared_store_url: str
) -> None:
    # Seconds of work left when A is killed (a job that ends about then would show no
    # progress after it), and a direct count of about two seconds.
    samples = 4 * 10**9
    slow = ["--duty-percent", "20"]
    with shared_pool(tmp_path / "pool", shared_store_url) as p:
        moving = p.add_worker([0, 1], extra=slow)  # prefers the coordinator to be killed
        p.add_worker([1, 0], extra=slow)
        with p.client(1) as b:
            wait_until(lambda: sum(w["online"] for w in b.workers()) == 2, what="workers")
            job = b.submit("pi", samples=samples, seed=SEED)
            wait_until(lambda: worker_status(moving).get("url") == p.urls[0], what="on A")
            wait_until(lambda: job.progress() > 0.05, what="the first results")
            p.kill(0)
            killed, killed_s = time.monotonic(), time.time()
            progress = job.progress()
            assert progress < 0.5, "the job must have most of its work left when A is killed"
            wait_until(
                lambda: worker_status(moving).get("url") == p.urls[1],
                timeout=FAILOVER_BOUND_S,
                what="the worker moves to B",
            )
            wait_until(lambda: job.progress() > progress, timeout=FAILOVER_BOUND_S)
            assert time.monotonic() - killed < FAILOVER_BOUND_S
            p.start(0)  # rejoins the pool on its old port
            wait_until(
                lambda: any(
                    c["url"] == p.urls[0] and c["started_s"] > killed_s for c in b.coordinators()
                ),
                timeout=FAILOVER_BOUND_S,
                what="A listed again",
            )
            answer = job.wait(timeout=300).answer
            # Back to its preferred coordinator (it tries it again every few seconds).
            wait_until(
                lambda: worker_status(moving).get("url") == p.urls[0],
                timeout=30,
                what="the worker goes back to A",
            )
            with p.client(0) as a:  # and A accepts work again
                again = a.submit("pi", samples=10**8 + 7, seed=SEED)
                second = again.wait(timeout=120).answer
    assert answer["hits"] == count_hits(SEED, 0, samples)
    assert second["hits"] == count_hits(SEED, 0, 10**8 + 7)


def test_a_locked_database_is_answered_503_and_the_job_resumes_exact(tmp_path: Path) -> None:
    # SQLite's version of a database that stops answering for a few seconds: another
    # process holds its write lock for longer than the coordinators wait for it.
    path = tmp_path / "shared.db"
    samples = 4 * 10**8
    with shared_pool(tmp_path / "pool", f"sqlite:///{path}?busy_timeout_s=0.3") as p:
        p.add_worker([0, 1], extra=["--duty-percent", "20"])
        with p.client(1) as b:
            wait_until(lambda: sum(w["online"] for w in b.workers()) == 1, what="the worker")
            job = b.submit("pi", samples=samples, seed=SEED)
            wait_until(lambda: job.progress() > 0.05, what="the first results")
            lock = sqlite3.connect(path, isolation_level=None)
            lock.execute("BEGIN EXCLUSIVE")
            try:
                with pytest.raises(StoreError) as refused:
                    b.workers()
                time.sleep(2.0)  # the worker's exchanges are refused meanwhile
            finally:
                lock.execute("ROLLBACK")
                lock.close()
            answer = job.wait(timeout=300).answer
    assert refused.value.status == 503
    assert answer["hits"] == count_hits(SEED, 0, samples)
    for i in (0, 1):
        log = (tmp_path / "pool" / f"c{i}" / "coordinator.log").read_text()
        assert "unhandled error" not in log  # every refusal was a 503, none a 500


def test_a_postgresql_database_out_of_reach_is_answered_503_and_the_job_resumes_exact(
    tmp_path: Path, postgres_server: None
) -> None:
    # The pool's own database is closed to connections and its sessions are ended for a
    # few seconds: to the coordinators it is a server that went away (connections lost,
    # new ones refused), while the other tests' databases on the same server go on.
    database = "hydracompute_outage_" + secrets.token_hex(4)
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    url = POSTGRES_URL.rsplit("/", 1)[0] + "/" + database
    samples = 4 * 10**8
    try:
        with shared_pool(tmp_path / "pool", url) as p:
            p.add_worker([0, 1], extra=["--duty-percent", "20"])
            with p.client(1) as b:
                wait_until(lambda: sum(w["online"] for w in b.workers()) == 1, what="the worker")
                job = b.submit("pi", samples=samples, seed=SEED)
                wait_until(lambda: job.progress() > 0.05, what="the first results")
                with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
                    close_database(admin, database, allow=False)
                    try:
                        with pytest.raises(StoreError) as refused:
                            b.workers()
                        time.sleep(3.0)  # the worker's exchanges are refused meanwhile
                    finally:
                        close_database(admin, database, allow=True)
                answer = job.wait(timeout=300).answer
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            close_database(admin, database, allow=False)
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(database)))
    assert refused.value.status == 503
    assert answer["hits"] == count_hits(SEED, 0, samples)
    for i in (0, 1):
        log = (tmp_path / "pool" / f"c{i}" / "coordinator.log").read_text()
        assert "unhandled error" not in log  # every refusal was a 503, none a 500


def close_database(admin: psycopg.Connection[Any], database: str, allow: bool) -> None:
    """Open ``database`` to connections again, or close it and end its sessions."""
    name = sql.Identifier(database)
    admin.execute(
        sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(name, sql.SQL(str(allow)))
    )
    if not allow:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (database,),
        )
