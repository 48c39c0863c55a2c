"""The credit ledger through the real Store, on every backend: grants written with the
verdict, each agreeing replica credited once, liars' lies worth nothing, corrections as new
entries, rollbacks that write no credit, and a ledger that survives a restart."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from hydracompute.core.credit import (
    CreditEntry,
    CreditPolicy,
    EntryKind,
    Grouping,
    totals,
)
from hydracompute.core.models import CredentialKind, JobState
from hydracompute.core.verification import VerificationPolicy
from hydracompute.errors import InvalidRequest, InvalidResult
from hydracompute.store import ResultReport, Store
from tests.sum_kind import verification_registry
from tests.test_store_verification import (
    BACKEND_KINDS,
    CONFIG,
    POLICY,
    N,
    Volunteer,
    backend_for,
    backend_kind_of,
    chunks_of,
    enrol,
    run,
)
from tests.test_store_verification import open_store as open_verifying_store

WATTS = 12.5


def open_store(kind: str, path: Path, policy: VerificationPolicy = POLICY) -> Store:
    return open_verifying_store(kind, path, policy, 11, CreditPolicy(watts_per_core=WATTS))


@pytest.fixture(params=BACKEND_KINDS)
def backend_kind(request: pytest.FixtureRequest) -> str:
    return backend_kind_of(request)


@pytest.fixture
def store(backend_kind: str, tmp_path: Path) -> Iterator[Store]:
    s = open_store(backend_kind, tmp_path / "s.db")
    yield s
    s.close()


def token_of(store: Store, worker_id: str) -> str:
    return next(w.token_id for w in store.list_workers() if w.worker_id == worker_id)


def net_by_chunk(entries: list[CreditEntry]) -> dict[int, float]:
    net: dict[int, float] = defaultdict(float)
    for e in entries:
        net[e.chunk_index] += e.credit
    return dict(net)


def test_each_agreeing_replica_earns_the_work_of_the_job_once(store: Store) -> None:
    a, b = Volunteer(enrol(store, "a")), Volunteer(enrol(store, "b"))
    job = store.submit_job("psum", {"n": N}, now=0.5, replication=2)
    run(store, [a, b], job.job_id)
    entries = store.credit_entries(job_id=job.job_id)
    chunks = chunks_of(store, job.job_id)
    assert len(entries) == 2 * len(chunks)
    assert all(e.kind is EntryKind.GRANT for e in entries)
    by_volunteer = {t.key: t for t in store.credit_totals(Grouping.VOLUNTEER)}
    assert set(by_volunteer) == {token_of(store, a.worker_id), token_of(store, b.worker_id)}
    for total in by_volunteer.values():
        assert total.work == total.credit == N  # the psum kind's work: one per unit
        assert total.chunks == len(chunks)
        # Energy from the compute time each reported (at most the lease's age).
        assert 0 < total.energy_j <= N / 100 * WATTS + 1e-9
    # Entry ids increase in ledger order, and the totals are the entries summed.
    assert [e.entry_id for e in entries] == sorted({e.entry_id for e in entries})
    assert store.credit_totals(Grouping.WORKER) == totals(entries, Grouping.WORKER)


def test_a_disagreeing_liar_earns_nothing(store: Store) -> None:
    liar = Volunteer(enrol(store, "liar"), lies=True)
    honest = [Volunteer(enrol(store, "a")), Volunteer(enrol(store, "b"))]
    job = store.submit_job("psum", {"n": N}, now=0.5, replication=2)
    run(store, [liar, *honest], job.job_id)
    assert liar.lies_told > 0
    assert store.credit_entries(worker_id=liar.worker_id) == []
    by_worker = {t.key: t.credit for t in store.credit_totals(Grouping.WORKER)}
    assert sum(by_worker.values()) == 2 * N
    # Every chunk is credited exactly twice (its two agreeing copies).
    chunks = chunks_of(store, job.job_id)
    net = net_by_chunk(store.credit_entries(job_id=job.job_id))
    assert net == {c.index: 2 * c.units for c in chunks}  # type: ignore[attr-defined]


def test_a_patient_liar_caught_later_loses_the_credit_of_its_unverified_outputs(
    backend_kind: str, tmp_path: Path
) -> None:
    policy = VerificationPolicy(error_bound=1e-2, saboteur_share=0.2, floor=0.2)
    store = open_store(backend_kind, tmp_path / "s.db", policy)
    liar = Volunteer(enrol(store, "liar"), lies=True, patient=True)
    volunteers = [liar, Volunteer(enrol(store, "a")), Volunteer(enrol(store, "b"))]
    job = store.submit_job("psum", {"n": 30000}, now=0.5, adaptive=True)
    run(store, volunteers, job.job_id, rounds=3000)
    assert store.get_job(job.job_id).state is JobState.DONE
    entries = store.credit_entries(job_id=job.job_id)
    corrections = [e for e in entries if e.kind is EntryKind.CORRECTION]
    assert corrections and {e.worker_id for e in corrections} == {liar.worker_id}
    # Each correction cancels one grant of the liar for that chunk, written before it.
    for fix in corrections:
        (grant,) = [
            e
            for e in entries
            if e.kind is EntryKind.GRANT
            and (e.worker_id, e.chunk_index) == (liar.worker_id, fix.chunk_index)
        ]
        assert grant.entry_id < fix.entry_id and grant.credit == -fix.credit > 0
        assert grant.energy_j == -fix.energy_j
    # In the end each chunk is credited once per copy its accepted output stands on.
    chunks = chunks_of(store, job.job_id)
    net = net_by_chunk(entries)
    want = {c.index: c.units * (2 if c.verified else 1) for c in chunks}  # type: ignore[attr-defined]
    assert {i: v for i, v in net.items() if v} == want
    # The liar keeps only credit for outputs that others verified.
    liar_net = net_by_chunk(store.credit_entries(worker_id=liar.worker_id))
    assert all(
        chunks[i].verified  # type: ignore[attr-defined]
        for i, v in liar_net.items()
        if v
    )
    store.close()


def test_a_refused_exchange_writes_no_credit(store: Store) -> None:
    a = Volunteer(enrol(store, "a"))
    job = store.submit_job("psum", {"n": N}, now=0.5)
    grants = store.exchange(a.worker_id, [], [], 2, now=1.0).leases
    assert len(grants) == 2
    good = ResultReport(grants[0].lease_id, {"total": sum(range(grants[0].start, grants[0].stop))})
    bad = ResultReport(grants[1].lease_id, {"total": "not a number"})
    with pytest.raises(InvalidResult):
        store.exchange(a.worker_id, [good, bad], [], 0, now=2.0)
    assert store.credit_entries() == []
    store.exchange(a.worker_id, [good], [], 0, now=3.0)
    (entry,) = store.credit_entries()
    assert (entry.job_id, entry.chunk_index, entry.time_s) == (job.job_id, 0, 3.0)
    assert entry.volunteer == token_of(store, a.worker_id) != ""


def test_the_ledger_primitives_filter_sum_and_roll_back(store: Store) -> None:
    db = store.backend

    def entry(worker: str, volunteer: str, t: float, credit: float) -> CreditEntry:
        # Carbon figures tied to the credit so every sum can be checked: a tenth and a
        # fifth of it in grams, the zone by volunteer, alice's first worker measured.
        return CreditEntry(
            0,
            t,
            worker,
            volunteer,
            "j",
            int(t),
            credit,
            credit,
            2 * credit,
            gco2=credit / 10,
            gco2_blind=credit / 5,
            energy_measured=worker == "w1",
            zone="FR" if volunteer == "alice" else "DE",
        )

    written = [
        entry("w1", "alice", 1.0, 10),
        entry("w2", "alice", 2.0, 5),
        entry("w3", "bob", 3.0, 7),
    ]
    with db.transaction():
        db.append_credit(written)
    with pytest.raises(RuntimeError), db.transaction():
        db.append_credit([entry("w3", "bob", 4.0, 100)])
        raise RuntimeError("rolled back")
    with db.transaction():
        stored = db.credit_entries()
        assert [e.entry_id for e in stored] == [1, 2, 3]
        assert [(e.worker_id, e.credit) for e in stored] == [("w1", 10), ("w2", 5), ("w3", 7)]
        assert [e.worker_id for e in db.credit_entries(since=2.0, until=3.0)] == ["w2"]
        by_volunteer = db.credit_totals(Grouping.VOLUNTEER)
        assert [(t.key, t.chunks, t.credit, t.energy_j) for t in by_volunteer] == [
            ("alice", 2, 15, 30),
            ("bob", 1, 7, 14),
        ]
        assert [(t.gco2, t.gco2_blind) for t in by_volunteer] == [
            pytest.approx((1.5, 3.0)),
            pytest.approx((0.7, 1.4)),
        ]
        zones = {z.zone: z for z in db.credit_by_zone()}
        assert sorted(zones) == ["DE", "FR"]
        assert (zones["FR"].chunks, zones["FR"].energy_j, zones["FR"].energy_measured_j) == (
            2,
            30,
            20,
        )
        assert (zones["DE"].gco2, zones["DE"].gco2_blind) == pytest.approx((0.7, 1.4))
        assert db.credit_by_zone(job_id="other") == []
        assert [t.key for t in db.credit_totals(Grouping.WORKER, since=1.5)] == ["w3", "w2"]
        assert [t.credit for t in db.credit_totals(Grouping.WORKER, worker_id="w2")] == [5]
        # A volunteer's latest entries, newest first, as many as asked.
        assert [e.entry_id for e in db.recent_credit("alice", 10)] == [2, 1]
        assert [e.worker_id for e in db.recent_credit("alice", 1)] == ["w2"]
        assert db.recent_credit("nobody", 10) == []
        db.append_credit([entry("w4", "carol", 5.0, 1)])
        # Numbered after every entry (a shared database's sequence may skip the number a
        # rolled-back entry took).
        assert db.credit_entries(worker_id="w4")[0].entry_id >= 4


def test_the_ledger_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = open_store("sqlite", path)
    a, b = Volunteer(enrol(store, "a")), Volunteer(enrol(store, "b"))
    job = store.submit_job("psum", {"n": N}, now=0.5, replication=2)
    run(store, [a, b], job.job_id)
    before = store.credit_entries()
    store.close()
    store = open_store("sqlite", path)
    assert store.credit_entries() == before and before
    store.close()


def test_a_workers_own_power_sets_its_energy_up_to_the_pools_bound(
    backend_kind: str, tmp_path: Path
) -> None:
    policy = CreditPolicy(watts_per_core=WATTS, max_watts_per_core=30.0)
    store = Store(
        backend_for(backend_kind, tmp_path / "s.db"),
        verification_registry(),
        CONFIG,
        credit=policy,
    )
    owns = {"frugal": 4.0, "inflated": 400.0, "plain": None}
    ids = {}
    for name, watts in owns.items():
        _, token = store.credentials.issue(CredentialKind.JOIN_TOKEN, name, 0.0)
        worker, _ = store.enrol_worker(name, 1, ["psum"], 0.0, token, watts_per_core=watts)
        ids[name] = worker.worker_id
    # Each computes chunks of its own job, reporting 1.5 s of compute for every one.
    for worker_id in ids.values():
        job = store.submit_job("psum", {"n": 50}, now=0.5)
        now = 1.0
        outcome = store.exchange(worker_id, [], [], 1, now)
        while outcome.leases:
            reports = [
                ResultReport(g.lease_id, {"total": sum(range(g.start, g.stop))}, compute_s=1.5)
                for g in outcome.leases
            ]
            now += 2.0  # the lease's age (2 s) does not cap the 1.5 s reported
            outcome = store.exchange(worker_id, reports, [], 1, now)
        assert store.get_job(job.job_id).state is JobState.DONE
    # Its own figure when it gave one, at most the pool's bound (30 W); else the pool's.
    expected = {"frugal": 4.0, "inflated": 30.0, "plain": WATTS}
    for name, worker_id in ids.items():
        entries = store.credit_entries(worker_id=worker_id)
        assert entries and all(e.energy_j == 1.5 * expected[name] for e in entries), name
    # A rejoin changes the figure (or drops it: the pool's again); it survives a restart.
    store.update_worker_profile(ids["plain"], 1, ["psum"], 9.0, watts_per_core=7.5)
    store.update_worker_profile(ids["frugal"], 1, ["psum"], 9.0)
    store.close()
    again = Store(backend_for(backend_kind, tmp_path / "s.db"), verification_registry(), CONFIG)
    if backend_kind == "sqlite":
        figures = {w.name: w.watts_per_core for w in again.list_workers()}
        assert figures == {"frugal": None, "inflated": 400.0, "plain": 7.5}
    again.close()


@pytest.mark.parametrize("watts", [0.0, 0.05, 500.5, float("nan"), float("inf"), True])
def test_an_implausible_power_figure_is_refused_and_changes_nothing(
    store: Store, watts: float
) -> None:
    _, token = store.credentials.issue(CredentialKind.JOIN_TOKEN, "t", 0.0)
    with pytest.raises(InvalidRequest) as refused:
        store.enrol_worker("w", 1, ["psum"], 0.0, token, watts_per_core=watts)
    assert "watts_per_core" in refused.value.extra["errors"]
    assert store.list_workers() == []
    worker, _ = store.enrol_worker("w", 1, ["psum"], 0.0, token, watts_per_core=12.0)
    with pytest.raises(InvalidRequest):
        store.update_worker_profile(worker.worker_id, 1, ["psum"], 1.0, watts_per_core=watts)
    assert store.list_workers()[0].watts_per_core == 12.0


def test_the_pools_bound_on_a_workers_own_power() -> None:
    policy = CreditPolicy(watts_per_core=10.0, max_watts_per_core=25.0)
    assert policy.watts(None) == 10.0
    assert policy.watts(3.0) == 3.0 and policy.watts(99.0) == 25.0
    assert policy.energy_j(2.0, 99.0) == 50.0 and policy.energy_j(-1.0, 3.0) == 0.0
    with pytest.raises(ValueError):
        CreditPolicy(max_watts_per_core=1001)
