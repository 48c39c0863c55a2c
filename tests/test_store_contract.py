"""The store contract: every backend must pass every test here."""

from __future__ import annotations

import dataclasses
import tracemalloc
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from hydracompute.core.config import SchedulerConfig
from hydracompute.core.models import Chunk, ChunkState, CredentialKind, JobState, Lease, LeaseState
from hydracompute.errors import (
    Conflict,
    Forbidden,
    InvalidParams,
    InvalidRequest,
    InvalidResult,
    NotFound,
    StoreError,
    TooManyRequests,
    Unauthorized,
    UnknownKind,
)
from hydracompute.kinds import ChunkOutput
from hydracompute.store import MemoryBackend, ResultReport, SQLiteBackend, Store
from hydracompute.store.backend import Backend, StoredOutput
from hydracompute.store.blobs import MemoryBlobStore
from hydracompute.store.figures import PoolFigures, pool_figures
from hydracompute.store.payloads import INLINE_OUTPUT_MAX_BYTES, artefact_blob_name
from hydracompute.store.records import (
    ExchangeOutcome,
    ExchangeRequest,
    FinishedChunk,
    LeaseGrant,
)
from hydracompute.store.shared import CoordinatorEntry
from hydracompute.store.views import job_history
from tests.sum_kind import SumKind, sum_registry

CONFIG = SchedulerConfig(target_chunk_s=1.0, heartbeat_s=1.0, max_failures=3)
TTL = CONFIG.lease_ttl_s


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    backend: Backend
    if request.param == "memory":
        backend = MemoryBackend()
    elif request.param == "sqlite":
        backend = SQLiteBackend(tmp_path / "s.db")
    else:
        backend = request.getfixturevalue("postgres").backend()
    s = Store(backend, sum_registry(), CONFIG)
    yield s
    s.close()


def snapshot(store: Store) -> object:
    """Everything a client can observe about the pool, for 'changes nothing' checks."""
    jobs = [dataclasses.asdict(j) for j in store.list_jobs()]
    workers = [dataclasses.asdict(w) for w in store.list_workers()]
    outputs = {j["job_id"]: store.job_outputs(j["job_id"]) for j in jobs}
    return jobs, workers, outputs, store.leases_in_hand()


def result_for(grant_params: dict[str, int], start: int, stop: int) -> dict[str, int]:
    return SumKind().compute(grant_params, start, stop)


def complete(store: Store, worker_id: str, now: float, want: int = 4) -> float:
    """Run every chunk through one worker; returns the clock at the end."""
    outcome = store.exchange(worker_id, [], [], want, now)
    while outcome.leases:
        reports = [
            ResultReport(g.lease_id, result_for(g.params, g.start, g.stop), compute_s=0.01)
            for g in outcome.leases
        ]
        now += 0.01
        outcome = store.exchange(worker_id, reports, [], want, now)
    return now


def test_submit_get_and_list(store: Store) -> None:
    job = store.submit_job("sum", {"n": 100}, now=1.0, name="first")
    assert store.get_job(job.job_id).params == {"n": 100}
    assert store.get_job(job.job_id).state is JobState.RUNNING
    second = store.submit_job("sum", {"n": 5}, now=2.0)
    assert [j.job_id for j in store.list_jobs()] == [second.job_id, job.job_id]
    assert store.list_jobs(JobState.DONE) == []


def test_jobs_are_listed_from_a_time_of_submission(store: Store) -> None:
    first, second, third = (store.submit_job("sum", {"n": 4}, now=t) for t in (1.0, 2.0, 3.0))
    store.cancel_job(third.job_id, now=4.0)
    backend = store.backend
    running = frozenset({JobState.RUNNING})
    with backend.transaction(read_only=True):
        since = [j.job_id for j in backend.list_jobs(None, 10, created_since=2.0)]
        assert since == [third.job_id, second.job_id]
        assert [j.job_id for j in backend.list_jobs(None, 1, created_since=2.0)] == since[:1]
        assert [j.job_id for j in backend.list_jobs(running, 10, created_since=2.0)] == [
            second.job_id
        ]
        assert [j.job_id for j in backend.list_jobs(running, 10)] == [
            second.job_id,
            first.job_id,
        ]
        assert backend.list_jobs(None, 10, created_since=3.5) == []


def test_the_earliest_lease_deadline_follows_grants_renewals_and_ends(store: Store) -> None:
    backend = store.backend

    def earliest() -> float | None:
        with backend.transaction(read_only=True):
            return backend.earliest_lease_deadline()

    assert earliest() is None
    store.submit_job("sum", {"n": 100}, now=0.0)
    a, _ = store.enrol_worker("a", 1, ["sum"], now=0.0)
    b, _ = store.enrol_worker("b", 1, ["sum"], now=0.0)
    (first,) = store.exchange(a.worker_id, [], [], 1, now=1.0).leases
    (second,) = store.exchange(b.worker_id, [], [], 1, now=2.0).leases
    assert earliest() == 1.0 + TTL
    store.exchange(a.worker_id, [], [first.lease_id], 0, now=3.0)  # renewed
    assert earliest() == 2.0 + TTL
    assert store.expire_leases(now=2.0 + TTL + 0.1) == 1  # b's lease
    assert earliest() == 3.0 + TTL
    store.return_leases(a.worker_id, [first.lease_id], now=4.0)
    assert earliest() is None
    assert second.lease_id != first.lease_id


@pytest.mark.parametrize(
    ("kind", "params", "error"),
    [
        ("nope", {"n": 1}, UnknownKind),
        ("sum", {"n": 0}, InvalidParams),
        ("sum", {}, InvalidParams),
        ("sum", {"n": 3, "extra": 1}, InvalidParams),
    ],
)
def test_bad_submissions_change_nothing(
    store: Store, kind: str, params: dict[str, int], error: type[Exception]
) -> None:
    before = snapshot(store)
    with pytest.raises(error):
        store.submit_job(kind, params, now=1.0)
    assert snapshot(store) == before


def test_unknown_job(store: Store) -> None:
    with pytest.raises(NotFound):
        store.get_job("missing")
    with pytest.raises(NotFound):
        store.cancel_job("missing", now=1.0)


def test_enrol_and_authenticate(store: Store) -> None:
    worker, secret = store.enrol_worker("laptop", 4, ["sum"], now=1.0)
    assert store.authenticate_worker(worker.worker_id, secret).name == "laptop"
    with pytest.raises(Unauthorized):
        store.authenticate_worker(worker.worker_id, secret + "x")
    with pytest.raises(Unauthorized):
        store.authenticate_worker("w-nobody", secret)
    assert worker.secret_hash != secret


def test_job_runs_to_its_exact_answer(store: Store) -> None:
    job = store.submit_job("sum", {"n": 5000}, now=0.0)
    worker, _ = store.enrol_worker("a", 2, ["sum"], now=0.0)
    complete(store, worker.worker_id, now=0.0)
    done = store.get_job(job.job_id)
    assert done.state is JobState.DONE
    assert done.answer == {"total": sum(range(5000))}
    assert done.units_done == 5000
    assert store.list_workers()[0].chunks_done == done.chunks_carved


def test_first_chunk_is_a_probe_then_sizes_follow_speed(store: Store) -> None:
    store.submit_job("sum", {"n": 10**6}, now=0.0)
    worker, _ = store.enrol_worker("a", 1, ["sum"], now=0.0)
    (probe,) = store.exchange(worker.worker_id, [], [], 1, now=0.0).leases
    assert probe.stop - probe.start == SumKind.probe_units
    # 2 units in 0.01 s -> 200 units/s -> a 1 s chunk has 200 units.
    report = ResultReport(probe.lease_id, result_for(probe.params, probe.start, probe.stop), 0.01)
    (second,) = store.exchange(worker.worker_id, [report], [], 1, now=0.02).leases
    assert second.stop - second.start == 200
    assert store.list_workers()[0].speeds["sum"] == pytest.approx(200.0)


def test_lease_spans_are_a_jobs_active_leases_with_their_chunks(store: Store) -> None:
    job = store.submit_job("sum", {"n": 10**6}, now=0.0)
    other = store.submit_job("sum", {"n": 10**6}, now=0.1)
    a, _ = store.enrol_worker("a", 1, ["sum"], now=0.0)
    b, _ = store.enrol_worker("b", 1, ["sum"], now=0.0)
    (first,) = store.exchange(a.worker_id, [], [], 1, now=0.2).leases
    (second,) = store.exchange(b.worker_id, [], [], 1, now=0.5).leases
    assert {first.job_id, second.job_id} == {job.job_id}  # the oldest job first
    spans = store.lease_spans([job.job_id])[job.job_id]
    assert spans is not None
    assert sorted((s.start, s.stop, s.issued_s) for s in spans) == sorted(
        [(first.start, first.stop, 0.2), (second.start, second.stop, 0.5)]
    )
    # Probes: their holders' speeds are not known; they are expected to take the target.
    assert all(s.expected_end_s == s.issued_s + CONFIG.target_chunk_s for s in spans)
    assert store.lease_spans([job.job_id], limit=1)[job.job_id] is None  # more than asked for: none
    assert store.lease_spans([other.job_id])[other.job_id] == []
    both = store.lease_spans([job.job_id, other.job_id])  # a list of jobs: one call
    assert both == {job.job_id: spans, other.job_id: []}
    # A result takes its lease out.
    report = ResultReport(first.lease_id, result_for(first.params, first.start, first.stop), 0.01)
    store.exchange(a.worker_id, [report], [], 0, now=0.6)
    spans = store.lease_spans([job.job_id])[job.job_id]
    assert spans is not None
    assert [(s.start, s.stop) for s in spans] == [(second.start, second.stop)]
    (sized,) = store.exchange(a.worker_id, [], [], 1, now=0.7).leases  # a's speed is known
    (span,) = [
        s for s in store.lease_spans([job.job_id])[job.job_id] or [] if s.start == sized.start
    ]
    assert span.expected_end_s == pytest.approx(0.7 + CONFIG.target_chunk_s, rel=0.05)


