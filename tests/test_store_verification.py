"""Verification by replication through the real Store, on every backend: quorum, liars
barred, copies spread over volunteers, adaptive trust, spot checks, re-done outputs, and
verdicts that survive a restart."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hydracompute.core.config import SchedulerConfig
from hydracompute.core.credit import CreditPolicy
from hydracompute.core.lifecycle import Copy
from hydracompute.core.models import ChunkState, CredentialKind, JobState
from hydracompute.core.verification import VerificationPolicy
from hydracompute.errors import InvalidParams
from hydracompute.store import MemoryBackend, ResultReport, SQLiteBackend, Store
from hydracompute.store.backend import Backend, StoredOutput
from hydracompute.store.figures import pool_figures
from hydracompute.store.postgres import PostgresBackend
from hydracompute.store.records import LeaseGrant
from tests.postgres_support import POSTGRES_URL, schema_for
from tests.sum_kind import verification_registry

CONFIG = SchedulerConfig(target_chunk_s=1.0, heartbeat_s=1.0, max_failures=3)
#: Trusted after 10 confirmed outputs (ε 1e-2 with a saboteur share of 0.2).
POLICY = VerificationPolicy(error_bound=1e-2, saboteur_share=0.2, floor=0.1, spot_check_rate=0)
N = 60


def backend_for(kind: str, path: Path) -> Backend:
    """A backend of ``kind``; ``path`` names its file, or its schema (opened again by the
    same path, as after a restart)."""
    if kind == "memory":
        return MemoryBackend()
    if kind == "sqlite":
        return SQLiteBackend(path)
    return PostgresBackend(POSTGRES_URL, schema_for(path), pool_size=4)


BACKEND_KINDS = ["memory", "sqlite", "postgresql"]


@pytest.fixture(params=BACKEND_KINDS)
def backend_kind(request: pytest.FixtureRequest) -> str:
    return backend_kind_of(request)


def backend_kind_of(request: pytest.FixtureRequest) -> str:
    """The backend kind a test is parametrised with (a PostgreSQL one's schemas are
    dropped when it ends)."""
    if request.param == "postgresql":
        # Drops the schemas the test's paths name when it ends.
        schemas = request.getfixturevalue("postgres")
        tmp_path = request.getfixturevalue("tmp_path")
        schemas.names.append(schema_for(tmp_path / "s.db"))
    return str(request.param)


def open_store(
    kind: str,
    path: Path,
    policy: VerificationPolicy = POLICY,
    seed: int = 7,
    credit: CreditPolicy | None = None,
) -> Store:
    return Store(
        backend_for(kind, path),
        verification_registry(),
        CONFIG,
        verification=policy,
        rng=random.Random(seed),
        credit=credit,
    )


@pytest.fixture
def store(backend_kind: str, tmp_path: Path) -> Iterator[Store]:
    s = open_store(backend_kind, tmp_path / "s.db")
    yield s
    s.close()


@dataclass
class Volunteer:
    """A virtual worker: honest, or lying on every output (``lies``)."""

    worker_id: str
    lies: bool = False
    #: Lies only once it is trusted on the kind (a patient saboteur).
    patient: bool = False
    leases: list[tuple[str, int, int]] = field(default_factory=list)
    lies_told: int = 0
    #: Indices of the chunks it was given (ordinary work or spot checks).
    computed: list[int] = field(default_factory=list)

    def output(self, store: Store, start: int, stop: int) -> dict[str, int]:
        total = sum(range(start, stop))
        worker = next(w for w in store.list_workers() if w.worker_id == self.worker_id)
        trusted = store.verification.is_trusted(worker.trust.get("psum", 0))
        lying = self.lies and (trusted or not self.patient)
        self.lies_told += lying
        return {"total": total + 1 if lying else total}


def enrol(store: Store, name: str, token: str | None = None, now: float = 0.0) -> str:
    if token is None:
        _, token = store.credentials.issue(CredentialKind.JOIN_TOKEN, name, now)
    worker, _ = store.enrol_worker(name, 2, ["psum"], now, join_token=token)
    return worker.worker_id


def run(
    store: Store, volunteers: list[Volunteer], job_id: str, now: float = 1.0, rounds: int = 400
) -> float:
    """Each volunteer in turn reports what it holds and asks for more, until the job ends."""
    for _ in range(rounds):
        if store.get_job(job_id).state.finished:
            return now
        store.expire_leases(now)  # as the coordinator does every second
        for v in volunteers:
            now = run_round(store, [v], now)
    raise AssertionError(f"job {job_id} did not finish: {store.get_job(job_id)}")


def honest_total(n: int) -> int:
    return sum(range(n))


def chunks_of(store: Store, job_id: str) -> list[object]:
    with store.backend.transaction():
        return [
            store.backend.get_chunk(job_id, i) for i in range(store.get_job(job_id).chunks_carved)
        ]


def test_two_copies_from_two_workers_agree_before_a_chunk_is_accepted(store: Store) -> None:
    volunteers = [Volunteer(enrol(store, "a")), Volunteer(enrol(store, "b"))]
    job = store.submit_job("psum", {"n": N}, now=0.5, replication=2)
    assert (job.replication, job.quorum, job.adaptive) == (2, 2, False)
    run(store, volunteers, job.job_id)
    done = store.get_job(job.job_id)
    assert done.state is JobState.DONE and done.answer == {"total": honest_total(N)}
    chunks = chunks_of(store, job.job_id)
    assert all(c.verified for c in chunks)  # type: ignore[attr-defined]
    trust = {w.worker_id: w.trust.get("psum", 0) for w in store.list_workers()}
    assert trust == {v.worker_id: len(chunks) for v in volunteers}


def test_a_liar_is_outvoted_and_barred_and_the_answer_is_the_honest_one(store: Store) -> None:
    liar = Volunteer(enrol(store, "liar"), lies=True)
    volunteers = [liar, Volunteer(enrol(store, "a")), Volunteer(enrol(store, "b"))]
    job = store.submit_job("psum", {"n": N}, now=0.5, replication=2, quorum=2)
    run(store, volunteers, job.job_id)
    done = store.get_job(job.job_id)
    assert done.state is JobState.DONE and done.answer == {"total": honest_total(N)}
    barred = {w.worker_id: w.barred for w in store.list_workers()}
    assert "disagreed" in barred[liar.worker_id]
    assert pool_figures(store, now=100.0).workers_barred == 1  # what /metrics reports
    assert [w for w, reason in barred.items() if reason] == [liar.worker_id]
    # Once barred, it gets no work and its results are set aside.
    outcome = store.exchange(liar.worker_id, [], [], 4, now=100.0)
    assert outcome.leases == []


def test_a_replicated_chunk_counts_the_times_of_the_copy_that_completed_its_quorum(
    store: Store,
) -> None:
    """The ETA's stretch (Job.expected_compute_s, reported_compute_s) counts each accepted
    chunk once, with the copy that completed its quorum: a copy waiting for agreement
    counts nothing, even when its exchange saves the job (it carves new work)."""
    a, b = enrol(store, "a"), enrol(store, "b")
    job = store.submit_job("psum", {"n": 10**6}, now=0.0, replication=2)

    def report(grant: LeaseGrant, compute_s: float) -> ResultReport:
        return ResultReport(
            grant.lease_id, {"total": sum(range(grant.start, grant.stop))}, compute_s
        )

    (probe_a,) = store.exchange(a, [], [], 1, now=0.0).leases
    (probe_b,) = store.exchange(b, [], [], 1, now=0.0).leases
    (sized_a,) = store.exchange(a, [report(probe_a, 0.01)], [], 1, now=0.1).leases
    (sized_b,) = store.exchange(b, [report(probe_b, 0.01)], [], 1, now=0.1).leases
    assert sized_a.chunk_index == sized_b.chunk_index  # two copies of one sized chunk
    carved = store.get_job(job.job_id).next_unit
    store.exchange(a, [report(sized_a, 2.0)], [], 1, now=2.5)
    waiting = store.get_job(job.job_id)
    assert waiting.next_unit > carved  # the exchange saved the job
    assert (waiting.expected_compute_s, waiting.reported_compute_s) == (0.0, 0.0)
    store.exchange(b, [report(sized_b, 2.5)], [], 0, now=3.0)
    accepted = store.get_job(job.job_id)
    assert accepted.units_done == sized_b.stop  # the probe's chunk and this one
    with store.backend.transaction():
        lease_b = store.backend.get_lease(sized_b.lease_id)
    assert lease_b is not None and lease_b.expected_end_s is not None
    assert accepted.expected_compute_s == pytest.approx(lease_b.expected_end_s - 0.1)
    assert accepted.reported_compute_s == pytest.approx(2.5)


def test_copies_of_a_chunk_go_to_different_volunteers(store: Store) -> None:
    _, alice = store.credentials.issue(CredentialKind.JOIN_TOKEN, "alice", 0.0)
    # Alice's two machines and Bob's one: no chunk may be verified by Alice alone.
    alice_1, alice_2 = enrol(store, "alice-1", alice), enrol(store, "alice-2", alice)
    bob = enrol(store, "bob")
    job = store.submit_job("psum", {"n": N}, now=0.5, replication=2)
    volunteers = [Volunteer(alice_1), Volunteer(alice_2), Volunteer(bob)]
    run(store, volunteers, job.job_id)
    computed_by: dict[int, set[str]] = {}
    for v in volunteers:
        for index in v.computed:
            computed_by.setdefault(index, set()).add(v.worker_id)
    assert len(computed_by) == store.get_job(job.job_id).chunks_carved
    assert all(len(workers) == 2 and bob in workers for workers in computed_by.values())


def test_adaptive_trust_rises_then_trusted_outputs_are_accepted_alone(store: Store) -> None:
    volunteers = [Volunteer(enrol(store, "a")), Volunteer(enrol(store, "b"))]
    job = store.submit_job("psum", {"n": 6000}, now=0.5, adaptive=True)
    assert job.adaptive and job.replication == 1
    run(store, volunteers, job.job_id)
    assert store.get_job(job.job_id).answer == {"total": honest_total(6000)}
    chunks = chunks_of(store, job.job_id)
    alone = [c for c in chunks if c.unverified_by]  # type: ignore[attr-defined]
    verified = [c for c in chunks if c.verified]  # type: ignore[attr-defined]
    threshold = POLICY.trust_threshold
    # Both workers earned trust; before that every output was verified.
    assert all(w.trust["psum"] >= threshold for w in store.list_workers())
    assert len(verified) >= threshold and alone
    assert len(alone) + len(verified) == len(chunks)


def test_a_patient_liar_caught_later_has_its_unverified_outputs_redone(
    backend_kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Replicate trusted outputs rarely, so the patient liar gets lies accepted alone
    # before it is caught; once caught, they are computed again.
    policy = VerificationPolicy(error_bound=1e-2, saboteur_share=0.2, floor=0.2)
    store = open_store(backend_kind, tmp_path / "s.db", policy)
    liar = Volunteer(enrol(store, "liar"), lies=True, patient=True)
    volunteers = [liar, Volunteer(enrol(store, "a")), Volunteer(enrol(store, "b"))]
    job = store.submit_job("psum", {"n": 30000}, now=0.5, adaptive=True)
    run(store, volunteers, job.job_id, rounds=3000)
    done = store.get_job(job.job_id)
    assert done.state is JobState.DONE
    assert done.answer == {"total": honest_total(30000)}
    # It lied once trusted, some lies were accepted alone and re-done once it was caught:
    # none is left in the answer.
    redone = re.search(r"barred: .*; (\d+) of its outputs accepted alone", caplog.text)
    assert liar.lies_told > 0 and redone and int(redone.group(1)) > 0
    barred = {w.worker_id: w.barred for w in store.list_workers()}
    assert barred[liar.worker_id] and not any(
        reason for worker, reason in barred.items() if worker != liar.worker_id
    )
    assert not [c for c in chunks_of(store, job.job_id) if c.unverified_by == liar.worker_id]  # type: ignore[attr-defined]
    store.close()


def test_a_spot_check_catches_a_new_liar(backend_kind: str, tmp_path: Path) -> None:
    policy = VerificationPolicy(error_bound=1e-2, saboteur_share=0.2, spot_check_rate=1.0)
    store = open_store(backend_kind, tmp_path / "s.db", policy)
    volunteers = [Volunteer(enrol(store, "a")), Volunteer(enrol(store, "b"))]
    job = store.submit_job("psum", {"n": 4000}, now=0.5, adaptive=True)
    now = 1.0
    for _ in range(5):  # some chunks verified, the job still running
        now = run_round(store, volunteers, now)
    assert any(c.verified for c in chunks_of(store, job.job_id))  # type: ignore[attr-defined]
    assert store.get_job(job.job_id).state is JobState.RUNNING
    liar = Volunteer(enrol(store, "liar", now=now), lies=True)
    in_flight = store.lease_spans([job.job_id])[job.job_id]
    grants = store.exchange(liar.worker_id, [], [], 1, now=now).leases
    assert len(grants) == 1
    with store.backend.transaction():
        lease = store.backend.get_lease(grants[0].lease_id)
    assert lease is not None and lease.spot_check
    # A spot check is no work of the job's: its ETA does not count it in flight.
    assert store.lease_spans([job.job_id])[job.job_id] == in_flight
    g = grants[0]
    report = ResultReport(g.lease_id, liar.output(store, g.start, g.stop))
    store.exchange(liar.worker_id, [report], [], 0, now + 0.1)
    worker = next(w for w in store.list_workers() if w.worker_id == liar.worker_id)
    assert "differs from the verified one" in worker.barred
    store.close()


def run_round(store: Store, volunteers: list[Volunteer], now: float = 1.0) -> float:
    """Each volunteer reports what it holds (at 100 units per second) and asks for more."""
    for v in volunteers:
        reports = [
            ResultReport(lease_id, v.output(store, start, stop), compute_s=(stop - start) / 100)
            for lease_id, start, stop in v.leases
        ]
        outcome = store.exchange(v.worker_id, reports, [], 4, now)
        v.leases = [(g.lease_id, g.start, g.stop) for g in outcome.leases]
        v.computed.extend(g.chunk_index for g in outcome.leases)
        now += 0.5  # leases last 3 s: every volunteer is back well within that
    return now


def test_verdicts_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = open_store("sqlite", path)
    a, b = Volunteer(enrol(store, "a")), Volunteer(enrol(store, "b"))
    job = store.submit_job("psum", {"n": N}, now=0.5, replication=2)
    now = run_round(store, [a])  # a reports nothing yet: it holds first copies
    now = run_round(store, [a], now)  # a's outputs are held, waiting for b's
    held = [c for c in chunks_of(store, job.job_id) if c.reported]  # type: ignore[attr-defined]
    assert held
    store.close()  # as if the coordinator were killed: only the file remains
    store = open_store("sqlite", path)
    a.leases.clear()  # and a restarted: the leases it held will expire
    run(store, [a, b], job.job_id, now)
    assert store.get_job(job.job_id).answer == {"total": honest_total(N)}
    assert all(c.verified for c in chunks_of(store, job.job_id))  # type: ignore[attr-defined]
    store.close()


def test_replication_terms_are_validated(store: Store) -> None:
    for bad in ({"replication": 6}, {"replication": 2, "quorum": 3}, {"quorum": 0}):
        with pytest.raises(InvalidParams):
            store.submit_job("psum", {"n": 5}, now=1.0, **bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidParams, match="adaptive"):
        store.submit_job("psum", {"n": 5}, now=1.0, replication=2, adaptive=True)
    assert store.list_jobs() == []


# The new backend primitives, on every backend.


def test_candidates_are_kept_listed_and_forgotten(store: Store) -> None:
    db = store.backend
    one, two = Copy("0001", "w-a", {"total": 1}), Copy("0002", "w-b", {"total": 2})
    with db.transaction():
        db.put_candidate("j", 3, two)
        db.put_candidate("j", 3, one)
        db.put_candidate("j", 4, Copy("0003", "w-a", {"total": 3}))
    with db.transaction():
        assert db.candidates("j", 3) == [one, two]
        assert [(j, i, c.lease_id) for j, i, c in db.candidates_of_worker("w-a")] == [
            ("j", 3, "0001"),
            ("j", 4, "0003"),
        ]
        db.delete_candidates("j", 3, "0001")
        assert db.candidates("j", 3) == [two]
    with pytest.raises(RuntimeError), db.transaction():
        db.delete_candidates("j", 3)
        raise RuntimeError("rolled back")
    with db.transaction():
        assert db.candidates("j", 3) == [two]
        db.delete_candidates("j", 3)
        assert db.candidates("j", 3) == [] and len(db.candidates_of_worker("w-a")) == 1


def test_verified_unverified_and_pending_chunk_queries(store: Store) -> None:
    db = store.backend
    job = store.submit_job("psum", {"n": 100}, now=0.5)
    from hydracompute.core.models import Chunk

    chunks = [
        Chunk(job.job_id, 0, 0, 4, ChunkState.DONE, verified=True),
        Chunk(job.job_id, 1, 4, 40, ChunkState.DONE, verified=True),
        Chunk(job.job_id, 2, 40, 44, ChunkState.DONE, unverified_by="w-x"),
        Chunk(job.job_id, 3, 44, 48, ChunkState.PENDING, wanted=2, holders={"w-x": "t"}),
        Chunk(job.job_id, 4, 48, 52, ChunkState.PENDING),
    ]
    with db.transaction():
        for chunk in chunks:
            db.put_chunk(chunk)
        db.put_output(StoredOutput(job.job_id, 2, 40, 44, {"total": 1}))
    with db.transaction():
        found = db.verified_chunk(job.job_id, 10)
        assert found is not None and found.index == 0
        assert db.verified_chunk(job.job_id, 3) is None
        assert [c.index for c in db.unverified_chunks("w-x")] == [2]
        assert [c.index for c in db.pending_chunks(job.job_id, 10)] == [3, 4]
        assert [c.index for c in db.pending_chunks(job.job_id, 10, "w-x")] == [4]
        assert [c.index for c in db.pending_chunks(job.job_id, 10)] == [3, 4]
        db.delete_output(job.job_id, 2)
        assert db.get_output(job.job_id, 2) is None


def test_pool_tokens_counts_volunteers_online(store: Store) -> None:
    _, shared = store.credentials.issue(CredentialKind.JOIN_TOKEN, "lan", 0.0)
    enrol(store, "a", shared)
    enrol(store, "b", shared)
    with store.backend.transaction():
        assert store.backend.pool_tokens(seen_since=0.0) == 1
    enrol(store, "c")
    with store.backend.transaction():
        assert store.backend.pool_tokens(seen_since=0.0) == 2
        assert store.backend.pool_tokens(seen_since=1.0) == 0


def test_a_large_candidate_goes_to_the_blob_store_and_comes_back(store: Store) -> None:
    db = store.backend
    large = Copy("0009", "w-a", {"total": 1, "counts": "x" * 40_000})  # a Mandelbrot's size
    with db.transaction():
        db.put_candidate("j", 1, large)
    with db.transaction():
        assert db.candidates("j", 1) == [large]
        assert db.candidates_of_worker("w-a") == [("j", 1, large)]
    if isinstance(db, SQLiteBackend):  # the row names a blob instead of holding the output
        row = db._db.execute("SELECT output, blob FROM candidates").fetchone()
        assert row[0] == "" and row[1]


def test_a_finished_job_with_a_caught_liars_outputs_runs_again_to_the_honest_answer(
    backend_kind: str, tmp_path: Path
) -> None:
    # Trusted outputs are almost never replicated: a lie accepted alone stays unnoticed.
    policy = VerificationPolicy(
        error_bound=1e-2, saboteur_share=0.2, floor=0.001, spot_check_rate=0
    )
    store = open_store(backend_kind, tmp_path / "s.db", policy)
    liar, a, b = (Volunteer(enrol(store, name)) for name in ("liar", "a", "b"))
    warm_up = store.submit_job("psum", {"n": 6000}, now=0.5, adaptive=True)
    now = run(store, [liar, a, b], warm_up.job_id)  # all honest: all earn trust
    assert all(store.verification.is_trusted(w.trust["psum"]) for w in store.list_workers())
    liar.lies = True
    fooled = store.submit_job("psum", {"n": 500}, now=now, adaptive=True)
    now = run(store, [liar], fooled.job_id, now)  # the liar alone: accepted, unverified
    assert store.get_job(fooled.job_id).answer != {"total": honest_total(500)}
    caught = store.submit_job("psum", {"n": 500}, now=now, replication=2)
    now = run(store, [liar, a, b], caught.job_id, now)
    assert next(w for w in store.list_workers() if w.worker_id == liar.worker_id).barred
    again = store.get_job(fooled.job_id)
    assert again.state is JobState.RUNNING and again.reopened == 1 and again.answer is None
    run(store, [liar, a, b], fooled.job_id, now)
    fixed = store.get_job(fooled.job_id)
    assert fixed.state is JobState.DONE and fixed.answer == {"total": honest_total(500)}
    store.close()


def test_a_jobs_artefacts_are_forgotten_and_a_rollback_keeps_them(store: Store) -> None:
    db = store.backend
    with db.transaction():
        db.put_artefact("j", "image.png", "image/png", b"old picture")
        db.put_artefact("k", "image.png", "image/png", b"another job's")
    with pytest.raises(RuntimeError), db.transaction():
        db.delete_artefacts("j")
        raise RuntimeError("rolled back")
    with db.transaction():
        assert db.get_artefact("j", "image.png") == ("image/png", b"old picture")
        db.delete_artefacts("j")
    with db.transaction():
        assert db.get_artefact("j", "image.png") is None
        assert db.get_artefact("k", "image.png") == ("image/png", b"another job's")


def test_a_cancelled_jobs_copies_waiting_for_agreement_are_forgotten(store: Store) -> None:
    a = Volunteer(enrol(store, "a"))
    job = store.submit_job("psum", {"n": N}, now=0.5, replication=2)
    now = run_round(store, [a])
    run_round(store, [a], now)  # a's outputs wait for another worker's
    with store.backend.transaction():
        assert store.backend.candidates_of_worker(a.worker_id)
    store.cancel_job(job.job_id, now=9.0)
    with store.backend.transaction():
        assert store.backend.candidates_of_worker(a.worker_id) == []


def test_a_failed_jobs_copies_are_forgotten_and_other_jobs_keep_theirs(store: Store) -> None:
    db = store.backend
    with db.transaction():
        db.put_candidate("gone", 0, Copy("0001", "w-a", {"total": 1}))
        db.put_candidate("gone", 3, Copy("0002", "w-a", {"total": 2}))
        db.put_candidate("kept", 0, Copy("0003", "w-a", {"total": 3}))
        db.delete_job_candidates("gone")
        assert [(j, i) for j, i, _ in db.candidates_of_worker("w-a")] == [("kept", 0)]


def test_a_copy_reported_after_its_lease_lapsed_keeps_the_chunk_from_its_worker(
    store: Store,
) -> None:
    """A worker whose leases expired reports late: it is a holder of those chunks again,
    so it is not given them a second time (its two copies would agree with each other)."""
    job = store.submit_job("psum", {"n": 8}, now=0.0, replication=2)
    worker = enrol(store, "late")
    granted = store.exchange(worker, [], [], 2, now=0.0).leases
    assert granted
    store.expire_leases(CONFIG.lease_ttl_s + 1)
    later = CONFIG.lease_ttl_s + 2
    reports = [ResultReport(g.lease_id, {"total": sum(range(g.start, g.stop))}, 0.1)
               for g in granted]  # fmt: skip
    again = store.exchange(worker, reports, [], 2, now=later).leases
    assert {g.chunk_index for g in again}.isdisjoint(g.chunk_index for g in granted)
    assert store.credit_entries(job_id=job.job_id) == []  # one worker's copy verifies nothing
