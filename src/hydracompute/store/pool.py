"""The state of record of one pool: jobs, workers and leases, over any backend.

:class:`Store` is the one interface the coordinator uses. Each public method is one
transaction: when it returns, what it did is durable; when it raises, nothing changed.
Times are passed in (``now``), never read here.
"""

from __future__ import annotations

import logging
import random
import re
import secrets
from collections.abc import Callable, Sequence
from typing import BinaryIO

from hydracompute.core import carbon, placement
from hydracompute.core.carbon import CarbonMode, IntensityView
from hydracompute.core.config import SchedulerConfig
from hydracompute.core.credit import (
    MAX_OWN_WATTS_PER_CORE,
    MIN_OWN_WATTS_PER_CORE,
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
    CredentialKind,
    Job,
    JobState,
    Lease,
    LeaseState,
    Worker,
)
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
    InvalidRequest,
    NotFound,
    StoreConflict,
    TooManyRequests,
    Unauthorized,
)
from hydracompute.kinds import ChunkOutput, KindRegistry
from hydracompute.store.backend import Backend
from hydracompute.store.blobs import BlobStore
from hydracompute.store.content import content_exists
from hydracompute.store.credentials import Credentials, hash_secret, secrets_match
from hydracompute.store.exchange import BatchJobs, Exchange, release_chunk
from hydracompute.store.grid import GridDispatch
from hydracompute.store.records import ExchangeOutcome, ExchangeRequest, ResultReport
from hydracompute.store.retry import retried_on_conflict
from hydracompute.store.shared import ChangeCollector
from hydracompute.store.sharing import PoolSharing
from hydracompute.store.verdicts import chunk_outputs

log = logging.getLogger("hydracompute.store")
MAX_NAME_CHARS = 200
#: Limits of what a worker says about itself (the HTTP schema holds requests to the same).
MAX_WORKER_CORES = 1024
MAX_WORKER_KINDS = 100
KIND_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
#: Workers forgotten per call; the coordinator calls again while there are more.
FORGET_BATCH = 1000
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