def test_a_job_counts_the_expected_and_reported_times_of_its_sized_chunks(
    store: Store,
) -> None:
    job = store.submit_job("sum", {"n": 10**6}, now=0.0)
    a, _ = store.enrol_worker("a", 1, ["sum"], now=0.0)
    (probe,) = store.exchange(a.worker_id, [], [], 1, now=0.0).leases
    report = ResultReport(probe.lease_id, result_for(probe.params, probe.start, probe.stop), 0.01)
    (sized,) = store.exchange(a.worker_id, [report], [], 1, now=0.1).leases
    after_probe = store.get_job(job.job_id)
    assert (after_probe.expected_compute_s, after_probe.reported_compute_s) == (0.0, 0.0)
    # Three times as long as its speed foretold: the job keeps both times.
    taken = 3 * CONFIG.target_chunk_s
    result = result_for(sized.params, sized.start, sized.stop)
    store.exchange(a.worker_id, [ResultReport(sized.lease_id, result, taken)], [], 0, now=7.0)
    counted = store.get_job(job.job_id)
    assert counted.expected_compute_s == pytest.approx(CONFIG.target_chunk_s, rel=0.05)
    assert counted.reported_compute_s == pytest.approx(taken)
    # Sent again (its answer lost, say): counted once.
    store.exchange(a.worker_id, [ResultReport(sized.lease_id, result, taken)], [], 0, now=7.5)
    again = store.get_job(job.job_id)
    assert (again.expected_compute_s, again.reported_compute_s) == (
        counted.expected_compute_s,
        counted.reported_compute_s,
    )


def test_a_batch_of_exchanges_counts_the_times_of_every_chunk_it_accepts(
    store: Store,
) -> None:
    # The batch writes the job once, at its end, as its exchanges left it in turn.
    job = store.submit_job("sum", {"n": 10**6}, now=0.0)
    sized = {}
    for name in ("a", "b"):
        worker, _ = store.enrol_worker(name, 1, ["sum"], now=0.0)
        (probe,) = store.exchange(worker.worker_id, [], [], 1, now=0.0).leases
        result = result_for(probe.params, probe.start, probe.stop)
        (lease,) = store.exchange(
            worker.worker_id, [ResultReport(probe.lease_id, result, 0.01)], [], 1, now=0.1
        ).leases
        sized[worker.worker_id] = lease
    taken = dict(zip(sized, (1.5, 2.5), strict=True))
    requests = [
        ExchangeRequest(
            worker_id,
            [ResultReport(g.lease_id, result_for(g.params, g.start, g.stop), taken[worker_id])],
            [],
            0,
            3.0,
        )
        for worker_id, g in sized.items()
    ]
    assert all(isinstance(a, ExchangeOutcome) for a in store.exchange_many(requests))
    counted = store.get_job(job.job_id)
    with store.backend.transaction():
        leases = [store.backend.get_lease(g.lease_id) for g in sized.values()]
    expected = sum(
        lease.expected_end_s - lease.issued_s
        for lease in leases
        if lease is not None and lease.expected_end_s is not None
    )
    assert expected == pytest.approx(2 * CONFIG.target_chunk_s, rel=0.05)
    assert counted.expected_compute_s == pytest.approx(expected)
    assert counted.reported_compute_s == pytest.approx(1.5 + 2.5)


def test_a_chunk_reported_after_its_lease_expired_counts_no_times(store: Store) -> None:
    # Its holder's time is the lease's whole age, silence and all: not how long its
    # holders take to compute.
    job = store.submit_job("sum", {"n": 10**6}, now=0.0)
    a, _ = store.enrol_worker("a", 1, ["sum"], now=0.0)
    (probe,) = store.exchange(a.worker_id, [], [], 1, now=0.0).leases
    report = ResultReport(probe.lease_id, result_for(probe.params, probe.start, probe.stop), 0.01)
    (sized,) = store.exchange(a.worker_id, [report], [], 1, now=0.1).leases
    assert store.expire_leases(0.1 + TTL + 1.0) == 1
    result = result_for(sized.params, sized.start, sized.stop)
    late = ResultReport(sized.lease_id, result, 3 * CONFIG.target_chunk_s)
    store.exchange(a.worker_id, [late], [], 0, now=0.1 + TTL + 2.0)
    job = store.get_job(job.job_id)
    assert job.units_done == (probe.stop - probe.start) + (sized.stop - sized.start)  # accepted
    assert (job.expected_compute_s, job.reported_compute_s) == (0.0, 0.0)


def test_lease_spans_count_a_copy_of_a_chunk_that_wants_more(store: Store) -> None:
    # A chunk verified by two copies waits, pending, for its second while the first is out:
    # that copy is in flight all the same.
    job = store.submit_job("sum", {"n": 10**6}, now=0.0, replication=2, quorum=2)
    a, _ = store.enrol_worker("a", 1, ["sum"], now=0.0)
    (copy,) = store.exchange(a.worker_id, [], [], 1, now=0.2).leases
    spans = store.lease_spans([job.job_id])[job.job_id]
    assert spans is not None
    assert [(s.start, s.stop, s.issued_s) for s in spans] == [(copy.start, copy.stop, 0.2)]


def test_workers_only_get_kinds_they_have(store: Store) -> None:
    store.submit_job("sum", {"n": 10}, now=0.0)
    other, _ = store.enrol_worker("b", 1, ["pi"], now=0.0)
    assert store.exchange(other.worker_id, [], [], 1, now=0.0).leases == []


def test_unknown_lease_refused_and_nothing_recorded(store: Store) -> None:
    store.submit_job("sum", {"n": 100}, now=0.0)
    worker, _ = store.enrol_worker("a", 1, ["sum"], now=0.0)
    (grant,) = store.exchange(worker.worker_id, [], [], 1, now=0.0).leases
    before = snapshot(store)
    good = ResultReport(grant.lease_id, result_for(grant.params, grant.start, grant.stop), 0.1)
    bogus = ResultReport("f" * 32, {"total": 1}, 0.1)
    with pytest.raises(NotFound) as err:
        store.exchange(worker.worker_id, [good, bogus], [], 1, now=1.0)
    assert err.value.extra["lease_id"] == "f" * 32
    assert snapshot(store) == before


def test_result_for_another_workers_lease_is_forbidden(store: Store) -> None:
    store.submit_job("sum", {"n": 100}, now=0.0)
    a, _ = store.enrol_worker("a", 1, ["sum"], now=0.0)
    b, _ = store.enrol_worker("b", 1, ["sum"], now=0.0)
    (grant,) = store.exchange(a.worker_id, [], [], 1, now=0.0).leases
    before = snapshot(store)
    forged = ResultReport(grant.lease_id, result_for(grant.params, grant.start, grant.stop), 0.1)
    with pytest.raises(Forbidden):
        store.exchange(b.worker_id, [forged], [], 1, now=1.0)
    assert snapshot(store) == before


def test_insane_output_refused(store: Store) -> None:
    store.submit_job("sum", {"n": 100}, now=0.0)
    worker, _ = store.enrol_worker("a", 1, ["sum"], now=0.0)
    (grant,) = store.exchange(worker.worker_id, [], [], 1, now=0.0).leases
    before = snapshot(store)
    with pytest.raises(InvalidResult):
        store.exchange(
            worker.worker_id, [ResultReport(grant.lease_id, {"total": -1}, 0.1)], [], 0, now=1.0
        )
    assert snapshot(store) == before


def test_resent_identical_result_is_acknowledged_once(store: Store) -> None:
    job = store.submit_job("sum", {"n": 100}, now=0.0)
    worker, _ = store.enrol_worker("a", 1, ["sum"], now=0.0)
    (grant,) = store.exchange(worker.worker_id, [], [], 1, now=0.0).leases
    report = ResultReport(grant.lease_id, result_for(grant.params, grant.start, grant.stop), 0.1)
    assert store.exchange(worker.worker_id, [report], [], 0, now=1.0).accepted == [grant.lease_id]
    after_first = snapshot(store)
    assert store.exchange(worker.worker_id, [report], [], 0, now=1.0).accepted == [grant.lease_id]
    jobs_after, *_ = snapshot(store)  # type: ignore[misc]
    assert store.get_job(job.job_id).units_done == grant.stop - grant.start
    assert jobs_after == after_first[0]  # type: ignore[index]
    different = ResultReport(grant.lease_id, {"total": 12345}, 0.1)
    with pytest.raises(Conflict):
        store.exchange(worker.worker_id, [different], [], 0, now=2.0)


