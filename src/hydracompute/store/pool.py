"""The state of record of one pool: jobs, workers and leases, over any backend.

:class:`Store` is the one interface the coordinator uses. Each public method is one
transaction: when it returns, what it did is durable; when it raises, nothing changed.
Times are passed in (``now``), never read here.
"""

from __future__ import annotations

import logging
import random
import secrets
from collections.abc import Callable, Collection, Sequence
from typing import BinaryIO

from hydracompute.core import carbon, placement
from hydracompute.core.carbon import CarbonMode, IntensityView
from hydracompute.core.config import SchedulerConfig
from hydracompute.core.credit import (
    CreditEntry,
    CreditPolicy,
    CreditTotal,
    Grouping,
    ZoneTotal,
)
from hydracompute.core.fairshare import (
    MAX_PRIORITY,
    MIN_PRIORITY,
    FairSharePolicy,
    OwnerShare,
)
from hydracompute.core.inflight import InFlight
from hydracompute.core.leases import LEASES_PER_CORE
from hydracompute.core.models import (
    JSON,
    Job,
    JobState,
    Lease,
    LeaseState,
)
from hydracompute.core.progress import MAX_SPANS, LeaseSpan
from hydracompute.core.sizing import load_controlled_target_s
from hydracompute.core.verification import (
    VerificationPolicy,
    default_quorum,
    replication_errors,
)
from hydracompute.errors import (
    Conflict,
    Forbidden,
    HydraError,
    InvalidParams,
    NotFound,
    StoreConflict,
    TooManyRequests,
    Unauthorized,
)
from hydracompute.kinds import ChunkOutput, KindRegistry
from hydracompute.store.backend import Backend
from hydracompute.store.blobs import BlobStore
from hydracompute.store.content import content_exists
from hydracompute.store.credentials import Credentials
from hydracompute.store.exchange import BatchJobs, Exchange, release_chunk
from hydracompute.store.grid import GridDispatch
from hydracompute.store.records import ExchangeOutcome, ExchangeRequest, ResultReport
from hydracompute.store.retry import retried_on_conflict
from hydracompute.store.shared import ChangeCollector
from hydracompute.store.sharing import PoolSharing
from hydracompute.store.verdicts import chunk_outputs
from hydracompute.store.workers import MAX_NAME_CHARS, WorkerRecords

log = logging.getLogger("hydracompute.store")
#: Overdue leases expired per call; the coordinator calls again while there are more.
EXPIRE_BATCH = 1000
#: How long the pool's speed per kind (for tail chunk sizes) is reused.
POOL_SPEED_CACHE_S = 1.0
#: A pool of more cores than this reads its figures less often than once a second, in
#: proportion (every 10 s with 200,000 cores): each read looks at every worker online, and
#: a large pool's figures change slowly.
POOL_FIGURE_CORES_PER_S = 20_000
#: Running jobs one submitter (API key) may have at once.
MAX_RUNNING_JOBS_PER_OWNER = 100