class Store:
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
        self.grid = GridDispatch(carbon, config.lease_ttl_s)
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
        canonical = job_kind.validate(params)
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

    # workers

    @retried_on_conflict
    def enrol_worker(
        self,
        name: str,
        cores: int,
        kinds: Sequence[str],
        now: float,
        join_token: str | None = None,
        watts_per_core: float | None = None,
        grid_zone: str = "",
        power_measured: bool = False,
        volunteer: str = "",
    ) -> tuple[Worker, str]:
        """Record a new worker; returns it and its secret (shown once, stored hashed).

        Args:
            join_token: the text of a join token, which this uses once; ``None`` skips the
                check (for embedding the store without a coordinator).
            volunteer: without a join token, the volunteer the worker counts for (its
                ``token_id``: a simulator's virtual volunteers, who hold no tokens).
            watts_per_core: the power of one of its busy cores, as its owner declared it or
                it measured it (0.1–500 W), for its energy estimates; ``None``: the pool's.
            grid_zone: its electricity grid (see :func:`~hydracompute.core.carbon.valid_zone`).
            power_measured: whether ``watts_per_core`` was measured (RAPL).

        Raises:
            InvalidRequest: a power figure out of range, or a malformed grid zone.
            Unauthorized: the join token is unknown, wrong, expired, used up or revoked (the
                message says which only to a caller who has the token's secret).
        """
        _check_watts(watts_per_core)
        grid_zone = _checked_zone(grid_zone)
        secret = secrets.token_urlsafe(32)
        worker = Worker(
            worker_id=f"w-{self._id_bits(64):016x}",
            name=name[:MAX_NAME_CHARS],
            cores=cores,
            kinds=sorted(set(kinds)),
            secret_hash=hash_secret(secret),
            enrolled_s=now,
            last_seen_s=now,
            watts_per_core=watts_per_core,
            power_measured=power_measured and watts_per_core is not None,
            grid_zone=grid_zone,
            token_id=volunteer,
        )
        with self.backend.transaction():
            if join_token is not None:
                token = self.credentials.use(CredentialKind.JOIN_TOKEN, join_token, now)
                worker.token_id = token.cred_id
            self.backend.put_worker(worker)
        return worker, secret

    def authenticate_worker(self, worker_id: str, secret: str) -> Worker:
        """The worker whose secret this is.

        Raises:
            Unauthorized: no such worker, a wrong secret, or a revoked worker
                (indistinguishably).
        """
        with self.backend.transaction(read_only=True):
            worker = self.backend.get_worker(worker_id)
        if worker is None or worker.revoked or not secrets_match(worker.secret_hash, secret):
            raise Unauthorized("unknown, revoked or wrong worker credentials")
        return worker

    @retried_on_conflict
    def revoke_worker(self, worker_id: str, now: float) -> Worker:
        """Shut a worker out from its next request on; its leases go back to the pool.

        Raises:
            NotFound: no such worker.
        """
        with self.backend.transaction():
            self.leave(worker_id, now)
            worker = self.backend.get_worker(worker_id)
            assert worker is not None
            worker.revoked = True
            self.backend.put_worker(worker)
        return worker

    @retried_on_conflict
    def update_worker_profile(
        self,
        worker_id: str,
        cores: int,
        kinds: Sequence[str],
        now: float,
        watts_per_core: float | None = None,
        grid_zone: str = "",
        power_measured: bool = False,
    ) -> Worker:
        """A rejoining worker's cores, installed kinds, power per core (``None``: it
        gives none now, the pool's figure is used) and grid zone, which may differ from
        what it had when it enrolled (its owner changed ``--cores``, installed a kind, or
        moved): it keeps its identity, speeds and credit. Counts as hearing from it.

        Raises:
            NotFound: no such worker.
            InvalidRequest: cores not in 1..1024, kinds not 1 to 100 valid kind names, or a
                malformed grid zone (``errors`` names each).
        """
        problems = {}
        if isinstance(cores, bool) or not 1 <= cores <= MAX_WORKER_CORES:
            problems["cores"] = f"must be between 1 and {MAX_WORKER_CORES}"
        if not 1 <= len(kinds) <= MAX_WORKER_KINDS or not all(
            isinstance(k, str) and KIND_NAME.match(k) for k in kinds
        ):
            problems["kinds"] = f"must be 1 to {MAX_WORKER_KINDS} kind names"
        if watts_per_core is not None and not _plausible_watts(watts_per_core):
            problems["watts_per_core"] = WATTS_RANGE
        if grid_zone and not carbon.valid_zone(carbon.normal_zone(grid_zone)):
            problems["grid_zone"] = ZONE_FORMAT
        if problems:
            detail = "; ".join(f"{k}: {v}" for k, v in problems.items())
            raise InvalidRequest(detail, errors=problems)
        with self.backend.transaction():
            worker = self.backend.get_worker(worker_id)
            if worker is None:
                raise NotFound(f"no worker {worker_id!r}")
            worker.cores, worker.kinds = cores, sorted(set(kinds))
            worker.watts_per_core = watts_per_core
            worker.power_measured = power_measured and watts_per_core is not None
            worker.grid_zone = carbon.normal_zone(grid_zone)
            worker.last_seen_s = now
            self.backend.put_worker(worker)
        return worker

    @retried_on_conflict
    def label_worker(
        self, worker_id: str, add: Sequence[str] = (), remove: Sequence[str] = ()
    ) -> Worker:
        """Give a worker labels and take others away (the admin's word on the machine).

        Raises:
            NotFound: no such worker.
            InvalidRequest: a label is malformed, or it would carry too many.
        """
        problem = placement.label_errors([*add, *remove])
        with self.backend.transaction():
            worker = self.backend.get_worker(worker_id)
            if worker is None:
                raise NotFound(f"no worker {worker_id!r}")
            labels = placement.relabel(worker.labels, add, remove)
            problem = problem or placement.label_errors(labels)
            if problem:
                raise InvalidRequest(problem, errors={"labels": problem})
            worker.labels = labels
            self.backend.put_worker(worker)
        return worker

    def may_fetch(self, worker_id: str, digest: str) -> bool:
        """Whether a worker holds a lease of a job that names the blob ``digest`` (a
        worker fetches only what its chunks need: an input is not every worker's to read)."""
        with self.backend.transaction():
            for job_id in {
                lease.job_id for lease in self.backend.active_leases_of_worker(worker_id)
            }:
                job = self.backend.get_job(job_id)
                kind = self.kinds.get(job.kind) if job and job.kind in self.kinds else None
                if job and kind and digest in kind.blobs(job.params).values():
                    return True
        return False

    @retried_on_conflict
    def remove_worker(self, worker_id: str, now: float) -> Worker:
        """Forget a worker: its leases go back to the pool and it disappears from the list.
        Its secret no longer works; started again, it enrols anew with a join token.

        Raises:
            NotFound: no such worker.
        """
        with self.backend.transaction():
            worker = self.backend.get_worker(worker_id)
            if worker is None:
                raise NotFound(f"no worker {worker_id!r}")
            self.leave(worker_id, now)
            self.backend.delete_worker(worker_id)
        return worker

    def workers_gone_silent(self, since: float, before: float) -> list[Worker]:
        """Workers last heard from in ``[since, before)`` that neither left nor were
        revoked (with ``before`` one lease lifetime ago: those that just went offline
        without saying so), at most ``FORGET_BATCH``."""
        with self.backend.transaction(read_only=True):
            found = self.backend.workers_seen_before(before, FORGET_BATCH, since)
        return [w for w in found if not (w.left or w.revoked)]

    @retried_on_conflict
    def forget_workers(self, now: float, older_than_s: float) -> list[Worker]:
        """Remove (as :meth:`remove_worker`) workers not heard from for ``older_than_s``,
        at most ``FORGET_BATCH`` of them; returns them."""
        with self.backend.transaction():
            gone = self.backend.workers_seen_before(now - older_than_s, FORGET_BATCH)
            for worker in gone:
                self.leave(worker.worker_id, now)
                self.backend.delete_worker(worker.worker_id)
        return gone

    def list_workers(self) -> list[Worker]:
        with self.backend.transaction(read_only=True):
            return self.backend.list_workers()

    def leases_in_hand(self) -> dict[str, int]:
        """Number of active leases per worker id (every worker, 0 if it holds none)."""
        with self.backend.transaction(read_only=True):
            counts = self.backend.active_lease_counts()
            return {w.worker_id: counts.get(w.worker_id, 0) for w in self.backend.list_workers()}

    # credit

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


