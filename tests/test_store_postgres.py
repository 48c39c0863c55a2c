"""What only the PostgreSQL backend promises: several coordinators (several ``Store``s, each
with its own backend and connection pool) sharing one database stay exact, migrations run
once, and blobs are shared, streamed and whole."""

from __future__ import annotations

import asyncio
import itertools
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from collections import Counter
from collections.abc import Iterator

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from hydracompute.core.config import SchedulerConfig
from hydracompute.core.credit import EntryKind
from hydracompute.core.models import ChunkState, JobState, LeaseState
from hydracompute.errors import StoreError
from hydracompute.store import ResultReport, Store, open_backend
from hydracompute.store.postgres import PostgresBackend
from hydracompute.store.postgres.notify import ChangeListener
from hydracompute.store.postgres.schema import MIGRATIONS
from hydracompute.store.records import ExchangeRequest, LeaseGrant
from hydracompute.store.shared import Change
from tests.postgres_support import POSTGRES_URL, Schemas, new_schema_name
from tests.sum_kind import SumKind, sum_registry

CONFIG = SchedulerConfig(target_chunk_s=1.0, heartbeat_s=1.0, max_failures=3)


def two_stores(postgres: Schemas) -> tuple[Store, Store]:
    """Two coordinators' stores on one schema."""
    schema = new_schema_name()
    return (
        Store(postgres.backend(schema), sum_registry(), CONFIG),
        Store(postgres.backend(schema), sum_registry(), CONFIG),
    )


def answer(grant: LeaseGrant) -> ResultReport:
    output = SumKind().compute(grant.params, grant.start, grant.stop)
    return ResultReport(grant.lease_id, output, compute_s=0.01)


@pytest.mark.parametrize("batched", [False, True], ids=["alone", "batched"])
def test_two_coordinators_exchanging_at_once_count_every_result_once(
    postgres: Schemas, batched: bool
) -> None:
    stores = two_stores(postgres)
    n = 30_000
    job = stores[0].submit_job("sum", {"n": n}, now=0.0)
    workers = [[stores[side].enrol_worker(f"w{side}{k}", 2, ["sum"], 0.0)[0].worker_id
                for k in range(3)] for side in (0, 1)]  # fmt: skip
    clock = threading.Lock()
    now = [0.0]

    def tick() -> float:
        with clock:  # one clock for both coordinators, as wall time would be
            now[0] += 0.001
            return now[0]

    grants: list[list[LeaseGrant]] = [[], []]
    reported: list[list[str]] = [[], []]
    errors: list[BaseException] = []

    def coordinator(side: int) -> None:
        store, held = stores[side], {w: list[LeaseGrant]() for w in workers[side]}
        try:
            for _ in range(400):
                # Every result is sent again once: resending is harmless.
                sent = {w: [answer(g) for g in leases] for w, leases in held.items()}
                requests = [ExchangeRequest(w, r + r[:1], [], 2, tick()) for w, r in sent.items()]
                if batched:  # as a coordinator serves them: one transaction
                    outcomes = store.exchange_many(requests)
                else:
                    outcomes = [
                        store.exchange(r.worker_id, r.results, r.running, r.want, r.now)
                        for r in requests
                    ]
                for request, outcome in zip(requests, outcomes, strict=True):
                    assert not isinstance(outcome, Exception), outcome
                    reported[side] += [r.lease_id for r in sent[request.worker_id]]
                    grants[side] += outcome.leases
                    held[request.worker_id] = outcome.leases
                if all(not leases for leases in held.values()):
                    return
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=coordinator, args=(side,)) for side in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    done = stores[1].get_job(job.job_id)
    assert done.state is JobState.DONE and done.answer == {"total": n * (n - 1) // 2}
    all_grants = grants[0] + grants[1]
    # Both coordinators handed out work, and no lease or chunk was handed out twice (but a
    # tail chunk's backup copy, given on purpose).
    assert grants[0] and grants[1]
    assert len({g.lease_id for g in all_grants}) == len(all_grants)
    with stores[0].backend.transaction(read_only=True):
        backup = {g.lease_id: stores[0].backend.get_lease(g.lease_id).backup  # type: ignore[union-attr]
                  for g in all_grants}  # fmt: skip
    firsts = [g for g in all_grants if not backup[g.lease_id]]
    per_chunk = Counter(g.chunk_index for g in firsts)
    assert set(per_chunk.values()) == {1} and len(per_chunk) == done.chunks_carved
    # The chunks tile the job exactly; each output stored and credited once.
    spans = sorted((g.start, g.stop) for g in firsts)
    assert spans[0][0] == 0 and spans[-1][1] == n
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))
    assert stores[0].output_indices(job.job_id) == list(range(done.chunks_carved))
    ledger = stores[0].credit_entries(job_id=job.job_id)
    assert sorted(e.chunk_index for e in ledger) == list(range(done.chunks_carved))
    assert sum(e.work for e in ledger) == n
    for store in stores:
        store.close()