def test_unrenewed_lease_expires_and_chunk_is_reissued(store: Store) -> None:
    job = store.submit_job("sum", {"n": 2}, now=0.0)
    a, _ = store.enrol_worker("a", 1, ["sum"], now=0.0)
    b, _ = store.enrol_worker("b", 1, ["sum"], now=0.0)
    (grant,) = store.exchange(a.worker_id, [], [], 1, now=0.0).leases
    assert store.exchange(b.worker_id, [], [], 1, now=0.5).leases == []
    assert store.expire_leases(now=TTL - 0.1) == 0
    assert store.expire_leases(now=TTL + 0.1) == 1
    (again,) = store.exchange(b.worker_id, [], [], 1, now=TTL + 0.2).leases
    assert (again.start, again.stop) == (grant.start, grant.stop)
    assert again.lease_id != grant.lease_id
    # The first worker was only slow: its late result still counts, and b is told to stop.
    late = ResultReport(grant.lease_id, result_for(grant.params, 0, 2), 0.1)
    store.exchange(a.worker_id, [late], [], 0, now=TTL + 0.3)
    assert store.get_job(job.job_id).answer == {"total": 1}
    assert store.exchange(b.worker_id, [], [again.lease_id], 0, now=TTL + 0.4).abandon == [
        again.lease_id
    ]


def test_renewal_keeps_a_lease_alive(store: Store) -> None:
    store.submit_job("sum", {"n": 2}, now=0.0)
    a, _ = store.enrol_worker("a", 1, ["sum"], now=0.0)
    (grant,) = store.exchange(a.worker_id, [], [], 1, now=0.0).leases
    for step in range(1, 10):
        outcome = store.exchange(a.worker_id, [], [grant.lease_id], 0, now=step * TTL * 0.6)
        assert outcome.abandon == []
        assert store.expire_leases(now=step * TTL * 0.6 + 0.1) == 0


def test_straggler_gets_a_backup_and_first_result_wins(store: Store) -> None:
    job = store.submit_job("sum", {"n": 2}, now=0.0)
    slow, _ = store.enrol_worker("slow", 1, ["sum"], now=0.0)
    fast, _ = store.enrol_worker("fast", 1, ["sum"], now=0.0)
    (grant,) = store.exchange(slow.worker_id, [], [], 1, now=0.0).leases
    # Not yet overdue: no copy.
    assert store.exchange(fast.worker_id, [], [], 1, now=1.0).leases == []
    store.exchange(slow.worker_id, [], [grant.lease_id], 0, now=1.2)
    (backup,) = store.exchange(fast.worker_id, [], [], 1, now=1.6).leases
    assert (backup.start, backup.stop) == (grant.start, grant.stop)
    # No third copy.
    third, _ = store.enrol_worker("third", 1, ["sum"], now=1.6)
    assert store.exchange(third.worker_id, [], [], 1, now=1.7).leases == []
    won = ResultReport(backup.lease_id, result_for(backup.params, 0, 2), 0.1)
    store.exchange(fast.worker_id, [won], [], 0, now=1.8)
    assert store.get_job(job.job_id).state is JobState.DONE
    assert store.exchange(slow.worker_id, [], [grant.lease_id], 0, now=1.9).abandon == [
        grant.lease_id
    ]
    lost = ResultReport(grant.lease_id, result_for(grant.params, 0, 2), 0.1)
    assert store.exchange(slow.worker_id, [lost], [], 0, now=2.0).accepted == [grant.lease_id]
    assert store.get_job(job.job_id).answer == {"total": 1}


def test_chunk_failing_repeatedly_fails_the_job(store: Store) -> None:
    job = store.submit_job("sum", {"n": 2}, now=0.0)
    worker, _ = store.enrol_worker("a", 1, ["sum"], now=0.0)
    for attempt in range(CONFIG.max_failures):
        # Alone in the pool, the worker gets the chunk again once it has waited a lease's TTL.
        now = attempt * (TTL + 1)
        (grant,) = store.exchange(worker.worker_id, [], [], 1, now=now).leases
        report = ResultReport(grant.lease_id, error=f"boom {attempt}")
        assert store.exchange(worker.worker_id, [report], [], 1, now=now + 0.5).leases == []
    failed = store.get_job(job.job_id)
    assert failed.state is JobState.FAILED
    assert failed.error is not None and "boom 2" in failed.error
    assert store.exchange(worker.worker_id, [], [], 1, now=10.0).leases == []


def test_cancel_abandons_leases(store: Store) -> None:
    job = store.submit_job("sum", {"n": 100}, now=0.0)
    worker, _ = store.enrol_worker("a", 1, ["sum"], now=0.0)
    (grant,) = store.exchange(worker.worker_id, [], [], 1, now=0.0).leases
    assert store.cancel_job(job.job_id, now=0.5).state is JobState.CANCELLED
    outcome = store.exchange(worker.worker_id, [], [grant.lease_id], 1, now=1.0)
    assert outcome.abandon == [grant.lease_id]
    assert outcome.leases == []
    with pytest.raises(Conflict):
        store.cancel_job(job.job_id, now=2.0)


def test_returned_leases_go_to_the_next_worker(store: Store) -> None:
    store.submit_job("sum", {"n": 2}, now=0.0)
    a, _ = store.enrol_worker("a", 1, ["sum"], now=0.0)
    b, _ = store.enrol_worker("b", 1, ["sum"], now=0.0)
    (grant,) = store.exchange(a.worker_id, [], [], 1, now=0.0).leases
    assert store.leave(a.worker_id, now=0.1) == 1
    assert store.leases_in_hand()[a.worker_id] == 0
    (again,) = store.exchange(b.worker_id, [], [], 1, now=0.2).leases
    assert (again.start, again.stop) == (grant.start, grant.stop)
    assert store.leave(a.worker_id, now=0.3) == 0
    with pytest.raises(NotFound):
        store.leave("w-nobody", now=0.3)


def test_a_new_worker_probes_rather_than_take_a_chunk_sized_for_another(store: Store) -> None:
    store.submit_job("sum", {"n": 10**6}, now=0.0)
    fast, _ = store.enrol_worker("fast", 1, ["sum"], now=0.0)
    (probe,) = store.exchange(fast.worker_id, [], [], 1, now=0.0).leases
    report = ResultReport(probe.lease_id, result_for(probe.params, probe.start, probe.stop), 0.01)
    (big,) = store.exchange(fast.worker_id, [report], [], 1, now=0.02).leases
    assert big.stop - big.start == 200
    store.leave(fast.worker_id, now=0.1)  # its 200-unit chunk goes back to the pool
    new, _ = store.enrol_worker("new", 1, ["sum"], now=0.2)
    # Its probe is cut from the returned chunk; once its speed is known, it takes the
    # rest (returned chunks go first), which fits it.
    (first,) = store.exchange(new.worker_id, [], [], 1, now=0.2).leases
    assert (first.start, first.stop) == (big.start, big.start + SumKind.probe_units)
    report = ResultReport(first.lease_id, result_for(first.params, first.start, first.stop), 0.01)
    (second,) = store.exchange(new.worker_id, [report], [], 1, now=0.3).leases
    assert (second.start, second.stop) == (first.stop, big.stop)


def test_answer_does_not_depend_on_chunking(store: Store) -> None:
    answers = []
    for cores in (1, 3):
        job = store.submit_job("sum", {"n": 777}, now=0.0)
        worker, _ = store.enrol_worker(f"w{cores}", cores, ["sum"], now=0.0)
        complete(store, worker.worker_id, now=0.0, want=cores)
        answers.append(store.get_job(job.job_id).answer)
    assert answers[0] == answers[1] == {"total": sum(range(777))}


def test_lease_states_are_recorded(store: Store) -> None:
    store.submit_job("sum", {"n": 2}, now=0.0)
    a, _ = store.enrol_worker("a", 1, ["sum"], now=0.0)
    (grant,) = store.exchange(a.worker_id, [], [], 1, now=0.0).leases
    with store.backend.transaction():
        lease = store.backend.get_lease(grant.lease_id)
    assert lease is not None and lease.state is LeaseState.ACTIVE
    assert lease.deadline_s == pytest.approx(TTL)


def test_workers_report_their_state(store: Store) -> None:
    worker, _ = store.enrol_worker("a", 1, ["sum"], now=0.0)
    assert store.list_workers()[0].state == "running"
    store.exchange(worker.worker_id, [], [], 0, now=1.0, state="paused", state_reason="on battery")
    (seen,) = store.list_workers()
    assert (seen.state, seen.state_reason) == ("paused", "on battery")


def test_a_worker_holds_at_most_two_leases_per_core(store: Store) -> None:
    # One chunk computing per core, and one whose result is on its way: no more.
    store.submit_job("sum", {"n": 1000}, now=0.0)
    worker, _ = store.enrol_worker("a", 2, ["sum"], now=0.0)
    assert len(store.exchange(worker.worker_id, [], [], 256, now=0.0).leases) == 4
    assert store.leases_in_hand() == {worker.worker_id: 4}
    assert store.exchange(worker.worker_id, [], [], 5, now=0.1).leases == []


def test_a_paused_worker_returns_leases_and_others_take_them(store: Store) -> None:
    store.submit_job("sum", {"n": 1000}, now=0.0)
    paused, _ = store.enrol_worker("paused", 2, ["sum"], now=0.0)
    other, _ = store.enrol_worker("other", 2, ["sum"], now=0.0)
    kept, given = store.exchange(paused.worker_id, [], [], 2, now=0.0).leases
    version = store.work_version
    assert store.return_leases(paused.worker_id, [given.lease_id, given.lease_id], now=1.0) == 1
    assert store.work_version > version  # waiting workers are woken
    assert store.leases_in_hand()[paused.worker_id] == 1
    with store.backend.transaction():
        returned = store.backend.get_lease(given.lease_id)
        still = store.backend.get_lease(kept.lease_id)
    assert returned is not None and returned.state is LeaseState.RETURNED
    assert still is not None and still.state is LeaseState.ACTIVE
    (regained,) = store.exchange(other.worker_id, [], [], 1, now=1.0).leases
    assert (regained.chunk_index, regained.start) == (given.chunk_index, given.start)
    # Not active any more: counted as nothing; the chunk stays with its new holder.
    assert store.return_leases(paused.worker_id, [given.lease_id], now=1.0) == 0
    assert store.leases_in_hand() == {paused.worker_id: 1, other.worker_id: 1}