WATTS_RANGE = f"must be between {MIN_OWN_WATTS_PER_CORE} and {MAX_OWN_WATTS_PER_CORE} W"


def _plausible_watts(watts: float) -> bool:
    return (
        isinstance(watts, int | float)
        and not isinstance(watts, bool)
        and MIN_OWN_WATTS_PER_CORE <= watts <= MAX_OWN_WATTS_PER_CORE
    )


ZONE_FORMAT = (
    f"must be a grid zone code: an ISO country code or an Electricity Maps zone "
    f"(letters, digits, '-', at most {carbon.MAX_ZONE_CHARS} characters)"
)


def _checked_zone(zone: str) -> str:
    """``zone`` in its canonical spelling ("" stays ""); InvalidRequest if malformed."""
    if not zone:
        return ""
    zone = carbon.normal_zone(zone)
    if not carbon.valid_zone(zone):
        raise InvalidRequest(f"grid_zone: {ZONE_FORMAT}", errors={"grid_zone": ZONE_FORMAT})
    return zone


def _check_watts(watts_per_core: float | None) -> None:
    """Refuse a worker's own power figure out of range (InvalidRequest)."""
    if watts_per_core is not None and not _plausible_watts(watts_per_core):
        problems = {"watts_per_core": WATTS_RANGE}
        raise InvalidRequest(f"watts_per_core: {WATTS_RANGE}", errors=problems)
