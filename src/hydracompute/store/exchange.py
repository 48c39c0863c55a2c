"""The exchange: results in, renewals, new leases out — the rules every backend shares.

These functions run inside one backend transaction opened by :class:`~hydracompute.store.
pool.Store`; if any raises, nothing they wrote is kept. A result is checked by its kind and
handed to :mod:`hydracompute.core.lifecycle`; the decisions that come back are carried out
by :class:`~hydracompute.store.verdicts.Verdicts`.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import random
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from hydracompute import jsonvalues
from hydracompute.core import credit, lifecycle, placement
from hydracompute.core.config import SchedulerConfig
from hydracompute.core.fairshare import FairSharePolicy, Usage, grant_cost_s
from hydracompute.core.inflight import InFlight
from hydracompute.core.leases import (
    MAX_EXPECTED_TARGETS,
    SILENT_HEARTBEATS,
    expected_duration_s,
    expected_end_s,
    stalled,
    wants_backup,
)
from hydracompute.core.models import (
    JSON,
    Chunk,
    ChunkState,
    Job,
    JobState,
    Lease,
    LeaseState,
    Worker,
)
from hydracompute.core.sizing import (
    chunk_units,
    load_controlled_floor_s,
    load_controlled_target_s,
    split_units,
    updated_speed,
)
from hydracompute.core.verification import VerificationPolicy
from hydracompute.errors import Conflict, Forbidden, InvalidResult, NotFound
from hydracompute.kinds import JobKind, KindRegistry
from hydracompute.kinds.costs import UnitCosts
from hydracompute.store.backend import Backend
from hydracompute.store.grid import GridDispatch
from hydracompute.store.records import (
    ExchangeOutcome,
    LeaseGrant,
    ResultReport,
)
from hydracompute.store.verdicts import Verdicts

log = logging.getLogger("hydracompute.store")


@dataclass
class BatchJobs:
    """The jobs a batch of exchanges read and changed, each written once at the batch's end
    (:meth:`Store.exchange_many`) rather than once per exchange: every exchange of a busy
    pool changes the same few job rows.

    Holds the jobs as the batch's recorded exchanges left them; an exchange works on copies
    and hands them back only once it is recorded (see :meth:`Exchange.hand_back`), so a
    refused one changes nothing here either.
    """

    jobs: dict[str, Job] = field(default_factory=dict)
    changed: set[str] = field(default_factory=set)
    #: Owners' usage as the batch's recorded exchanges charged it (written once too).
    usage: dict[str, Usage] = field(default_factory=dict)

    def write(self, db: Backend) -> None:
        for job_id in sorted(self.changed):
            db.put_job(self.jobs[job_id])
        self.changed.clear()
        if self.usage:
            db.put_owner_usage(self.usage)
            self.usage = {}


#: States of a lease whose holder has reported on it: a second report must be the same.
REPORTED_STATES = frozenset(
    {
        LeaseState.REPORTED,
        LeaseState.DONE,
        LeaseState.FAILED,
        LeaseState.SUPERSEDED,
        LeaseState.INVALID,
    }
)
DEFAULT_VERIFICATION = VerificationPolicy()
DEFAULT_CREDIT = credit.CreditPolicy()
DEFAULT_FAIR_SHARE = FairSharePolicy()
#: A copy to verify is drawn from this many times as many pending chunks as are asked for.
VERIFY_CHOICE = 8
#: Leased chunks looked at for a backup copy or a take-back per exchange, per order they
#: are read in (see :meth:`~hydracompute.store.backend.Backend.tail_chunks`: paused
#: holders, silent ones, late ones, those expected to end last), at least this many, and
#: four times as many as the worker asks for. Reading every chunk in play instead cost an
#: exchange at a job's tail 300,000 chunks for a pool of 100,000 workers; the 16 of lowest
#: index only broke a replicated job's recovery after a coordinator was killed (a chunk
#: needing a copy beyond the first 16 never got one in time).
BACKUP_CANDIDATES = 16


def new_lease_id(now: float, bits: Callable[[int], int] = secrets.randbits) -> str:
    """A lease id: 32 hexadecimal characters, the issue time in microseconds then 76 random
    bits.

    Ids issued later sort later, so the leases table and its key index grow at their ends,
    and the leases still in play sit together in a few pages. With random ids every new
    lease went to a page of its own: inserting, reading back and updating a lease among
    300,000, 64 per commit, took 83 µs against 51 µs in issue order.
    """
    micros = min(max(int(now * 1e6), 0), 16**13 - 1)
    return f"{micros:013x}{bits(76):019x}"


def _copied(job: Job) -> Job:
    """A shallow copy of ``job``: what :func:`copy.copy` makes of a dataclass, without its
    generic path (a reduction and a reconstruction, for every exchange of a batch)."""
    fresh: Job = object.__new__(Job)
    fresh.__dict__.update(job.__dict__)
    return fresh


def output_digest(output: JSON) -> str:
    return hashlib.sha256(jsonvalues.canonical(output).encode()).hexdigest()


class Exchange(Verdicts):
    """One worker's exchange against a backend, inside the caller's transaction."""

    def __init__(
        self,
        backend: Backend,
        kinds: KindRegistry,
        config: SchedulerConfig,
        worker: Worker,
        now: float,
        pool_speed: Callable[[str], float],
        in_flight: InFlight,
        batch: BatchJobs | None = None,
        verification: VerificationPolicy = DEFAULT_VERIFICATION,
        draw: Callable[[], float] = random.random,
        pool_tokens: Callable[[], int] = lambda: 1,
        credit_policy: credit.CreditPolicy = DEFAULT_CREDIT,
        fair_share: FairSharePolicy = DEFAULT_FAIR_SHARE,
        owner_weights: Callable[[], dict[str, float]] = dict,
        cores_online: Callable[[], int] = lambda: 0,
        id_bits: Callable[[int], int] = secrets.randbits,
        grid: GridDispatch | None = None,
    ) -> None:
        #: Units per second of every online core on a kind (cached by the caller).
        self.pool_speed = pool_speed
        #: Work of the granted leases still to do, per job (kept by the caller).
        self.in_flight = in_flight
        #: Where changed jobs go (see :class:`BatchJobs`); ``None``: written by :meth:`flush`.
        self.batch = batch
        self.db, self.kinds, self.config, self.worker, self.now = (
            backend,
            kinds,
            config,
            worker,
            now,
        )
        self.outcome = ExchangeOutcome()
        self._jobs: dict[str, Job] = {}
        #: Leases this exchange has in hand (changed, not yet written).
        self._leases: dict[str, Lease] = {}
        self.verification = verification
        #: Uniform numbers in [0, 1) for adaptive acceptance and spot checks.
        self.draw = draw
        #: How many volunteers (join tokens) are online (cached by the caller).
        self.pool_tokens = pool_tokens
        self.credit_policy = credit_policy
        self.fair_share = fair_share
        #: Weights of the API keys whose weight is not 1 (cached by the caller).
        self.owner_weights = owner_weights
        #: Owners' usage as the store, the batch and this exchange left it (read when
        #: first needed), and the owners this exchange charged.
        self._usage: dict[str, Usage] | None = None
        self._charged: set[str] = set()
        #: Cores of the workers online (cached by the caller), for load control.
        self.cores_online = cores_online
        self._targets: dict[float, float] = {}
        #: The cores online, read once per exchange (``None``: not yet).
        self._cores: int | None = None
        #: Each job's kind and unit costs, looked up once per exchange: a job's kind and
        #: parameters never change, and the costs are a pure function of them.
        self._job_kinds: dict[str, tuple[JobKind, UnitCosts | None]] = {}
        #: Random bits for lease ids (seeded for a replayable simulation).
        self.id_bits = id_bits
        #: Grid-aware dispatch (``None``: carbon-blind, no CO2 counted).
        self.grid = grid

    def job(self, job_id: str) -> Job:
        if job_id not in self._jobs:
            known = self.batch.jobs.get(job_id) if self.batch is not None else None
            # A copy: a kind's fold_live returns a new summary rather than change its
            # argument, so no field of the batch's job is changed in place.
            job = _copied(known) if known is not None else self.db.get_job(job_id)
            if job is None:
                raise NotFound(f"no job {job_id!r}")
            self._jobs[job_id] = job
        return self._jobs[job_id]

    def save_job(self, job: Job) -> None:
        """Mark ``job`` changed; it is written once, by :meth:`flush` or by the batch."""
        self._jobs[job.job_id] = job
        self.outcome.changed_jobs.add(job.job_id)

    def flush(self) -> None:
        """Write the jobs this exchange changed (once each, however often they changed),
        unless a batch writes them."""
        for job_id in sorted(self.outcome.changed_jobs):
            job = self._jobs[job_id]
            if self.batch is None:
                self.db.put_job(job)
            if job.state.finished:
                self.outcome.ended_jobs.add(job_id)
        if self._charged and self.batch is None:
            self.db.put_owner_usage(self._charged_usage())

    def hand_back(self) -> None:
        """Give the batch the jobs and usage as this exchange left them (once it is
        recorded)."""
        if self.batch is not None:
            self.batch.jobs.update(self._jobs)
            self.batch.changed |= self.outcome.changed_jobs
            self.batch.usage.update(self._charged_usage())

    # usage (the fair share between submitters)

    def usage(self) -> dict[str, Usage]:
        """Every owner's usage as the store, the batch's recorded exchanges and this one
        left it."""
        if self._usage is None:
            self._usage = self.db.owner_usage()
            if self.batch is not None:
                self._usage.update(self.batch.usage)
        return self._usage

    def _charge(self, job: Job, chunk: Chunk) -> None:
        """Charge the job's owner the compute time of a copy of ``chunk`` granted to this
        worker (see :mod:`hydracompute.core.fairshare`)."""
        cost_s = grant_cost_s(chunk.units, self.worker.speeds.get(job.kind), job.target_chunk_s)
        usage = self.usage()
        usage[job.owner] = self.fair_share.charged(usage.get(job.owner), cost_s, self.now)
        self._charged.add(job.owner)

    def _charged_usage(self) -> dict[str, Usage]:
        usage = self.usage() if self._charged else {}
        return {owner: usage[owner] for owner in self._charged}

    # results

    def report(self, report: ResultReport) -> None:
        """Record one result; raise if it is not this worker's to give or cannot be right."""
        lease = self.db.get_lease(report.lease_id)
        if lease is None:
            raise NotFound(f"no lease {report.lease_id!r}", lease_id=report.lease_id)
        if lease.worker_id != self.worker.worker_id:
            raise Forbidden(
                f"lease {report.lease_id!r} is held by another worker", lease_id=lease.lease_id
            )
        self.outcome.accepted.append(lease.lease_id)
        if lease.state in REPORTED_STATES:
            self._check_resend(lease, report)
            return
        was_active = lease.state is LeaseState.ACTIVE
        self.in_flight.returned(lease.job_id, lease.lease_id)
        job = self.job(lease.job_id)
        chunk = self.db.get_chunk(lease.job_id, lease.chunk_index)
        assert chunk is not None, "a lease always names a stored chunk"
        if report.error is not None:
            self._fail(lease, chunk, job, report.error)
            return
        assert report.output is not None
        kind, costs = self._kind(job)
        try:
            kind.check(job.params, chunk.start, chunk.stop, report.output)
        except InvalidResult as exc:
            raise InvalidResult(
                f"lease {lease.lease_id!r}: {exc.detail}", lease_id=lease.lease_id
            ) from exc
        lease.output_digest = output_digest(report.output)
        # A volunteer reports its own compute time: never believe more than the lease's age,
        # or one claim of a week would make the scheduler wait a week before a backup.
        compute_s = min(report.compute_s, max(self.now - lease.issued_s, 1e-6))
        lease.compute_s = compute_s
        copy = lifecycle.Copy(lease.lease_id, self.worker.worker_id, report.output)
        same = functools.partial(kind.same_output, job.params)
        if self.worker.barred or job.state is not JobState.RUNNING:
            lease.state = LeaseState.SUPERSEDED
            self.db.put_lease(lease)
            return
        cost = float(chunk.units) if costs is None else costs.cost(chunk.start, chunk.stop)
        self._learn_speed(job.kind, chunk.units, cost, compute_s)
        if chunk.state is ChunkState.DONE:
            # A spot check, or a copy later than the ones that were accepted: if those were
            # verified, this output is checked against them.
            decisions = []
            if chunk.verified or lease.spot_check:
                known = self.db.get_output(job.job_id, chunk.index)
                if known is not None:
                    decisions = lifecycle.checked_against_known(known.output, copy, same, chunk)
            wrong = any(isinstance(d, lifecycle.Bar) for d in decisions)
            lease.state = LeaseState.INVALID if wrong else LeaseState.SUPERSEDED
            self.db.put_lease(lease)
            self._apply(job, chunk, decisions)
            return
        held = self.db.candidates(job.job_id, chunk.index) if chunk.reported else []
        untracked = not lifecycle.tracked(chunk)
        # The copies' volunteers, for credit (an accepted chunk forgets its holders).
        volunteers = dict(chunk.holders)
        decisions = lifecycle.reported(
            chunk,
            held,
            copy,
            lifecycle.Terms(job.replication, job.quorum, job.adaptive),
            self.verification,
            self.worker.trust.get(job.kind, 0),
            self.draw() if job.adaptive else 0.0,
            same,
            self.worker.token_id,
        )
        accepted = any(isinstance(d, lifecycle.Accept) for d in decisions)  # saves the job
        if was_active and accepted and lease.speed_known and lease.expected_end_s is not None:
            job.expected_compute_s += lease.expected_end_s - lease.issued_s
            job.reported_compute_s += compute_s
        if untracked and lifecycle.tracked(chunk):
            # The chunk now keeps its holders (it waits for a copy to verify this output):
            # any other copy still computing (a backup) is one of them.
            self._track_active_holders(chunk)
        self._leases[lease.lease_id] = lease
        lease.state = LeaseState.REPORTED
        self._apply(job, chunk, decisions, was_active, volunteers)
        self.db.put_chunk(chunk)
        self.db.put_lease(lease)

    def _check_resend(self, lease: Lease, report: ResultReport) -> None:
        """A report for a lease already reported: harmless if identical, else a conflict."""
        same = (
            report.output is not None and lease.output_digest == output_digest(report.output)
        ) or (report.error is not None and lease.state is LeaseState.FAILED)
        if not same:
            raise Conflict(
                f"lease {lease.lease_id!r} already has a different result",
                lease_id=lease.lease_id,
            )

    def _fail(self, lease: Lease, chunk: Chunk, job: Job, error: str) -> None:
        lease.state = LeaseState.FAILED
        self.db.put_lease(lease)
        if lease.spot_check or chunk.state is ChunkState.DONE or job.state.finished:
            return
        decisions = lifecycle.errored(
            chunk,
            self.worker.worker_id,
            error,
            self.now,
            self.config.max_failures,
            self._active_copies(chunk),
        )
        self._apply(job, chunk, decisions)
        self.db.put_chunk(chunk)

    def _learn_speed(self, kind: str, units: int, cost: float, compute_s: float) -> None:
        """Speeds are learnt in cost (typical units) per second: for a kind whose units
        differ, ``cost`` is not ``units`` (see :mod:`hydracompute.kinds.costs`)."""
        worker = self.worker
        worker.speeds[kind], worker.speed_evidence_s[kind] = updated_speed(
            worker.speeds.get(kind),
            worker.speed_evidence_s.get(kind, 0.0),
            cost,
            compute_s,
            self.config.speed_alpha,
        )
        worker.chunks_done += 1
        worker.units_done[kind] = worker.units_done.get(kind, 0) + units

    # renewals

    def renew(self, lease_ids: list[str]) -> None:
        """Extend the leases the worker is still computing; tell it to drop the others."""
        for lease_id in lease_ids:
            lease = self.db.get_lease(lease_id)
            if lease is None or lease.worker_id != self.worker.worker_id:
                self.outcome.abandon.append(lease_id)
                continue
            if lease.state is LeaseState.ACTIVE and self.job(lease.job_id).state.finished:
                lease.state = LeaseState.ABANDONED
            if lease.state is not LeaseState.ACTIVE:
                self.outcome.abandon.append(lease_id)
            else:
                lease.deadline_s = self.now + self.config.lease_ttl_s
            self.db.put_lease(lease)

    # new leases

    def lease(self, want: int) -> None:
        """Grant up to ``want`` chunks: re-issued ones first, then new ones, then backups."""
        if want <= 0 or self.worker.barred:
            return
        shares: dict[str, float] = {}
        worker_id = self.worker.worker_id
        for job_id in self._candidates():
            job = self.job(job_id)
            if job.state is not JobState.RUNNING:  # finished by a result of this exchange
                continue
            if job.deadline_s is not None and not self._may_take(job):
                continue  # cleaner capacity is expected before its deadline
            verified = job.replication > 1 or job.adaptive
            if job.adaptive and self._wants_spot_check(job):
                self._spot_check(job)
            # A worker of unknown speed is not given a chunk sized for another worker's
            # speed (one given back, say) while a probe can still be carved for it.
            room = want - len(self.outcome.leases)
            if verified:
                # Copies to verify are taken at random among the first few, not in index
                # order: workers that exchange one after the other (one owner's machines,
                # say) would otherwise be given each other's chunks to verify.
                pending = self.db.pending_chunks(job.job_id, VERIFY_CHOICE * room, worker_id)
                pending.sort(key=lambda _: self.draw())
                pending = pending[:room]
            else:
                pending = self.db.pending_chunks(job.job_id, room)
            # (A chunk that can be split is: the worker gets a probe's worth of it.)
            if job.kind not in self.worker.speeds and job.next_unit < job.total_units:
                probe_units = self._kind(job)[0].probe_units
                pending = [c for c in pending if c.units <= probe_units or lifecycle.splittable(c)]
            for chunk in pending:
                # A worker that just failed a chunk waits before retrying it, so that a
                # healthy worker gets it first; alone in the pool, it retries after a while.
                failed_s = chunk.failed_by.get(worker_id)
                if failed_s is not None and self.now - failed_s < self.config.lease_ttl_s:
                    continue
                if self._may_hold(job, chunk):
                    if lifecycle.splittable(chunk):
                        if job.kind not in shares:
                            shares[job.kind] = self._share(job.kind)
                        chunk = self._fitted(job, chunk, shares[job.kind])
                    self._grant(job, chunk)
            if job.next_unit < job.total_units and len(self.outcome.leases) < want:
                if job.kind not in shares:
                    shares[job.kind] = self._share(job.kind)
                self._carve(job, want, shares[job.kind])
            elif job.next_unit == job.total_units and len(self.outcome.leases) < want:
                # A job at its tail gets copies of its stragglers' chunks (paused or late
                # holders) before the next job's new work: they would end it last.
                self._backups(job, want, race=False)
            if len(self.outcome.leases) >= want:
                return
        for job_id in self._candidates():
            job = self.job(job_id)
            if (
                job.state is JobState.RUNNING
                and job.next_unit == job.total_units
                and (job.deadline_s is None or self._may_take(job))
            ):
                self._backups(job, want)
            if len(self.outcome.leases) >= want:
                return

    def _may_take(self, job: Job) -> bool:
        """Whether this worker's grid lets it take the deadline job's work now."""
        return self.grid is None or self.grid.may_take(self.db, job, self.worker, self.now)

    def _may_hold(self, job: Job, chunk: Chunk) -> bool:
        # Volunteers online are counted only for a chunk that keeps its holders.
        distinct = lifecycle.tracked(chunk) and self.pool_tokens() > 1
        confirmed = self.worker.trust.get(job.kind, 0) > 0
        return lifecycle.may_hold_copy(
            chunk, self.worker.worker_id, self.worker.token_id, distinct, confirmed
        )

    def _wants_spot_check(self, job: Job) -> bool:
        trust = self.worker.trust.get(job.kind, 0)
        if self.verification.is_trusted(trust):
            return False
        return self.draw() < self.verification.spot_check_rate

    def _spot_check(self, job: Job) -> None:
        """Lease a copy of a chunk whose verified output is known, of a size this worker
        would be given: it cannot tell it from ordinary work."""
        kind, costs = self._kind(job)
        speed = self.worker.speeds.get(job.kind)
        per_unit = 1.0 if costs is None else costs.total() / job.total_units
        max_units = max(kind.probe_units, int((speed or 0.0) * self.target_s(job) / per_unit))
        chunk = self.db.verified_chunk(job.job_id, max_units)
        if chunk is not None:
            self._grant(job, chunk, spot_check=True)

    def _candidates(self) -> Iterator[str]:
        """The running jobs this worker can compute, in the order of the fair share
        between their owners (see :mod:`hydracompute.core.fairshare`); whether the worker
        carries the labels a job requires is checked as they are needed (usually the first
        one fills the request, however many are running)."""
        # The worker's kinds that this coordinator has installed, found once, not per job.
        kinds = {kind for kind in self.worker.kinds if kind in self.kinds}
        jobs = [j for j in self.db.running_jobs() if j.kind in kinds]
        if len(jobs) > 1:
            jobs = self.fair_share.job_order(jobs, self.usage(), self.owner_weights(), self.now)
        return (job.job_id for job in jobs if self._may_place(job.job_id))

    def _may_place(self, job_id: str) -> bool:
        job = self.job(job_id)
        required = job.required_labels
        if required and not placement.may_place(required, self.worker.labels):
            return False
        minimum = self.kinds.get(job.kind).min_worker_version(job.params)
        return placement.may_run(minimum, self.worker.version)

    def _carve(self, job: Job, want: int, share: float) -> None:
        # A probe is sized in cost too: 16 of a dear view's tiles took a slow worker as
        # long as the whole job (the estimate, tens of milliseconds once per job and
        # coordinator, is needed by the first result's acceptance anyway).
        kind, costs = self._kind(job)
        target_s = self.target_s(job)
        floor_s = load_controlled_floor_s(self._cores_online(), self.config.capacity_results_per_s)
        while job.next_unit < job.total_units and len(self.outcome.leases) < want:
            units = chunk_units(
                speed=self.worker.speeds.get(job.kind),
                target_s=target_s,
                probe_units=kind.probe_units,
                max_units=kind.max_units(job.params),
                remaining=job.total_units - job.next_unit,
                share=share,
                in_flight=self.in_flight.units(job.job_id, self.now),
                costs=costs,
                start=job.next_unit,
                min_s=floor_s,
                evidence_s=self.worker.speed_evidence_s.get(job.kind),
            )
            chunk = Chunk(
                job.job_id,
                job.chunks_carved,
                job.next_unit,
                job.next_unit + units,
                quorum=job.quorum,
                wanted=job.replication,
            )
            job.next_unit += units
            job.chunks_carved += 1
            self._grant(job, chunk)
        self.save_job(job)

    def _fitted(self, job: Job, chunk: Chunk, share: float) -> Chunk:
        """The part of a re-issued chunk this worker should compute: the chunk itself, or
        the first part of it cut to the size this worker would be given a new chunk now
        (see :func:`~hydracompute.core.sizing.split_units`); the rest stays pending."""
        speed = self.worker.speeds.get(job.kind)
        kind, costs = self._kind(job)
        if speed is None:
            costs = None
        uncarved = job.total_units - job.next_unit
        if costs is not None and not costs.uniform and uncarved:
            also_left = costs.cost(job.next_unit, job.total_units)
        else:
            also_left = float(uncarved)
        fit = chunk_units(
            speed=speed,
            target_s=self.target_s(job),
            probe_units=kind.probe_units,
            max_units=kind.max_units(job.params),
            remaining=chunk.units,
            share=share,
            in_flight=self.in_flight.units(job.job_id, self.now),
            costs=costs,
            start=chunk.start,
            min_s=load_controlled_floor_s(self._cores_online(), self.config.capacity_results_per_s),
            also_left=also_left,
            evidence_s=self.worker.speed_evidence_s.get(job.kind),
        )
        units = split_units(chunk.units, fit)
        if units >= chunk.units:
            return chunk
        first, rest = lifecycle.split(chunk, chunk.start + units, job.chunks_carved)
        job.chunks_carved += 2
        self.save_job(job)
        self.db.put_chunk(chunk)
        self.db.put_chunk(rest)
        self.outcome.released_work = True
        return first

    def target_s(self, job: Job) -> float:
        """How long the job's chunks should take now (its own target, or longer under load
        control)."""
        target = self._targets.get(job.target_chunk_s)
        if target is None:
            config = self.config
            target = self._targets[job.target_chunk_s] = load_controlled_target_s(
                job.target_chunk_s,
                self._cores_online(),
                config.capacity_results_per_s,
                config.load_share,
            )
        return target

    def _share(self, kind: str) -> float:
        """This worker's per-core fraction of the speed of every live core on ``kind``."""
        mine = self.worker.speeds.get(kind)
        if not mine:
            return 1.0
        return mine / max(self.pool_speed(kind), mine * self.worker.cores)

    def _backups(self, job: Job, want: int, race: bool = True) -> None:
        """Copies for this worker of the chunks that would end the job last (see
        :func:`~hydracompute.core.leases.wants_backup`); without ``race``, of straggling
        holders' chunks only.

        A chunk of one copy whose every holder is stalled (paused by its owner, or silent:
        see :func:`~hydracompute.core.leases.stalled`) is taken back rather than copied:
        its holders are told to drop it, and it is cut to fit this worker like any chunk
        given back (:meth:`_fitted`). A stalled holder computes nothing, and its chunk,
        sized for it, would take a slower worker longer than any other chunk of the tail.
        """
        taker_speed = self.worker.speeds.get(job.kind)
        target_s, factor = self.target_s(job), self.config.backup_factor
        ttl_s, heartbeat_s = self.config.lease_ttl_s, self.config.heartbeat_s
        found: list[tuple[float, int, Chunk, list[Lease]]] = []
        room = max(want - len(self.outcome.leases), 0)
        limit = max(BACKUP_CANDIDATES, 4 * room)
        silent_deadline_s = self.now + ttl_s - SILENT_HEARTBEATS * heartbeat_s
        # First the checks that need nothing more read: chunks this worker holds or may
        # not hold, and a chunk of several copies unless it may be taken back.
        looked: list[tuple[Chunk, list[Lease]]] = []
        for chunk in self.db.tail_chunks(job.job_id, self.now, silent_deadline_s, limit, race):
            active = self.db.active_leases_of_chunk(job.job_id, chunk.index)
            if not active or any(a.worker_id == self.worker.worker_id for a in active):
                continue
            if len(active) != 1 and lifecycle.tracked(chunk):
                continue
            if self._may_hold(job, chunk):
                looked.append((chunk, active))
        # Whose holders are paused: one read for them all, not one record per holder.
        holders = {a.worker_id for _, active in looked for a in active}
        paused_ids = self.db.paused_workers(holders) if holders else set()
        for chunk, active in looked:
            paused = [a.worker_id in paused_ids for a in active]
            if not lifecycle.tracked(chunk) and all(
                stalled(a, self.now, heartbeat_s, ttl_s, p)
                for a, p in zip(active, paused, strict=True)
            ):
                found.append((-math.inf, chunk.index, chunk, active))
                continue
            if len(active) != 1:
                continue
            lease = active[0]
            cost = self._cost(job, chunk)
            if not paused[0] and not self._may_copy(lease, cost, taker_speed, target_s, race):
                continue
            holder = self.db.get_worker(lease.worker_id)
            speed = holder.speeds.get(job.kind) if holder is not None else None
            if wants_backup(
                lease, cost, speed, target_s, factor, self.now, taker_speed, paused[0], race
            ):
                end_s = expected_end_s(lease, cost, speed, target_s, factor, self.now, paused[0])
                found.append((-end_s, chunk.index, chunk, []))
        found.sort(key=lambda f: f[:2])
        share = None
        for _, _, chunk, taken in found[:room]:
            if not taken:
                self._grant(job, chunk, backup=True)
                continue
            for lease in taken:
                lease.state = LeaseState.ABANDONED
                self.db.put_lease(lease)
                self.in_flight.returned(job.job_id, lease.lease_id)
            lifecycle.lapsed(chunk, taken[-1].worker_id)
            if share is None:
                share = self._share(job.kind)
            fitted = self._fitted(job, chunk, share) if lifecycle.splittable(chunk) else chunk
            self._grant(job, fitted)

    def _may_copy(
        self, lease: Lease, cost: float, taker_speed: float | None, target_s: float, race: bool
    ) -> bool:
        """Whether this worker might be given a copy of a running holder's chunk of
        ``cost``, whatever the holder's speed (see :func:`~hydracompute.core.leases.
        wants_backup`): ``False`` rules it out before the holder's record is read. It
        could copy a straggler's chunk only if it computes it in ``factor`` targets, and
        race the holder only if it would finish ``factor`` times sooner than the holder's
        longest expected time (:data:`~hydracompute.core.leases.MAX_EXPECTED_TARGETS`)."""
        factor = self.config.backup_factor
        taker_s = expected_duration_s(cost, taker_speed, target_s)
        if taker_s <= factor * target_s:
            return True
        longest_left_s = lease.issued_s + MAX_EXPECTED_TARGETS * target_s - self.now
        return race and taker_speed is not None and longest_left_s > factor * taker_s

    def _cost(self, job: Job, chunk: Chunk) -> float:
        """The chunk's estimated cost, in its kind's typical units: what speeds count."""
        costs = self._kind(job)[1]
        return float(chunk.units) if costs is None else costs.cost(chunk.start, chunk.stop)

    def _kind(self, job: Job) -> tuple[JobKind, UnitCosts | None]:
        """The job's kind and unit costs (see :meth:`JobKind.unit_costs`), looked up once
        per exchange."""
        found = self._job_kinds.get(job.job_id)
        if found is None:
            kind = self.kinds.get(job.kind)
            found = self._job_kinds[job.job_id] = (kind, kind.unit_costs(job.params))
        return found

    def _cores_online(self) -> int:
        """The pool's cores online (for load control), read once per exchange."""
        if self._cores is None:
            self._cores = self.cores_online()
        return self._cores

    def _grant(
        self, job: Job, chunk: Chunk, backup: bool = False, spot_check: bool = False
    ) -> None:
        # When the lease should end, and when its holder will be late (see
        # core/leases.py's wants_backup): a job's tail reads its leases in these orders.
        speed = self.worker.speeds.get(job.kind)
        cost = self._cost(job, chunk) if speed else 0.0
        expected_s = expected_duration_s(cost, speed, self.target_s(job))
        lease = Lease(
            lease_id=new_lease_id(self.now, self.id_bits),
            job_id=job.job_id,
            chunk_index=chunk.index,
            worker_id=self.worker.worker_id,
            issued_s=self.now,
            deadline_s=self.now + self.config.lease_ttl_s,
            backup=backup,
            spot_check=spot_check,
            expected_end_s=self.now + expected_s,
            late_s=self.now + self.config.backup_factor * expected_s,
            speed_known=bool(speed),
        )
        self.db.put_lease(lease)
        if not spot_check:  # the chunk is done: its record does not change
            lifecycle.granted(chunk, self.worker.worker_id, self.worker.token_id)
            self.db.put_chunk(chunk)
            self._charge(job, chunk)
        self.outcome.leases.append(
            LeaseGrant(
                lease.lease_id,
                job.job_id,
                job.kind,
                job.params,
                chunk.index,
                chunk.start,
                chunk.stop,
                lease.deadline_s,
            )
        )
        # A backup's work is counted in the lease it doubles; a spot check's is no job's.
        if speed and not backup and not spot_check:
            self.in_flight.granted(
                job.job_id, lease.lease_id, self.worker.worker_id, speed, expected_s, self.now
            )


def release_chunk(db: Backend, lease: Lease) -> bool:
    """A lease ended unfinished: its chunk wants another copy if no other is in play.
    Returns whether work became available."""
    if lease.spot_check:
        return False
    chunk = db.get_chunk(lease.job_id, lease.chunk_index)
    if chunk is None or chunk.state is ChunkState.DONE:
        return False
    active = (
        0 if lifecycle.tracked(chunk) else len(db.active_leases_of_chunk(chunk.job_id, chunk.index))
    )
    released = bool(lifecycle.lapsed(chunk, lease.worker_id, active))
    db.put_chunk(chunk)
    return released