@pytest.mark.parametrize("whose", ["another worker's", "an unknown"])
def test_returning_a_lease_not_held_changes_nothing(store: Store, whose: str) -> None:
    store.submit_job("sum", {"n": 1000}, now=0.0)
    mine, _ = store.enrol_worker("mine", 1, ["sum"], now=0.0)
    theirs, _ = store.enrol_worker("theirs", 1, ["sum"], now=0.0)
    (own,) = store.exchange(mine.worker_id, [], [], 1, now=0.0).leases
    (foreign,) = store.exchange(theirs.worker_id, [], [], 1, now=0.0).leases
    bad = foreign.lease_id if whose == "another worker's" else "ab" * 16
    error = Forbidden if whose == "another worker's" else NotFound
    before = snapshot(store)
    with pytest.raises(error) as caught:
        store.return_leases(mine.worker_id, [own.lease_id, bad], now=5.0)
    assert caught.value.extra["lease_id"] == bad
    assert snapshot(store) == before
    with pytest.raises(NotFound):
        store.return_leases("w-nobody", [own.lease_id], now=5.0)
    assert snapshot(store) == before


def test_a_failed_chunk_goes_to_another_worker_first(store: Store) -> None:
    job = store.submit_job("sum", {"n": 2}, now=0.0)
    broken, _ = store.enrol_worker("broken", 1, ["sum"], now=0.0)
    healthy, _ = store.enrol_worker("healthy", 1, ["sum"], now=0.0)
    (grant,) = store.exchange(broken.worker_id, [], [], 1, now=0.0).leases
    failed = ResultReport(grant.lease_id, error="illegal instruction")
    assert store.exchange(broken.worker_id, [failed], [], 1, now=0.1).leases == []
    (again,) = store.exchange(healthy.worker_id, [], [], 1, now=0.2).leases
    assert (again.start, again.stop) == (grant.start, grant.stop)
    done = ResultReport(again.lease_id, {"total": 1}, 0.1)
    store.exchange(healthy.worker_id, [done], [], 0, now=0.3)
    assert store.get_job(job.job_id).state is JobState.DONE


def test_a_claimed_compute_time_is_capped_by_the_lease_age(store: Store) -> None:
    store.submit_job("sum", {"n": 100}, now=0.0)
    liar, _ = store.enrol_worker("liar", 1, ["sum"], now=0.0)
    (grant,) = store.exchange(liar.worker_id, [], [], 1, now=0.0).leases
    units = grant.stop - grant.start
    report = ResultReport(grant.lease_id, {"total": sum(range(grant.start, grant.stop))}, 1e6)
    store.exchange(liar.worker_id, [report], [], 0, now=2.0)
    # Believed at most 2 s (the lease's age), not a million.
    assert store.list_workers()[0].speeds["sum"] == pytest.approx(units / 2.0)


def test_a_revoked_worker_gets_nothing_more(store: Store) -> None:
    store.submit_job("sum", {"n": 100}, now=0.0)
    worker, _ = store.enrol_worker("a", 1, ["sum"], now=0.0)
    store.revoke_worker(worker.worker_id, now=0.5)
    with pytest.raises(Unauthorized):
        store.exchange(worker.worker_id, [], [], 1, now=1.0)


def test_a_nested_transaction_that_fails_undoes_only_its_own_writes(store: Store) -> None:
    backend = store.backend
    first = store.submit_job("sum", {"n": 1}, now=0.0)
    with backend.transaction():
        outer = backend.get_job(first.job_id)
        assert outer is not None
        outer.name = "outer"
        backend.put_job(outer)
        with pytest.raises(RuntimeError), backend.transaction():
            inner = backend.get_job(first.job_id)
            assert inner is not None
            inner.name = "inner"
            backend.put_job(inner)
            raise RuntimeError("refused")
        with backend.transaction():
            kept = backend.get_job(first.job_id)
            assert kept is not None and kept.name == "outer"
    assert store.get_job(first.job_id).name == "outer"


def test_batched_exchanges_are_recorded_or_refused_each_on_its_own(store: Store) -> None:
    store.submit_job("sum", {"n": 100}, now=0.0)
    a, _ = store.enrol_worker("a", 1, ["sum"], now=0.0)
    b, _ = store.enrol_worker("b", 1, ["sum"], now=0.0)
    (grant,) = store.exchange(a.worker_id, [], [], 1, now=0.0).leases
    good = ResultReport(grant.lease_id, {"total": sum(range(grant.start, grant.stop))}, 0.1)
    forged = ResultReport(grant.lease_id, {"total": 0}, 0.1)  # b has no such lease
    answers = store.exchange_many(
        [
            ExchangeRequest(b.worker_id, [forged], [], 0, 1.0),
            ExchangeRequest(a.worker_id, [good], [], 1, 1.0),
            ExchangeRequest("w-nobody", [], [], 1, 1.0),
        ]
    )
    assert isinstance(answers[0], Forbidden)
    assert not isinstance(answers[1], Exception) and answers[1].accepted == [grant.lease_id]
    assert isinstance(answers[2], NotFound)
    assert store.list_workers()[0].chunks_done + store.list_workers()[1].chunks_done == 1
    assert store.leases_in_hand()[b.worker_id] == 0  # b's refused exchange left nothing


def test_a_refused_exchange_in_a_batch_leaves_the_job_as_the_others_left_it(
    store: Store,
) -> None:
    """Jobs are written once per batch; a refused exchange's changes to them must vanish
    with it, even when it had folded a good result before the bad one."""
    job = store.submit_job("sum", {"n": 100}, now=0.0)
    a, _ = store.enrol_worker("a", 2, ["sum"], now=0.0)
    b, _ = store.enrol_worker("b", 2, ["sum"], now=0.0)
    a_grants = store.exchange(a.worker_id, [], [], 2, now=0.0).leases
    b_grants = store.exchange(b.worker_id, [], [], 2, now=0.0).leases

    def good(g: LeaseGrant) -> ResultReport:
        return ResultReport(g.lease_id, result_for(g.params, g.start, g.stop), 0.1)

    bad = ResultReport(b_grants[1].lease_id, {"total": -1}, 0.1)
    answers = store.exchange_many(
        [
            ExchangeRequest(a.worker_id, [good(a_grants[0])], [], 0, 1.0),
            ExchangeRequest(b.worker_id, [good(b_grants[0]), bad], [], 0, 1.0),
            ExchangeRequest(a.worker_id, [good(a_grants[1])], [], 0, 1.0),
        ]
    )
    assert isinstance(answers[1], InvalidResult)
    assert not isinstance(answers[0], Exception) and not isinstance(answers[2], Exception)
    stored = store.get_job(job.job_id)
    done = sum(g.stop - g.start for g in a_grants)
    assert stored.units_done == done
    assert stored.live == {"total": sum(sum(range(g.start, g.stop)) for g in a_grants)}
    assert {o.start for o in store.job_outputs(job.job_id)} == {g.start for g in a_grants}
    assert store.leases_in_hand()[b.worker_id] == 2  # b's leases are still its to finish


def test_a_job_finished_within_a_batch_is_not_leased_by_the_rest_of_it(store: Store) -> None:
    job = store.submit_job("sum", {"n": 4}, now=0.0)
    a, _ = store.enrol_worker("a", 1, ["sum"], now=0.0)
    b, _ = store.enrol_worker("b", 1, ["sum"], now=0.0)
    grants = []
    while len(grants) < 2 or sum(g.stop - g.start for g in grants) < 4:
        grants += store.exchange(a.worker_id, [], [], 2, now=0.0).leases
        if not grants:
            break
    reports = [ResultReport(g.lease_id, result_for(g.params, g.start, g.stop), 0.1) for g in grants]
    answers = store.exchange_many(
        [
            ExchangeRequest(a.worker_id, reports, [], 0, 1.0),
            ExchangeRequest(b.worker_id, [], [], 1, 1.0),
        ]
    )
    assert not isinstance(answers[0], Exception) and answers[0].ended_jobs == {job.job_id}
    assert not isinstance(answers[1], Exception) and answers[1].leases == []
    finished = store.get_job(job.job_id)
    assert finished.state is JobState.DONE and finished.answer == {"total": sum(range(4))}
    assert store.list_jobs(JobState.RUNNING) == []


def test_lease_ids_sort_in_the_order_they_were_issued(store: Store) -> None:
    store.submit_job("sum", {"n": 1000}, now=0.0)
    worker, _ = store.enrol_worker("a", 64, ["sum"], now=0.0)
    ids = [
        g.lease_id
        for now in (1.0, 1.5, 1_700_000_000.25)
        for g in store.exchange(worker.worker_id, [], [], 3, now=now).leases
    ]
    assert len(set(ids)) == len(ids) == 9
    assert all(len(i) == 32 and set(i) <= set("0123456789abcdef") for i in ids)
    assert ids[:3] < ids[3:6] < ids[6:]  # by issue time (the same time: in any order)
    assert sorted(ids[:3]) < sorted(ids[3:6]) and max(ids[3:6]) < min(ids[6:])