class Store(WorkerRecords):
    """Jobs, workers and leases of one pool, kept by ``backend``.

    Args:
        verification: the pool's adaptive verification tunables.
        adaptive: whether jobs that ask for no replication get adaptive verification.
        rng: the source of the scheduler's random draws (seeded for replays).
        credit: the pool's credit settings (watts per core, for energy estimates).
        fair_share: the fair share between submitters (the half-life of their usage).
        carbon: grid intensities, for grid-aware dispatch and CO2 (``None``: every job
            carbon-blind and no CO2 counted).
        ids: where the random part of job, worker and lease ids comes from (seeded for a
            replayable simulation; by default the system's secure source). Ids are not
            secrets: workers' secrets always come from the secure source.
    """

    def __init__(
        self,
        backend: Backend,
        kinds: KindRegistry,
        config: SchedulerConfig,
        verification: VerificationPolicy | None = None,
        adaptive: bool = False,
        rng: random.Random | None = None,
        credit: CreditPolicy | None = None,
        fair_share: FairSharePolicy | None = None,
        carbon: IntensityView | None = None,
        ids: random.Random | None = None,
    ) -> None:
        self.backend = backend
        self.fair_share = fair_share or FairSharePolicy()
        self._id_bits = secrets.randbits if ids is None else ids.getrandbits
        self.kinds = kinds
        self.config = config
        self.verification = verification or VerificationPolicy()
        self.adaptive = adaptive
        self.rng = rng or random.Random()
        self.credit = credit or CreditPolicy()
        self.credentials = Credentials(backend)
        self.grid = GridDispatch(
            carbon, config.lease_ttl_s, config.max_wait_s, chunk_target=self.chunk_target_s
        )
        #: The pool's figures read for every exchange (speed per kind, volunteers online),
        #: by name: (when read, value). A cache this process may lose, never the truth.
        self._figures: dict[str, tuple[float, float]] = {}
        #: The API keys' weights for the fair share (when read, weights): a cache too.
        self._weights: tuple[float, dict[str, float]] = (float("-inf"), {})
        #: Work the granted leases still have to do, for the sizing of tail chunks.
        self.in_flight = InFlight()
        #: Increases whenever chunks become available to lease (for long-polling waiters).
        self.work_version = 0
        #: The settings, coordinators, changes and counters shared with other coordinators.
        self.sharing = PoolSharing(backend)
        #: Whether transactions append what they changed to the shared change log (while
        #: other coordinators share the database), as ``origin``. Off, nothing is written:
        #: one coordinator alone learns of its changes in memory.
        self.record_changes = False
        self.origin = ""

    def close(self) -> None:
        self.backend.close()

    # jobs

    @retried_on_conflict
    def submit_job(
        self,
        kind: str,
        params: JSON,
        now: float,
        name: str = "",
        target_chunk_s: float | None = None,
        owner: str = "",
        replication: int | None = None,
        quorum: int | None = None,
        adaptive: bool | None = None,
        priority: int = 0,
        required_labels: Sequence[str] = (),
        deadline_s: float | None = None,
        carbon_mode: CarbonMode = CarbonMode.BLIND,
    ) -> Job:
        """Validate and record a new job for ``owner`` (an API key id, or "").

        Args:
            priority: among its owner's running jobs, higher runs first (-100 to 100).
            replication: copies of each chunk computed by different workers (default 1).
            quorum: copies that must agree (default: all of two, a majority of more).
            adaptive: adaptive verification (default: the pool's, unless ``replication``
                is given); it decides the copies itself, so excludes ``replication`` > 1.
            required_labels: only workers carrying all of these get its chunks.
            deadline_s: seconds from now by which it should be done (``None``: none).
            carbon_mode: ``prefer-clean`` steers it to cleaner grids and hours within its
                deadline (see :mod:`hydracompute.core.carbon`); it needs a deadline.

        Raises:
            UnknownKind: no such kind is installed on the coordinator.
            InvalidParams: the parameters, name, chunk time or labels are not acceptable,
                or a blob the job names (its module, its input) was not uploaded.
            TooManyRequests: the owner already has the most running jobs allowed.
        """
        job_kind = self.kinds.get(kind)
        canonical = job_kind.plan(job_kind.validate(params))
        labels_problem = placement.label_errors(required_labels)
        if labels_problem:
            raise InvalidParams({"required_labels": labels_problem})
        missing = {
            role: f"no blob {digest} in the pool: upload it first"
            for role, digest in job_kind.blobs(canonical).items()
            if not content_exists(self.blobs, digest)
        }
        if missing:
            raise InvalidParams(missing)
        if len(name) > MAX_NAME_CHARS:
            raise InvalidParams({"name": f"must be at most {MAX_NAME_CHARS} characters"})
        target = self.config.target_chunk_s if target_chunk_s is None else target_chunk_s
        if not 0.01 <= target <= 3600:
            raise InvalidParams({"target_chunk_s": "must be between 0.01 and 3600"})
        copies = 1 if replication is None else replication
        agree = default_quorum(copies) if quorum is None else quorum
        errors = replication_errors(copies, agree)
        if isinstance(priority, bool) or not MIN_PRIORITY <= priority <= MAX_PRIORITY:
            errors["priority"] = f"must be between {MIN_PRIORITY} and {MAX_PRIORITY}"
        if errors:
            raise InvalidParams(errors)
        errors = carbon.deadline_errors(deadline_s, carbon_mode)
        if errors:
            raise InvalidParams(errors)
        if adaptive is None:
            adaptive = self.adaptive and replication is None
        if adaptive and copies > 1:
            raise InvalidParams(
                {
                    "adaptive": "adaptive verification chooses the copies itself: "
                    "give replication or adaptive, not both"
                }
            )
        job = Job(
            job_id=f"{self._id_bits(64):016x}",
            kind=kind,
            params=canonical,
            total_units=job_kind.total_units(canonical),
            created_s=now,
            target_chunk_s=target,
            name=name,
            owner=owner,
            replication=copies,
            quorum=agree,
            adaptive=adaptive,
            priority=priority,
            required_labels=sorted(set(required_labels)),
            deadline_s=None if deadline_s is None else now + deadline_s,
            carbon=carbon_mode,
        )
        with self.backend.transaction():
            if carbon_mode is CarbonMode.PREFER_CLEAN:
                job.blind_gco2_per_kwh = self.grid.pool_intensity(self.backend, kind, now)
            limit = MAX_RUNNING_JOBS_PER_OWNER
            if len(self.backend.list_jobs(frozenset({JobState.RUNNING}), limit, owner)) >= limit:
                raise TooManyRequests(f"at most {limit} running jobs per submitter")
            self.backend.put_job(job)
            self._note(now, work=True, jobs=(job.job_id,))
        self.work_version += 1
        return job

    def get_job(self, job_id: str) -> Job:
        with self.backend.transaction(read_only=True):
            job = self.backend.get_job(job_id)
        if job is None:
            raise NotFound(f"no job {job_id!r}")
        return job

    def lease_spans(
        self, job_ids: Collection[str], limit: int = MAX_SPANS
    ) -> dict[str, list[LeaseSpan] | None]:
        """The active leases of each of ``job_ids`` as their ETAs read them (see
        :func:`hydracompute.core.progress.in_flight_done`), ``None`` for a job with more
        than ``limit``; read in one transaction (a list of jobs asks for them all)."""
        found: dict[str, list[LeaseSpan] | None] = {}
        with self.backend.transaction(read_only=True):
            for job_id in job_ids:
                spans = self.backend.lease_spans(job_id, limit + 1)
                found[job_id] = None if len(spans) > limit else spans
        return found

    def list_jobs(
        self, state: JobState | None = None, limit: int = 100, owner: str | None = None
    ) -> list[Job]:
        states = None if state is None else frozenset({state})
        with self.backend.transaction(read_only=True):
            return self.backend.list_jobs(states, limit, owner)

    @retried_on_conflict
    def cancel_job(self, job_id: str, now: float) -> Job:
        """Stop a running job; its workers are told to abandon its chunks.

        Raises:
            NotFound: no such job.
            Conflict: the job has already finished.
        """
        with self.backend.transaction():
            job = self.backend.get_job(job_id)
            if job is None:
                raise NotFound(f"no job {job_id!r}")
            if job.state.finished:
                raise Conflict(f"job {job_id!r} is already {job.state.value}")
            job.state, job.finished_s = JobState.CANCELLED, now
            self.backend.put_job(job)
            self.backend.delete_job_candidates(job_id)  # copies waiting for agreement
            self._note(now, jobs=(job_id,), ended=(job_id,))
        return job

    def job_outputs(self, job_id: str) -> list[ChunkOutput]:
        with self.backend.transaction(read_only=True):
            return list(chunk_outputs(self.backend, job_id))

    def output_indices(self, job_id: str) -> list[int]:
        """Indices of the job's chunks that have a stored output, ascending."""
        with self.backend.transaction(read_only=True):
            return self.backend.output_indices(job_id)

    def outputs_at(self, job_id: str, indices: Sequence[int]) -> list[ChunkOutput]:
        """The stored outputs of some of the job's chunks (for reading a large job's
        outputs a few at a time), in the order asked; missing ones are left out."""
        with self.backend.transaction(read_only=True):
            found = (self.backend.get_output(job_id, index) for index in indices)
            return [ChunkOutput(o.start, o.stop, o.output) for o in found if o is not None]

    @property
    def blobs(self) -> BlobStore:
        """Where large payloads are kept (rendered artefacts are written here directly)."""
        return self.backend.blobs

    def open_artefact(self, job_id: str, name: str) -> tuple[str, BinaryIO] | None:
        """A finished job's stored artefact ``(media_type, file open for reading)``; the
        caller closes the file. ``None`` if it is to be rendered first (see
        :meth:`JobKind.render_stream`): write it to :attr:`blobs` under
        :func:`~hydracompute.store.payloads.artefact_blob_name`, then
        :meth:`artefact_written`.

        Raises:
            NotFound: no such job or artefact (or the job has not finished).
        """
        with self.backend.transaction(read_only=True):
            found = self.backend.open_artefact(job_id, name)
            if found is not None:
                return found
            job = self.backend.get_job(job_id)
            answer = job.answer if job is not None and job.state is JobState.DONE else None
            if answer is None or name not in answer.get("artefacts", []):
                raise NotFound(f"job {job_id!r} has no artefact {name!r}")
            return None

    @retried_on_conflict
    def artefact_written(self, job_id: str, name: str, media_type: str) -> None:
        """Record a rendered artefact written whole to :attr:`blobs`, so that later
        downloads need not render it again."""
        with self.backend.transaction():
            self.backend.artefact_written(job_id, name, media_type)

    def credit_totals(
        self,
        by: Grouping,
        since: float | None = None,
        until: float | None = None,
        worker_id: str | None = None,
    ) -> list[CreditTotal]:
        """The credit ledger summed per worker or volunteer over ``[since, until)``
        (only ``worker_id``'s entries, if given), largest credit first."""
        with self.backend.transaction(read_only=True):
            return self.backend.credit_totals(by, since, until, worker_id)

    def credit_entries(
        self,
        worker_id: str | None = None,
        job_id: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[CreditEntry]:
        """The ledger's entries matching every filter given, in ledger order."""
        with self.backend.transaction(read_only=True):
            return self.backend.credit_entries(worker_id, job_id, since=since, until=until)

    def credit_by_zone(self, job_id: str | None = None) -> list[ZoneTotal]:
        """Energy and CO2 of the accepted copies (only ``job_id``'s, if given) per grid
        zone."""
        with self.backend.transaction():
            return self.backend.credit_by_zone(job_id)

    def recent_credit(self, volunteer: str, limit: int) -> list[CreditEntry]:
        """The volunteer's (join token id's) ``limit`` latest ledger entries, newest first."""
        with self.backend.transaction(read_only=True):
            return self.backend.recent_credit(volunteer, limit)

    # the exchange

    @retried_on_conflict
    def exchange(
        self,
        worker_id: str,
        results: Sequence[ResultReport],
        running: Sequence[str],
        want: int,
        now: float,
        state: str = "running",
        state_reason: str = "",
        batch: BatchJobs | None = None,
    ) -> ExchangeOutcome:
        """One round trip of a worker: record results, renew leases, grant new ones.

        Results are checked first; if any is refused nothing at all is recorded, and the
        error names the offending ``lease_id``. ``state`` and ``state_reason`` are what the
        worker says it is doing (e.g. "paused", "on battery"), shown to the pool.

        Raises:
            NotFound: no such worker, or a result for an unknown lease.
            Forbidden: a result for another worker's lease.
            Conflict: a result differing from one already recorded for the lease.
            InvalidResult: an output fails its kind's check.
        """
        with self.backend.transaction(), self.in_flight.undone_on_error():
            if batch is None:  # a batch locks the jobs of all its exchanges at once
                self._lock_jobs_of(
                    [ExchangeRequest(worker_id, list(results), list(running), want, now)]
                )
            worker = self.backend.get_worker(worker_id)
            if worker is None:
                raise NotFound(f"no worker {worker_id!r}", worker_id=worker_id)
            if worker.revoked:  # also between a long-poll's checks
                raise Unauthorized("unknown, revoked or wrong worker credentials")
            worker.last_seen_s, worker.left = now, False
            worker.state, worker.state_reason = state, state_reason
            step = Exchange(
                self.backend,
                self.kinds,
                self.config,
                worker,
                now,
                lambda kind: self._pool_speed(kind, now),
                self.in_flight,
                batch,
                self.verification,
                self.rng.random,
                lambda: self._pool_tokens(now),
                self.credit,
                self.fair_share,
                lambda: self._owner_weights(now),
                lambda: self._pool_cores(now),
                self._id_bits,
                grid=self.grid if self.grid.view is not None else None,
            )
            for report in results:
                step.report(report)
            step.renew(list(running))
            # The worker's other leases are done (their results on the way: a worker's agent
            # asks for its next chunk before it sends the last one's result) or lost.
            self.in_flight.settle(worker_id, running)
            # A worker holds at most two leases per core it declared, no more: one chunk
            # computing, one whose result is on its way (see the worker's agent, which asks
            # for the next chunk before it sends the result of the last, asking for none).
            if want > 0:
                held = self.backend.count_active_leases(worker_id)
                room = LEASES_PER_CORE * worker.cores - held
                step.lease(min(want, room, self.config.max_leases_per_exchange))
            step.flush()
            self.backend.put_worker(worker)
            if batch is None:
                self._note(now, [step.outcome])
        step.hand_back()
        step.outcome.barred = bool(worker.barred)
        if worker.grid_zone and self.grid.view is not None:
            step.outcome.grid_gco2_per_kwh = self.grid.intensity(worker.grid_zone, now)
        if step.outcome.released_work:
            self.work_version += 1
        return step.outcome

    @retried_on_conflict
    def exchange_many(
        self, requests: Sequence[ExchangeRequest]
    ) -> list[ExchangeOutcome | Exception]:
        """Several exchanges in one transaction, made durable by one commit.

        Each is recorded or refused on its own (a savepoint: a refused one changes nothing,
        as alone); none is durable, or may be answered, before this returns. Returns, in
        order, each one's outcome or the error that refused it.
        """
        answers: list[ExchangeOutcome | Exception] = []
        batch = BatchJobs()
        with self.backend.transaction():
            self._lock_jobs_of(requests)
            for request in requests:
                try:
                    answers.append(
                        self.exchange(
                            request.worker_id,
                            request.results,
                            request.running,
                            request.want,
                            request.now,
                            request.state,
                            request.state_reason,
                            batch,
                        )
                    )
                except StoreConflict:  # lost a race: the whole batch is tried again
                    raise
                except HydraError as exc:  # refused: only this one is undone
                    answers.append(_without_traceback(exc))
                except Exception as exc:  # a bug: only this one is undone, and it is logged
                    log.exception("exchange of worker %s failed", request.worker_id)
                    answers.append(_without_traceback(exc))
            batch.write(self.backend)
            if requests:
                outcomes = [a for a in answers if isinstance(a, ExchangeOutcome)]
                self._note(requests[-1].now, outcomes)
        return answers

    def _lock_jobs_of(self, requests: Sequence[ExchangeRequest]) -> None:
        """Lock, before anything else, the jobs these exchanges may change: those of the
        leases they report on or renew, and the running ones if they ask for work (see
        :meth:`Backend.lock_jobs`)."""
        if not self.backend.shared:
            return
        reported = [r.lease_id for request in requests for r in request.results]
        renewed = [lease_id for request in requests for lease_id in request.running]
        self.backend.lock_exchanges(
            [request.worker_id for request in requests],
            reported + renewed,
            reported,
            any(request.want > 0 for request in requests),
        )

    def _lock_running_jobs(self) -> None:
        """Lock the running jobs first, before leases and chunks (see
        :meth:`Backend.lock_jobs`)."""
        if self.backend.shared:
            self.backend.lock_jobs([job.job_id for job in self.backend.running_jobs()])

    def _note(
        self,
        now: float,
        outcomes: Sequence[ExchangeOutcome] = (),
        work: bool = False,
        jobs: Sequence[str] = (),
        ended: Sequence[str] = (),
    ) -> None:
        """Append what the current transaction changed (``outcomes``' changes and the
        others) to the shared change log, while other coordinators share the database
        (:attr:`record_changes`); alone, a coordinator learns of its changes in memory."""
        if not self.record_changes:
            return
        collected = ChangeCollector()
        collected.add(work, jobs, ended)
        for o in outcomes:
            collected.add(o.released_work, o.changed_jobs, o.ended_jobs, o.finished)
        if collected:
            self.backend.append_change(collected.change(self.origin, now))

    def _pool_figure(self, name: str, now: float, read: Callable[[float], float]) -> float:
        """``read(seen_since)`` over the online workers, read again at most once a second,
        and less often in a large pool (see :data:`POOL_FIGURE_CORES_PER_S`): reading
        every worker on every exchange would not scale."""
        cached = self._figures.get(name)
        cores = self._figures.get("cores", (0.0, 0.0))[1]
        period = POOL_SPEED_CACHE_S * max(1.0, cores / POOL_FIGURE_CORES_PER_S)
        if cached is not None and 0 <= now - cached[0] < period:
            return cached[1]
        value = read(now - self.config.lease_ttl_s)
        self._figures[name] = (now, value)
        return value

    def _pool_speed(self, kind: str, now: float) -> float:
        """Units per second of every online core on ``kind``."""
        return self._pool_figure(
            f"speed {kind}", now, lambda since: self.backend.pool_speed(kind, since)
        )

    def _owner_weights(self, now: float) -> dict[str, float]:
        """The API keys' weights, read again at most once a second (an admin's change
        takes a second to count)."""
        read_s, weights = self._weights
        if not 0 <= now - read_s < POOL_SPEED_CACHE_S:
            weights = self.backend.owner_weights()
            self._weights = (now, weights)
        return weights

    def owner_shares(self, now: float) -> list[OwnerShare]:
        """Every submitter's share of the pool and usage (see
        :mod:`hydracompute.core.fairshare`): those with running jobs or recent usage."""
        with self.backend.transaction():
            jobs = list(self.backend.running_jobs())
            usage = self.backend.owner_usage()
            weights = self.backend.owner_weights()
        return self.fair_share.shares(jobs, usage, weights, now)

    def chunk_target_s(self, target_s: float, now: float) -> float:
        """The chunk time a job asking for ``target_s`` is sized for now: longer when the
        pool's cores online would send more results than the coordinator should take (see
        :func:`~hydracompute.core.sizing.load_controlled_target_s`)."""
        config = self.config
        return load_controlled_target_s(
            target_s, self._pool_cores(now), config.capacity_results_per_s, config.load_share
        )

    def _pool_cores(self, now: float) -> int:
        """Cores of the online workers (not barred)."""
        return int(self._pool_figure("cores", now, self.backend.pool_cores))

    def _pool_tokens(self, now: float) -> int:
        """Join tokens (volunteers) of the online workers."""
        return int(self._pool_figure("tokens", now, self.backend.pool_tokens))

    @retried_on_conflict
    def leave(self, worker_id: str, now: float) -> int:
        """A stopping worker leaves: every lease it still holds is given back at once,
        including any granted in an answer it never read. Returns how many.

        Raises:
            NotFound: no such worker.
        """
        with self.backend.transaction():
            self._lock_running_jobs()
            worker = self.backend.get_worker(worker_id)
            if worker is None:
                raise NotFound(f"no worker {worker_id!r}")
            leases = self.backend.active_leases_of_worker(worker_id)
            for lease in leases:
                self._end_lease(lease, LeaseState.RETURNED)
            worker.left, worker.last_seen_s = True, now
            self.backend.put_worker(worker)
            self._note(now, work=bool(leases))
        if leases:
            self.work_version += 1
        return len(leases)

    @retried_on_conflict
    def return_leases(self, worker_id: str, lease_ids: Sequence[str], now: float) -> int:
        """A worker gives back leases it will not finish soon (its owner paused it for long):
        their chunks are available to others at once. Returns how many were still active;
        a lease already finished, expired or returned is left as it is.

        Raises:
            NotFound: no such worker, or no such lease (nothing is returned).
            Forbidden: a lease held by another worker (nothing is returned).
        """
        released = False
        with self.backend.transaction():
            self._lock_running_jobs()
            worker = self.backend.get_worker(worker_id)
            if worker is None:
                raise NotFound(f"no worker {worker_id!r}")
            leases = []
            for lease_id in dict.fromkeys(lease_ids):
                lease = self.backend.get_lease(lease_id)
                if lease is None:
                    raise NotFound(f"no lease {lease_id!r}", lease_id=lease_id)
                if lease.worker_id != worker_id:
                    raise Forbidden(
                        f"lease {lease_id!r} is held by another worker", lease_id=lease_id
                    )
                leases.append(lease)
            active = [lease for lease in leases if lease.state is LeaseState.ACTIVE]
            for lease in active:
                released = self._end_lease(lease, LeaseState.RETURNED) or released
            worker.last_seen_s = now
            self.backend.put_worker(worker)
            self._note(now, work=released)
        if released:
            self.work_version += 1
        return len(active)

    @retried_on_conflict
    def expire_leases(self, now: float) -> int:
        """Expire leases not renewed in time and make their chunks available again."""
        expired = 0
        with self.backend.transaction():
            self._lock_running_jobs()
            for lease in self.backend.overdue_leases(now, EXPIRE_BATCH):
                self._end_lease(lease, LeaseState.EXPIRED)
                expired += 1
            self._note(now, work=expired > 0)
        if expired:
            self.work_version += 1
        return expired

    def earliest_lease_deadline(self) -> float | None:
        """The earliest deadline of the active leases (``None``: none is active):
        :meth:`expire_leases` expires nothing before it (a lease granted or renewed later
        is due a whole lease lifetime after that moment)."""
        with self.backend.transaction(read_only=True):
            return self.backend.earliest_lease_deadline()

    def _end_lease(self, lease: Lease, state: LeaseState) -> bool:
        """End an active lease unfinished; returns whether its chunk became pending."""
        lease.state = state
        self.backend.put_lease(lease)
        self.in_flight.returned(lease.job_id, lease.lease_id)
        return release_chunk(self.backend, lease)


def _without_traceback(exc: Exception) -> Exception:
    """``exc`` without its traceback, to be kept in a list of answers: its traceback holds
    the frame that holds the list (a reference cycle keeping the whole batch alive until
    the next garbage collection, which the coordinator runs only now and then)."""
    return exc.with_traceback(None)