def test_an_expired_lease_is_expired_once_whichever_coordinator_sweeps(postgres: Schemas) -> None:
    first, second = two_stores(postgres)
    first.submit_job("sum", {"n": 100}, now=0.0)
    worker, _ = first.enrol_worker("a", 4, ["sum"], now=0.0)
    granted = first.exchange(worker.worker_id, [], [], 8, now=0.0).leases
    assert granted
    later = CONFIG.lease_ttl_s + 1
    swept = [0, 0]

    def sweep(side: int, store: Store) -> None:
        swept[side] = store.expire_leases(later)

    threads = [threading.Thread(target=sweep, args=pair) for pair in enumerate((first, second))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(swept) == len(granted)
    assert first.expire_leases(later) == second.expire_leases(later) == 0
    for grant in granted:
        with first.backend.transaction(read_only=True):
            lease = first.backend.get_lease(grant.lease_id)
            assert lease is not None and lease.state is LeaseState.EXPIRED
            chunk = first.backend.get_chunk(grant.job_id, grant.chunk_index)
            assert chunk is not None and chunk.state is ChunkState.PENDING
    first.close()
    second.close()


def test_migrations_run_once_when_coordinators_start_together(postgres: Schemas) -> None:
    schema = new_schema_name()
    opened: list[PostgresBackend] = []
    failures: list[BaseException] = []

    def start() -> None:
        try:
            opened.append(postgres.backend(schema))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == [] and len(opened) == 4
    with psycopg.connect(POSTGRES_URL) as conn:
        query = sql.SQL("SELECT version FROM {}.schema_version ORDER BY version")
        rows = conn.execute(query.format(sql.Identifier(schema))).fetchall()
        assert [r[0] for r in rows] == list(range(1, len(MIGRATIONS) + 1))
        # A database migrated by a newer Hydra Compute is refused, not damaged.
        insert = sql.SQL("INSERT INTO {}.schema_version VALUES (%s)")
        conn.execute(insert.format(sql.Identifier(schema)), (len(MIGRATIONS) + 1,))
    for backend in opened:
        backend.close()
    with pytest.raises(StoreError, match="newer than this Hydra Compute"):
        postgres.backend(schema)


def test_a_store_url_opens_a_postgresql_backend_and_names_a_bad_one(postgres: Schemas) -> None:
    backend = open_backend(postgres.url())
    assert isinstance(backend, PostgresBackend)
    backend.close()
    with pytest.raises(StoreError, match=r"cannot connect to PostgreSQL at 127\.0\.0\.1:1/test"):
        open_backend("postgresql://postgres@127.0.0.1:1/test?connect_timeout=1")


# --- blobs in the database ---------------------------------------------------------------


@pytest.fixture
def backends(postgres: Schemas) -> Iterator[tuple[PostgresBackend, PostgresBackend]]:
    schema = new_schema_name()
    pair = postgres.backend(schema), postgres.backend(schema)
    yield pair
    for backend in pair:
        backend.close()


def test_a_blob_written_by_one_coordinator_is_read_by_another_in_pieces(
    backends: tuple[PostgresBackend, PostgresBackend],
) -> None:
    one, other = backends
    piece = bytes(range(256)) * 4096  # 1 MiB
    total = 24

    def pieces() -> Iterator[bytes]:
        for k in range(total):
            yield piece[k:] + piece[:k]

    tracemalloc.start()
    try:
        assert one.blobs.put_stream("job", "artefacts/big.bin", pieces()) == total * len(piece)
        read = other.blobs.read_pieces("job", "artefacts/big.bin")
        assert read is not None
        for k, got in enumerate(read):
            assert got == piece[k:] + piece[:k]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * len(piece)  # streamed both ways: never the 24 MiB at once
    assert other.blobs.names("job") == ["artefacts/big.bin"]


WRITER = """
import sys
from hydracompute.store.postgres import PostgresBackend

def pieces():
    yield b"x" * 3_000_000
    print("half written", flush=True)
    sys.stdin.read()  # until killed
    yield b"never"

PostgresBackend(sys.argv[1], sys.argv[2]).blobs.put_stream("job", sys.argv[3], pieces())
"""


def test_a_writer_killed_half_way_leaves_no_half_blob(
    backends: tuple[PostgresBackend, PostgresBackend],
) -> None:
    blobs = backends[0].blobs
    blobs.put("job", "kept", b"whole")
    for name in ("kept", "fresh"):
        with subprocess.Popen(
            [sys.executable, "-c", WRITER, POSTGRES_URL, backends[0].schema, name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        ) as writer:
            assert writer.stdout is not None
            assert writer.stdout.readline() == b"half written\n"
            writer.send_signal(signal.SIGKILL)
            assert writer.wait() == -signal.SIGKILL
    assert blobs.get("job", "kept") == b"whole"
    assert blobs.get("job", "fresh") is None
    assert blobs.names("job") == ["kept"]


def test_ledger_entries_of_both_coordinators_are_numbered_apart(postgres: Schemas) -> None:
    first, second = two_stores(postgres)
    first.submit_job("sum", {"n": 40}, now=0.0)
    for store in (first, second):
        worker, _ = store.enrol_worker("w", 1, ["sum"], now=0.0)
        outcome = store.exchange(worker.worker_id, [], [], 1, now=0.1)
        store.exchange(worker.worker_id, [answer(outcome.leases[0])], [], 0, now=0.2)
    entries = first.credit_entries()
    assert len(entries) == 2 and entries == second.credit_entries()
    assert entries[0].entry_id < entries[1].entry_id
    assert {e.kind for e in entries} == {EntryKind.GRANT}


# --- a property: two coordinators interleaving exchanges, expiries, cancellations, leaves ---

ACTIONS = ["exchange", "exchange", "batch", "resend", "expire", "cancel", "leave"]
STEP = st.tuples(st.integers(0, 1), st.integers(0, 2), st.sampled_from(ACTIONS))


@pytest.fixture
def pair(postgres: Schemas) -> Iterator[tuple[Store, Store]]:
    stores = two_stores(postgres)
    yield stores
    for store in stores:
        store.close()


def active_copies_per_chunk(store: Store) -> list[tuple[str, int, int, int]]:
    """(job, chunk, active first copies, copies wanted) of every chunk with an active
    lease, counting neither backups nor spot checks."""
    rows = store.backend._db.execute(  # type: ignore[attr-defined]
        "SELECT l.job_id, l.chunk_index, COUNT(*), MIN(c.wanted) FROM leases l "
        'JOIN chunks c ON c.job_id = l.job_id AND c."index" = l.chunk_index '
        "WHERE l.state = 'active' AND l.backup = 0 AND l.spot_check = 0 "
        "GROUP BY l.job_id, l.chunk_index"
    ).fetchall()
    return [tuple(row) for row in rows]


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(STEP, min_size=5, max_size=30))
def test_two_coordinators_keep_the_invariants_whatever_the_interleaving(
    pair: tuple[Store, Store], steps: list[tuple[int, int, str]]
) -> None:
    stores = pair
    now = 1000.0 * (1 + len(stores[0].list_jobs(limit=10**6)))  # after earlier examples
    jobs = [
        stores[0].submit_job("sum", {"n": 40}, now=now),
        stores[1].submit_job("sum", {"n": 30}, now=now, replication=2),
    ]
    workers = [stores[k % 2].enrol_worker(f"w{k}", 1, ["sum"], now)[0].worker_id for k in range(3)]
    held: dict[str, list[LeaseGrant]] = {w: [] for w in workers}
    last_sent: dict[str, list[ResultReport]] = {w: [] for w in workers}
    lease_ids: list[str] = []
    for side, which, action in steps:
        store, worker_id = stores[side], workers[which]
        now += 0.01
        if action == "exchange":
            reports = [answer(g) for g in held[worker_id]]
            outcome = store.exchange(worker_id, reports, [], 2, now)
            last_sent[worker_id] = reports
            held[worker_id] = outcome.leases
            lease_ids += [g.lease_id for g in outcome.leases]
        elif action == "batch":  # every worker's exchange in one transaction, as served
            reports_of = {w: [answer(g) for g in held[w]] for w in workers}
            requests = [ExchangeRequest(w, reports_of[w], [], 2, now) for w in workers]
            for w, outcome in zip(workers, store.exchange_many(requests), strict=True):
                assert not isinstance(outcome, Exception), outcome
                last_sent[w] = reports_of[w]
                held[w] = outcome.leases
                lease_ids += [g.lease_id for g in outcome.leases]
        elif action == "resend":  # the same results again, through either coordinator
            store.exchange(worker_id, last_sent[worker_id], [], 0, now)
        elif action == "expire":
            now += CONFIG.lease_ttl_s + 1
            store.expire_leases(now)
        elif action == "cancel":
            job = jobs[which % 2]
            if not store.get_job(job.job_id).state.finished:
                store.cancel_job(job.job_id, now)
        else:
            store.leave(worker_id, now)
            held[worker_id] = []
        # No lease handed out twice, no chunk with more copies in play than it wants.
        assert len(set(lease_ids)) == len(lease_ids)
        assert all(count <= wanted for _, _, count, wanted in active_copies_per_chunk(store))
    for job in jobs:
        done = stores[0].get_job(job.job_id)
        if not done.state.finished:
            stores[1].cancel_job(job.job_id, now)
        outputs = {o.start: o for o in stores[1].job_outputs(job.job_id)}
        # No unit counted twice: the stored outputs are disjoint and add up to the count.
        spans = sorted((o.start, o.stop) for o in outputs.values())
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))
        assert done.units_done == sum(stop - start for start, stop in spans)
        if done.state is JobState.DONE:
            n = done.params["n"]
            assert done.answer == {"total": n * (n - 1) // 2}
        # Credit equals verified work: each accepted chunk is credited once to each of the
        # copies that agreed (replication 2: two different workers), and no other chunk is.
        ledger = stores[0].credit_entries(job_id=job.job_id)
        with stores[0].backend.transaction(read_only=True):
            indices = stores[0].backend.output_indices(job.job_id)
            chunks = {i: stores[0].backend.get_chunk(job.job_id, i) for i in indices}
        per_chunk = Counter(e.chunk_index for e in ledger)
        assert set(per_chunk) == set(indices)
        for index, chunk in chunks.items():
            assert chunk is not None
            mine = [e for e in ledger if e.chunk_index == index]
            assert len(mine) == job.quorum == len({e.worker_id for e in mine})
            assert all(e.work == chunk.stop - chunk.start for e in mine)


def test_a_change_committed_by_one_store_wakes_the_other_stores_listener(
    postgres: Schemas,
) -> None:
    schema = new_schema_name()
    listening, appending = postgres.backend(schema), postgres.backend(schema)
    try:
        wait = listening.change_waiter()
        assert isinstance(wait, ChangeListener)

        async def woken() -> float:
            await wait(0.01)  # opens the listening connection
            assert wait.listening is not None
            await asyncio.wait_for(wait.listening.wait(), 30.0)
            with appending.transaction():
                appending.append_change(Change("other", 1.0, work=True))
            started = time.monotonic()
            await wait(30.0)
            return time.monotonic() - started

        # Woken by the notification, not by the 30 s period.
        assert asyncio.run(woken()) < 10.0
        assert [c.origin for c in listening.changes_after(0, 10)] == ["other"]
    finally:
        listening.close()
        appending.close()