def test_the_pool_speed_counts_every_core_of_the_workers_online(store: Store) -> None:
    backend = store.backend
    speeds = {"fast": ({"sum": 100.0, "other": 7.0}, 4), "slow": ({"sum": 2.5}, 2)}
    for name, (speed, cores) in {**speeds, "gone": ({"sum": 1e6}, 8)}.items():
        worker, _ = store.enrol_worker(name, cores, ["sum"], now=0.0)
        worker.speeds = speed
        worker.left = name == "gone"
        with backend.transaction():
            backend.put_worker(worker)
    late, _ = store.enrol_worker("unseen", 1, ["sum"], now=-100.0)  # not seen since -1
    revoked, _ = store.enrol_worker("revoked", 1, ["sum"], now=0.0)
    for worker in (late, revoked):
        worker.speeds = {"sum": 1e6}
    revoked.revoked = True
    with backend.transaction():
        backend.put_worker(late)
        backend.put_worker(revoked)
        assert backend.pool_speed("sum", -1.0) == 100.0 * 4 + 2.5 * 2
        assert backend.pool_speed("other", -1.0) == 7.0 * 4
        assert backend.pool_speed("mandelbrot", -1.0) == 0.0
        assert backend.pool_speed("sum", 1.0) == 0.0  # nobody seen since


def test_the_cores_online_leave_out_the_gone_and_the_barred(store: Store) -> None:
    backend = store.backend
    for name, cores in {"a": 4, "b": 2, "gone": 8, "barred": 16}.items():
        worker, _ = store.enrol_worker(name, cores, ["sum"], now=0.0)
        worker.left = name == "gone"
        worker.barred = "lied" if name == "barred" else ""
        with backend.transaction():
            backend.put_worker(worker)
    store.enrol_worker("unseen", 32, ["sum"], now=-100.0)
    with backend.transaction():
        assert backend.pool_cores(-1.0) == 6
        assert backend.pool_cores(1.0) == 0


def test_a_refused_exchange_leaves_leases_findable_as_before(store: Store) -> None:
    """The indexes a backend keeps (active leases by worker and chunk, by deadline, chunks
    by state) come back with the rows when an exchange is refused."""
    store.submit_job("sum", {"n": 100}, now=0.0)
    worker, _ = store.enrol_worker("a", 1, ["sum"], now=0.0)
    (grant,) = store.exchange(worker.worker_id, [], [], 1, now=0.0).leases
    good = ResultReport(grant.lease_id, result_for(grant.params, grant.start, grant.stop), 0.1)
    with pytest.raises(NotFound):
        store.exchange(
            worker.worker_id, [good, ResultReport("f" * 32, {"total": 1})], [], 1, now=0.5
        )
    backend = store.backend
    with backend.transaction():
        assert backend.count_active_leases(worker.worker_id) == 1
        (active,) = backend.active_leases_of_worker(worker.worker_id)
        assert active.lease_id == grant.lease_id
        assert [c.index for c in backend.leased_chunks(grant.job_id)] == [grant.chunk_index]
        assert backend.overdue_leases(TTL - 0.1, 10) == []
        (overdue,) = backend.overdue_leases(TTL + 0.1, 10)
        assert overdue.lease_id == grant.lease_id
    assert store.expire_leases(TTL + 0.1) == 1
    with backend.transaction():
        assert backend.count_active_leases(worker.worker_id) == 0
        assert [c.index for c in backend.pending_chunks(grant.job_id, 10)] == [grant.chunk_index]


def test_a_late_result_abandons_the_copy_of_its_chunk_while_the_job_goes_on(
    store: Store,
) -> None:
    store.submit_job("sum", {"n": 1000}, now=0.0)
    a, _ = store.enrol_worker("a", 1, ["sum"], now=0.0)
    b, _ = store.enrol_worker("b", 1, ["sum"], now=0.0)
    (grant,) = store.exchange(a.worker_id, [], [], 1, now=0.0).leases
    assert store.expire_leases(now=TTL + 0.1) == 1
    (again,) = store.exchange(b.worker_id, [], [], 1, now=TTL + 0.2).leases
    assert (again.start, again.stop) == (grant.start, grant.stop)
    late = ResultReport(grant.lease_id, result_for(grant.params, grant.start, grant.stop), 0.1)
    store.exchange(a.worker_id, [late], [], 0, now=TTL + 0.3)
    assert store.get_job(grant.job_id).state is JobState.RUNNING
    outcome = store.exchange(b.worker_id, [], [again.lease_id], 0, now=TTL + 0.4)
    assert outcome.abandon == [again.lease_id]
    assert store.leases_in_hand()[b.worker_id] == 0


def test_the_winner_abandons_the_backup_while_other_chunks_run(store: Store) -> None:
    store.submit_job("sum", {"n": 4}, now=0.0)
    slow, _ = store.enrol_worker("slow", 1, ["sum"], now=0.0)
    other, _ = store.enrol_worker("other", 1, ["sum"], now=0.0)
    fast, _ = store.enrol_worker("fast", 1, ["sum"], now=0.0)
    (grant,) = store.exchange(slow.worker_id, [], [], 1, now=0.0).leases
    (second,) = store.exchange(other.worker_id, [], [], 1, now=0.0).leases
    assert (grant.stop, second.stop) == (2, 4)
    (backup,) = store.exchange(fast.worker_id, [], [], 1, now=1.6).leases
    assert (backup.start, backup.stop) == (grant.start, grant.stop)
    won = ResultReport(grant.lease_id, result_for(grant.params, 0, 2), 0.1)
    store.exchange(slow.worker_id, [won], [], 0, now=1.7)
    assert store.get_job(grant.job_id).state is JobState.RUNNING
    outcome = store.exchange(fast.worker_id, [], [backup.lease_id], 0, now=1.8)
    assert outcome.abandon == [backup.lease_id]


def test_tail_chunks_count_the_work_still_in_flight(store: Store) -> None:
    """Two workers of 100 units/s (1 s chunks: 100 units) near the end of a 275-unit job."""
    job = store.submit_job("sum", {"n": 275}, now=0.0)
    ids = []
    for name in ("a", "b"):
        worker, _ = store.enrol_worker(name, 1, ["sum"], now=0.0)
        worker.speeds, worker.speed_evidence_s = {"sum": 100.0}, {"sum": 10.0}
        with store.backend.transaction():
            store.backend.put_worker(worker)
        ids.append(worker.worker_id)
    a, b = ids

    def result(grant: LeaseGrant, compute_s: float) -> ResultReport:
        output = result_for(grant.params, grant.start, grant.stop)
        return ResultReport(grant.lease_id, output, compute_s)

    (first,) = store.exchange(a, [], [], 1, now=0.0).leases
    (second,) = store.exchange(b, [], [], 1, now=0.5).leases  # b starts half a second late
    assert (first.stop - first.start, second.stop - second.start) == (100, 100)
    # a finishes early, at 0.8 s, and asks for its next chunk before it sends the result
    # (running nothing): its own lease no longer counts. Of b's, 70 units are still to do;
    # half of them count (IN_FLIGHT_WEIGHT): a gets (75 + 35) / 2. Counting nothing in
    # flight it would get 75 / 2, counting its own lease too (75 + 45) / 2.
    (third,) = store.exchange(a, [], [], 1, now=0.8).leases
    assert third.stop - third.start == 55
    # A refused exchange leaves the estimate as it found it.
    before = store.in_flight.units(job.job_id, 0.9)
    forged = ResultReport(third.lease_id, {"total": -1}, 0.1)
    with pytest.raises(InvalidResult):
        store.exchange(a, [result(first, 0.8), forged], [third.lease_id], 0, now=0.9)
    assert store.in_flight.units(job.job_id, 0.9) == pytest.approx(before)
    store.exchange(a, [result(first, 0.8)], [third.lease_id], 0, now=0.9)
    store.exchange(a, [result(third, 0.55)], [], 0, now=1.35)
    # At 1.5 s nothing is in flight: b gets half of the last 20 units; then a half of what
    # is left and half of b's 10 in flight.
    (fourth,) = store.exchange(b, [result(second, 1.0)], [], 1, now=1.5).leases
    (fifth,) = store.exchange(a, [], [], 1, now=1.5).leases
    assert (fourth.stop - fourth.start, fifth.stop - fifth.start) == (10, 8)
    assert len(store.in_flight) == 2
    store.exchange(a, [result(fifth, 0.1)], [], 0, now=1.6)
    store.leave(b, now=1.6)
    assert len(store.in_flight) == 0


# --- large payloads and the blob store --------------------------------------------------------


def test_large_outputs_go_to_the_blob_store_and_small_ones_stay_in_rows(store: Store) -> None:
    db = store.backend
    small = {"total": 5}
    big = {"counts": "x" * (INLINE_OUTPUT_MAX_BYTES + 1), "inside": 3}
    with db.transaction():
        db.put_output(StoredOutput("job1", 0, 0, 5, small))
        db.put_output(StoredOutput("job1", 1, 5, 9, big))
    (name,) = db.blobs.names("job1")
    assert name.startswith("outputs/1-")
    with db.transaction():
        assert db.get_output("job1", 1) == StoredOutput("job1", 1, 5, 9, big)
        assert db.get_output("job1", 0) == StoredOutput("job1", 0, 0, 5, small)
        assert [o.output for o in db.iter_outputs("job1")] == [small, big]
        assert db.output_indices("job1") == [0, 1]
    assert store.outputs_at("job1", [1, 7, 0]) == [
        ChunkOutput(5, 9, big),
        ChunkOutput(0, 5, small),
    ]
    with pytest.raises(RuntimeError), db.transaction():
        db.put_output(StoredOutput("job1", 2, 9, 12, big))
        raise RuntimeError("the exchange failed")
    with db.transaction():  # its blob may be left behind; its row is not
        assert db.get_output("job1", 2) is None
        assert db.output_indices("job1") == [0, 1]
        assert db.get_output("job1", 1) == StoredOutput("job1", 1, 5, 9, big)


def test_artefacts_are_kept_in_the_blob_store_and_streamed_out(store: Store) -> None:
    db = store.backend
    with db.transaction():
        db.put_artefact("job1", "image.png", "image/png", b"\x89PNG...")
        db.put_artefact("job1", "my picture?.png", "image/png", b"spaces")
        assert db.get_artefact("job1", "image.png") == ("image/png", b"\x89PNG...")
        assert db.get_artefact("job1", "my picture?.png") == ("image/png", b"spaces")
        assert db.get_artefact("job1", "other") is None
        assert db.open_artefact("job2", "image.png") is None
    names = db.blobs.names("job1")
    assert len(names) == 2 and "artefacts/image.png" in names
    # A renderer writes the blob itself, then the store records it.
    db.blobs.put_stream("job1", artefact_blob_name("counts.npy"), iter([b"ab", b"cd"]))
    store.artefact_written("job1", "counts.npy", "application/octet-stream")
    with db.transaction():
        found = db.open_artefact("job1", "counts.npy")
    assert found is not None
    media_type, file = found
    with file:
        assert (media_type, file.read()) == ("application/octet-stream", b"abcd")
    db.blobs.delete("job1", "artefacts/counts.npy")
    with pytest.raises(StoreError, match="missing"), db.transaction():
        db.open_artefact("job1", "counts.npy")


class FailingSync(MemoryBlobStore):
    """Blobs that cannot be put on the disk once some are waiting for it."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = 0

    def put_stream(
        self, job_id: str, name: str, pieces: Iterable[bytes], durable: bool = True
    ) -> int:
        self.waiting += not durable
        return super().put_stream(job_id, name, pieces, durable)

    def sync(self) -> None:
        if self.waiting:
            self.waiting = 0
            raise StoreError("the disk is full")


def test_a_transaction_whose_blobs_cannot_be_synced_is_not_committed(tmp_path: Path) -> None:
    big = {"counts": "x" * (INLINE_OUTPUT_MAX_BYTES + 1)}
    for db in (MemoryBackend(FailingSync()), SQLiteBackend(tmp_path / "s.db", FailingSync())):
        with pytest.raises(StoreError, match="disk is full"), db.transaction():
            db.put_output(StoredOutput("job1", 0, 0, 1, big))
        with db.transaction():
            assert db.get_output("job1", 0) is None
        db.close()


def test_a_job_history_reads_its_outputs_one_at_a_time(store: Store) -> None:
    job = store.submit_job("sum", {"n": 40}, now=1.0)
    padding = "x" * 2**20  # a large output (as a Mandelbrot chunk's counts are)
    with store.backend.transaction():
        for index in range(40):
            output = {"total": index, "padding": padding}
            store.backend.put_output(StoredOutput(job.job_id, index, index, index + 1, output))
    tracemalloc.start()
    try:
        points = job_history(store, job.job_id, max_points=10)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    totals = [sum(range(k)) for k in range(4, 41, 4)]
    assert points == [{"total": total} for total in totals]
    assert peak < 10 * 2**20  # all 40 outputs at once would be over 40 MB


# --- a worker's identity: its profile changes, removal, forgetting ----------------------------


def test_a_rejoining_worker_keeps_its_identity_with_new_cores_and_kinds(store: Store) -> None:
    job = store.submit_job("sum", {"n": 100}, now=0.0)
    worker, secret = store.enrol_worker("a", 1, ["sum"], now=0.0)
    complete(store, worker.worker_id, now=1.0)
    learnt = store.authenticate_worker(worker.worker_id, secret)
    assert store.get_job(job.job_id).state is JobState.DONE and learnt.speeds

    updated = store.update_worker_profile(worker.worker_id, 3, ["sum", "pi", "sum"], now=9.0)
    assert (updated.cores, updated.kinds, updated.last_seen_s) == (3, ["pi", "sum"], 9.0)
    (listed,) = store.list_workers()
    assert listed.worker_id == worker.worker_id
    assert (listed.cores, listed.kinds) == (3, ["pi", "sum"])
    assert listed.speeds == learnt.speeds and listed.chunks_done == learnt.chunks_done
    store.authenticate_worker(worker.worker_id, secret)  # the same secret still works


@pytest.mark.parametrize(
    ("cores", "kinds", "field"),
    [
        (0, ["sum"], "cores"),
        (1025, ["sum"], "cores"),
        (True, ["sum"], "cores"),
        (2, [], "kinds"),
        (2, ["Not A Kind"], "kinds"),
        (2, ["k" + str(i) for i in range(101)], "kinds"),
    ],
)
def test_a_bad_profile_is_refused_and_changes_nothing(
    store: Store, cores: int, kinds: list[str], field: str
) -> None:
    worker, _ = store.enrol_worker("a", 1, ["sum"], now=0.0)
    before = snapshot(store)
    with pytest.raises(InvalidRequest) as refused:
        store.update_worker_profile(worker.worker_id, cores, kinds, now=1.0)
    assert field in refused.value.extra["errors"]
    assert snapshot(store) == before
    with pytest.raises(NotFound):
        store.update_worker_profile("w-nobody", 1, ["sum"], now=1.0)


def test_a_removed_worker_is_gone_and_its_leases_go_back(store: Store) -> None:
    store.submit_job("sum", {"n": 100}, now=0.0)
    gone, secret = store.enrol_worker("gone", 1, ["sum"], now=0.0)
    other, _ = store.enrol_worker("other", 1, ["sum"], now=0.0)
    (held,) = store.exchange(gone.worker_id, [], [], 1, now=0.0).leases
    assert store.remove_worker(gone.worker_id, now=1.0).name == "gone"
    assert [w.worker_id for w in store.list_workers()] == [other.worker_id]
    assert gone.worker_id not in store.leases_in_hand()
    with pytest.raises(Unauthorized):
        store.authenticate_worker(gone.worker_id, secret)
    (again,) = store.exchange(other.worker_id, [], [], 1, now=1.0).leases
    assert (again.start, again.stop) == (held.start, held.stop)
    with pytest.raises(NotFound):
        store.remove_worker(gone.worker_id, now=2.0)


def test_workers_unseen_for_long_are_forgotten_and_others_kept(store: Store) -> None:
    store.submit_job("sum", {"n": 100}, now=0.0)
    old, _ = store.enrol_worker("old", 1, ["sum"], now=0.0)
    recent, _ = store.enrol_worker("recent", 1, ["sum"], now=0.0)
    (held,) = store.exchange(old.worker_id, [], [], 1, now=10.0).leases
    store.exchange(recent.worker_id, [], [], 0, now=50.0)
    assert store.forget_workers(now=100.0, older_than_s=100.0) == []
    forgotten = store.forget_workers(now=100.0, older_than_s=60.0)
    assert [w.worker_id for w in forgotten] == [old.worker_id]
    assert [w.worker_id for w in store.list_workers()] == [recent.worker_id]
    (again,) = store.exchange(recent.worker_id, [], [], 1, now=101.0).leases
    assert (again.start, again.stop) == (held.start, held.stop)


def test_deleting_a_worker_in_a_failed_transaction_keeps_it(store: Store) -> None:
    worker, secret = store.enrol_worker("a", 1, ["sum"], now=0.0)
    with pytest.raises(RuntimeError), store.backend.transaction():
        store.backend.delete_worker(worker.worker_id)
        assert store.backend.get_worker(worker.worker_id) is None
        raise RuntimeError("rolled back")
    assert store.authenticate_worker(worker.worker_id, secret).name == "a"
    store.backend.delete_worker("w-nobody")  # nothing to delete: no error
    assert [w.name for w in store.backend.workers_seen_before(1.0, 10)] == ["a"]
    assert store.backend.workers_seen_before(0.0, 10) == []


def test_a_spent_join_token_says_so_only_to_its_holder(store: Store) -> None:
    _, token = store.credentials.issue(CredentialKind.JOIN_TOKEN, "once", 0.0, max_uses=1)
    store.enrol_worker("first", 1, ["sum"], now=1.0, join_token=token)
    before = snapshot(store)
    with pytest.raises(Unauthorized) as spent:
        store.enrol_worker("second", 1, ["sum"], now=2.0, join_token=token)
    assert "used up" in spent.value.detail and "1 enrolment" in spent.value.detail
    wrong = token[: token.rindex("_") + 1] + "not-the-secret"
    with pytest.raises(Unauthorized) as guessed:
        store.enrol_worker("third", 1, ["sum"], now=2.0, join_token=wrong)
    assert "used up" not in guessed.value.detail
    assert snapshot(store) == before


def test_workers_gone_silent_are_those_last_heard_from_in_the_window(store: Store) -> None:
    store.enrol_worker("early", 1, ["sum"], now=1.0)
    store.enrol_worker("late", 1, ["sum"], now=5.0)
    left, _ = store.enrol_worker("left", 1, ["sum"], now=3.0)
    store.leave(left.worker_id, now=3.0)
    revoked, _ = store.enrol_worker("revoked", 1, ["sum"], now=4.0)
    store.revoke_worker(revoked.worker_id, now=4.0)
    assert [w.name for w in store.workers_gone_silent(0.0, 5.0)] == ["early"]
    assert [w.name for w in store.workers_gone_silent(2.0, 6.0)] == ["late"]
    assert [w.name for w in store.backend.workers_seen_before(6.0, 10, 2.0)] == [
        "left",
        "revoked",
        "late",
    ]


def test_jobs_are_counted_by_state_and_the_pool_figures_add_up(store: Store) -> None:
    assert store.backend.count_jobs() == dict.fromkeys(JobState, 0)
    store.submit_job("sum", {"n": 2}, now=0.0)
    finisher, _ = store.enrol_worker("finisher", 2, ["sum"], now=0.0)
    now = complete(store, finisher.worker_id, 0.0)
    cancelled = store.submit_job("sum", {"n": 2}, now=now)
    store.cancel_job(cancelled.job_id, now=now)
    for _ in range(3):
        store.submit_job("sum", {"n": 10**6}, now=now)
    assert store.exchange(finisher.worker_id, [], [], 2, now).leases
    assert store.backend.count_jobs() == {
        JobState.RUNNING: 3,
        JobState.DONE: 1,
        JobState.FAILED: 0,
        JobState.CANCELLED: 1,
    }
    paused, _ = store.enrol_worker("paused", 3, ["sum"], now=now)
    store.exchange(paused.worker_id, [], [], 0, now, state="paused", state_reason="on battery")
    gone, _ = store.enrol_worker("gone", 8, ["sum"], now=now)
    store.leave(gone.worker_id, now)
    store.revoke_worker(gone.worker_id, now)
    figures = pool_figures(store, now)
    in_hand = sum(store.leases_in_hand().values())
    assert in_hand > 0
    assert figures == PoolFigures(
        workers_enrolled=2,
        workers_online=2,
        workers_paused=1,
        workers_barred=0,
        cores_online=5,
        leases_in_flight=in_hand,
        jobs=store.backend.count_jobs(),
    )
    # A lease lifetime later nobody has been seen: nobody is online.
    later = pool_figures(store, now + TTL + 1)
    assert (later.workers_online, later.workers_paused, later.cores_online) == (0, 0, 0)


def test_labels_and_required_labels_are_kept_and_place_chunks(store: Store) -> None:
    now = 1000.0
    plain, _ = store.enrol_worker("plain", 2, ["sum"], now)
    lab, _ = store.enrol_worker("lab", 2, ["sum"], now)
    job = store.submit_job("sum", {"n": 50}, now, required_labels=["trusted", "trusted"])
    assert store.get_job(job.job_id).required_labels == ["trusted"]
    labelled = store.label_worker(lab.worker_id, add=["trusted", "site-a"])
    assert labelled.labels == ["site-a", "trusted"]
    assert store.label_worker(lab.worker_id, remove=["site-a"]).labels == ["trusted"]
    # A rejoin (cores, kinds) keeps the admin's labels.
    store.update_worker_profile(lab.worker_id, 4, ["sum"], now)
    assert {w.name: w.labels for w in store.list_workers()} == {"plain": [], "lab": ["trusted"]}
    refused = store.exchange(plain.worker_id, [], [], 4, now)
    assert refused.leases == []
    granted = store.exchange(lab.worker_id, [], [], 4, now)
    assert granted.leases and {g.job_id for g in granted.leases} == {job.job_id}
    before = snapshot(store)
    with pytest.raises(InvalidRequest):
        store.label_worker(lab.worker_id, add=["Bad Label"])
    with pytest.raises(NotFound):
        store.label_worker("w-nobody", add=["trusted"])
    with pytest.raises(InvalidParams):
        store.submit_job("sum", {"n": 5}, now, required_labels=["x" * 41])
    assert snapshot(store) == before


# --- what the coordinators of one pool share (store/shared.py) ------------------------------


def test_a_setting_is_made_once_and_the_first_value_wins(store: Store) -> None:
    assert store.sharing.setting("tls.ca") is None
    assert store.sharing.setting_once("tls.ca", "first") == "first"
    assert store.sharing.setting_once("tls.ca", "second") == "first"
    store.sharing.replace_setting("tls.ca", "third")
    assert store.sharing.setting("tls.ca") == "third"


def test_coordinators_are_listed_while_they_beat_and_not_once_they_leave(store: Store) -> None:
    a = CoordinatorEntry("c-a", "https://a", started_s=1.0, seen_s=10.0)
    b = CoordinatorEntry("c-b", "https://b", started_s=2.0, seen_s=10.0)
    assert [e.coordinator_id for e in store.sharing.heartbeat(a, alive_s=5.0)] == ["c-a"]
    assert store.sharing.heartbeat(b, alive_s=5.0) == [a, b]  # the longest running first
    assert store.sharing.coordinators(now=14.0, alive_s=5.0) == [a, b]
    assert store.sharing.coordinators(now=16.0, alive_s=5.0) == []  # both silent
    store.sharing.leave("c-a")
    assert store.sharing.coordinators(now=10.0, alive_s=5.0) == [b]


def test_changes_are_read_in_order_once_each_and_pruned(store: Store) -> None:
    start = store.sharing.last_change_seq()
    job = store.submit_job("sum", {"n": 4}, now=1.0)  # not shared: nothing is written
    assert store.sharing.changes_after(start) == (start, [])
    store.record_changes, store.origin = True, "c-a"
    store.cancel_job(job.job_id, now=2.0)
    other = store.submit_job("sum", {"n": 4}, now=3.0)
    worker, _ = store.enrol_worker("w", 1, ["sum"], now=3.0)
    grant = store.exchange(worker.worker_id, [], [], 1, now=3.0).leases[0]
    output = result_for(grant.params, grant.start, grant.stop)
    store.exchange_many(
        [ExchangeRequest(worker.worker_id, [ResultReport(grant.lease_id, output, 0.1)], [], 0, 4.0)]
    )
    seq, changes = store.sharing.changes_after(start)
    assert [(c.jobs, c.ended, c.work) for c in changes[:2]] == [
        ({job.job_id}, {job.job_id}, False),
        ({other.job_id}, frozenset(), True),
    ]
    assert changes[-1].chunks == (FinishedChunk(other.job_id, 0, 0, grant.stop),)
    assert all(c.origin == "c-a" for c in changes)
    assert [c.seq for c in changes] == sorted(c.seq for c in changes) and seq == changes[-1].seq
    assert store.sharing.changes_after(seq) == (seq, [])
    store.sharing.prune(now=1000.0)
    assert store.sharing.changes_after(start) == (seq, [])  # gone, the position stays


def test_a_refused_exchange_writes_no_change(store: Store) -> None:
    store.record_changes, store.origin = True, "c-a"
    start = store.sharing.last_change_seq()
    with pytest.raises(NotFound):
        store.exchange("w-nobody", [], [], 1, now=1.0)
    assert store.sharing.changes_after(start) == (start, [])


def test_shared_buckets_refill_and_run_out(store: Store) -> None:
    key = "failed:10.0.0.1"
    store.sharing.check_bucket(key, now=0.0, rate_per_s=1.0, burst=2)  # none yet
    assert store.sharing.spend(key, now=0.0, rate_per_s=1.0, burst=2) == 1.0
    assert store.sharing.spend(key, now=0.0, rate_per_s=1.0, burst=2) == 0.0
    with pytest.raises(TooManyRequests) as refused:
        store.sharing.check_bucket(key, now=0.5, rate_per_s=1.0, burst=2)
    assert refused.value.extra["retry_after_s"] == 1
    store.sharing.check_bucket(key, now=1.0, rate_per_s=1.0, burst=2)  # refilled one
    store.sharing.prune(now=10_000.0)
    with store.backend.transaction():
        assert store.backend.get_counter(key) is None


def _learn(store: Store, name: str, compute_s: float, now: float) -> str:
    """A worker that computed a 2-unit probe in ``compute_s`` (its speed: 2 / compute_s)."""
    worker, _ = store.enrol_worker(name, 1, ["sum"], now=now)
    (probe,) = store.exchange(worker.worker_id, [], [], 1, now=now).leases
    done = ResultReport(
        probe.lease_id, result_for(probe.params, probe.start, probe.stop), compute_s
    )
    store.exchange(worker.worker_id, [done], [], 0, now=now + compute_s)
    return worker.worker_id


def test_a_chunk_given_back_is_cut_to_fit_a_slower_worker(store: Store) -> None:
    n = 100_000
    job = store.submit_job("sum", {"n": n}, now=0.0)
    slow = _learn(store, "slow", 0.02, now=0.0)  # 100 units/s: 100-unit chunks
    fast = _learn(store, "fast", 0.002, now=0.0)  # 1,000 units/s: 1,000-unit chunks
    (big,) = store.exchange(fast, [], [], 1, now=0.1).leases
    assert big.stop - big.start == 1000
    assert store.return_leases(fast, [big.lease_id], now=0.2) == 1
    # The slow worker gets the part that fits it; the rest stays available, whole.
    (part,) = store.exchange(slow, [], [], 1, now=0.3).leases
    assert (part.start, part.stop) == (big.start, big.start + 100)
    assert part.chunk_index != big.chunk_index
    (rest,) = store.exchange(fast, [], [], 1, now=0.3).leases
    assert (rest.start, rest.stop) == (big.start + 100, big.stop)
    # The fast worker's output for the whole range, sent after it gave it back, passes the
    # check and counts for nothing: the answer stays exact.
    late = ResultReport(big.lease_id, result_for(big.params, big.start, big.stop), 0.5)
    assert store.exchange(fast, [late], [rest.lease_id], 0, now=0.4).accepted == [big.lease_id]
    reports = [
        ResultReport(g.lease_id, result_for(g.params, g.start, g.stop), 0.1) for g in (part, rest)
    ]
    store.exchange(slow, reports[:1], [], 0, now=0.5)
    store.exchange(fast, reports[1:], [], 0, now=0.5)
    complete(store, fast, now=1.0)
    done = store.get_job(job.job_id)
    assert done.state is JobState.DONE and done.answer == {"total": n * (n - 1) // 2}
    outputs = store.job_outputs(job.job_id)
    assert sum(o.stop - o.start for o in outputs) == n
    assert not any(o.start == big.start and o.stop == big.stop for o in outputs)


def test_a_replicated_chunk_with_a_copy_reported_is_never_cut(store: Store) -> None:
    job = store.submit_job("sum", {"n": 100_000}, now=0.0, replication=2, quorum=2)
    slow = _learn(store, "slow", 0.02, now=0.0)
    fast = _learn(store, "fast", 0.002, now=0.0)
    (big,) = store.exchange(fast, [], [], 1, now=0.1).leases
    done = ResultReport(big.lease_id, result_for(big.params, big.start, big.stop), 1.0)
    store.exchange(fast, [done], [], 0, now=1.1)
    # Its second copy must cover the same range, however slow the worker it goes to.
    grants = store.exchange(slow, [], [], 1, now=1.2).leases
    assert [(g.start, g.stop) for g in grants] == [(big.start, big.stop)]
    assert store.get_job(job.job_id).state is JobState.RUNNING


def test_at_the_tail_a_paused_holders_chunk_is_taken_back_and_cut(store: Store) -> None:
    n = 204
    job = store.submit_job("sum", {"n": n}, now=0.0)
    slow = _learn(store, "slow", 0.02, now=0.0)  # 100 units/s
    fast = _learn(store, "fast", 0.01, now=0.0)  # 200 units/s
    held = store.exchange(fast, [], [], 2, now=0.1).leases
    assert held[-1].stop == n  # the job is all carved
    big, running = held[0], [g.lease_id for g in held]
    # Its owner pauses it: the slow worker asking takes a chunk back, a part that fits.
    store.exchange(fast, [], running, 0, now=0.2, state="paused")
    (part,) = store.exchange(slow, [], [], 1, now=0.3).leases
    assert part.start == big.start and part.stop < big.stop
    outcome = store.exchange(fast, [], running, 0, now=0.4, state="paused")
    assert outcome.abandon == [big.lease_id]
    # The paused worker's output, if it sends one anyway, counts for nothing.
    late = ResultReport(big.lease_id, result_for(big.params, big.start, big.stop), 0.5)
    store.exchange(fast, [late], [], 0, now=0.5)
    report = ResultReport(part.lease_id, result_for(part.params, part.start, part.stop), 0.3)
    store.exchange(slow, [report], [], 0, now=0.6)
    complete(store, slow, now=0.7)  # the rest, and the paused worker's other chunk
    done = store.get_job(job.job_id)
    assert done.state is JobState.DONE and done.answer == {"total": n * (n - 1) // 2}


def test_paused_workers_are_found_among_the_ids_asked_about(store: Store) -> None:
    """``paused_workers``: those of the ids whose state is ``paused``, as the transaction
    sees them (its own writes, undone ones gone); unknown ids are no one."""
    backend = store.backend
    a, _ = store.enrol_worker("a", 1, ["sum"], now=0.0)
    b, _ = store.enrol_worker("b", 1, ["sum"], now=0.0)
    c, _ = store.enrol_worker("c", 1, ["sum"], now=0.0)
    with backend.transaction():
        for worker in (a, c):
            worker.state = "paused"
            backend.put_worker(worker)
        assert backend.paused_workers({a.worker_id, b.worker_id}) == {a.worker_id}
    with backend.transaction():
        assert backend.paused_workers([a.worker_id, b.worker_id, c.worker_id, "w-none"]) == {
            a.worker_id,
            c.worker_id,
        }
        assert backend.paused_workers([]) == set()
    with pytest.raises(RuntimeError), backend.transaction():
        b.state = "paused"
        backend.put_worker(b)
        a.state = "running"
        backend.put_worker(a)
        assert backend.paused_workers([a.worker_id, b.worker_id]) == {b.worker_id}
        raise RuntimeError("undone")
    with backend.transaction():
        assert backend.paused_workers([a.worker_id, b.worker_id]) == {a.worker_id}


def test_a_jobs_tail_is_read_in_the_orders_of_its_leases(store: Store) -> None:
    """``tail_chunks`` finds the leased chunks whose holders are paused, silent (renewed
    longest ago), late, or expected to end last, each order bounded, whatever the rest of
    the job holds; renewals, ended leases, resumed holders and undone writes move it."""
    job = store.submit_job("sum", {"n": 1000}, now=0.0)
    running, _ = store.enrol_worker("running", 1, ["sum"], now=0.0)
    paused, _ = store.enrol_worker("paused", 1, ["sum"], now=0.0)
    paused.state = "paused"
    backend = store.backend
    # chunk index -> (deadline, late, expected end); None: no times kept (an older lease)
    plan: dict[int, tuple[float, float | None, float | None]] = {
        0: (35.0, 1000.0, 25.0),  # silent
        1: (38.0, 1000.0, 25.0),  # silent
        2: (39.0, 1000.0, 25.0),  # silent, third
        3: (100.0, 10.0, 25.0),  # late
        4: (100.0, 29.0, 25.0),  # late
        5: (100.0, 29.5, 25.0),  # late, third
        6: (100.0, 1000.0, 500.0),  # ends last
        7: (100.0, 1000.0, 400.0),  # ends last
        8: (100.0, 1000.0, 300.0),  # ends last, third
        9: (100.0, 1000.0, 25.0),  # paused holder
        10: (35.0, 10.0, 500.0),  # an ended lease
        11: (100.0, None, None),  # no times kept
    }
    leases = {}
    with backend.transaction():
        backend.put_worker(paused)
        for index, (deadline, late, end) in plan.items():
            backend.put_chunk(Chunk(job.job_id, index, 10 * index, 10 * index + 10))
            chunk = backend.get_chunk(job.job_id, index)
            assert chunk is not None
            chunk.state = ChunkState.LEASED
            backend.put_chunk(chunk)
            holder = paused if index == 9 else running
            state = LeaseState.DONE if index == 10 else LeaseState.ACTIVE
            lease = Lease(
                f"{index:032x}", job.job_id, index, holder.worker_id, 0.0, deadline, state
            )
            lease.late_s, lease.expected_end_s = late, end
            backend.put_lease(lease)
            leases[index] = lease

    def tail(race: bool = True) -> list[int]:
        with backend.transaction():
            found = backend.tail_chunks(job.job_id, 30.0, 40.0, 2, race)
        return [c.index for c in found]

    assert tail() == [0, 1, 3, 4, 6, 7, 9]
    assert tail(race=False) == [0, 1, 3, 4, 9]
    with backend.transaction():
        leases[0].deadline_s = 100.0  # renewed
        backend.put_lease(leases[0])
        leases[3].state = LeaseState.DONE
        backend.put_lease(leases[3])
        leases[6].state = LeaseState.ABANDONED
        backend.put_lease(leases[6])
    assert tail() == [1, 2, 4, 5, 7, 8, 9]
    with pytest.raises(RuntimeError), backend.transaction():
        for index in (1, 4, 7):
            leases[index].state = LeaseState.EXPIRED
            backend.put_lease(leases[index])
        paused.state = "running"
        backend.put_worker(paused)
        assert [c.index for c in backend.tail_chunks(job.job_id, 30.0, 40.0, 2)] == [2, 5, 8]
        raise RuntimeError("undone")
    assert tail() == [1, 2, 4, 5, 7, 8, 9]
    with backend.transaction():
        paused.state = "running"
        backend.put_worker(paused)
    assert tail() == [1, 2, 4, 5, 7, 8]


def test_a_lease_without_an_expected_end_is_never_raced_and_found_once_late(
    store: Store,
) -> None:
    """A lease that keeps when its holder becomes late but no expected end: no backend
    races it (however it orders missing ends), and every one finds it once late."""
    job = store.submit_job("sum", {"n": 1000}, now=0.0)
    holder, _ = store.enrol_worker("new", 1, ["sum"], now=0.0)
    backend = store.backend
    with backend.transaction():
        for index, (late, end) in enumerate([(50.0, None), (1000.0, 40.0)]):
            backend.put_chunk(Chunk(job.job_id, index, 10 * index, 10 * index + 10))
            chunk = backend.get_chunk(job.job_id, index)
            assert chunk is not None
            chunk.state = ChunkState.LEASED
            backend.put_chunk(chunk)
            lease = Lease(f"{index:032x}", job.job_id, index, holder.worker_id, 0.0, 100.0)
            lease.late_s, lease.expected_end_s = late, end
            backend.put_lease(lease)

    def tail(now: float) -> list[int]:
        with backend.transaction():
            return [c.index for c in backend.tail_chunks(job.job_id, now, 0.0, 16)]

    assert tail(30.0) == [1]  # the race: only the lease with an expected end
    assert tail(60.0) == [0]  # late; the other's end has passed
