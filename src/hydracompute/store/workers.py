"""The pool's workers as the store keeps them: enrolment, authentication, the owner's
profile (power, grid), the admin's labels, revocation and removal, and forgetting workers
long gone.

:class:`WorkerRecords` is part of :class:`~hydracompute.store.pool.Store` (a mixin over the
same backend); like every store method, each public method is one transaction.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Sequence

from hydracompute import __version__
from hydracompute.core import carbon, placement
from hydracompute.core.config import SchedulerConfig
from hydracompute.core.credit import MAX_OWN_WATTS_PER_CORE, MIN_OWN_WATTS_PER_CORE
from hydracompute.core.inflight import InFlight
from hydracompute.core.models import CredentialKind, Worker
from hydracompute.errors import InvalidRequest, NotFound, Unauthorized
from hydracompute.kinds import KindRegistry
from hydracompute.store.backend import Backend
from hydracompute.store.credentials import Credentials, hash_secret, secrets_match
from hydracompute.store.retry import retried_on_conflict

MAX_NAME_CHARS = 200
#: Limits of what a worker says about itself (the HTTP schema holds requests to the same).
MAX_WORKER_CORES = 1024
#: A worker's version as kept (the API takes at most as much).
MAX_VERSION_CHARS = 40
MAX_WORKER_KINDS = 100
KIND_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
#: Workers forgotten per call; the coordinator calls again while there are more.
FORGET_BATCH = 1000
WATTS_RANGE = f"must be between {MIN_OWN_WATTS_PER_CORE} and {MAX_OWN_WATTS_PER_CORE} W"


class WorkerRecords:
    """The workers' part of the store (see the module docstring)."""

    backend: Backend
    kinds: KindRegistry
    config: SchedulerConfig
    credentials: Credentials
    in_flight: InFlight
    work_version: int
    _id_bits: Callable[[int], int]

    def leave(self, worker_id: str, now: float) -> int:
        """Given by :class:`~hydracompute.store.pool.Store`: a removed or revoked worker's
        leases go back to the pool as when it leaves."""
        raise NotImplementedError

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
        *,
        version: str = __version__,
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
            version: the Hydra Compute version it runs (``""``: it did not say; by
                default this one's, as a worker in this process runs).

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
            version=version[:MAX_VERSION_CHARS],
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
        *,
        version: str = __version__,
    ) -> Worker:
        """A rejoining worker's cores, installed kinds, power per core (``None``: it
        gives none now, the pool's figure is used), grid zone and version, which may differ
        from what it had when it enrolled (its owner changed ``--cores``, installed a kind,
        moved or upgraded): it keeps its identity, speeds and credit. Counts as hearing
        from it.

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
            worker.version = version[:MAX_VERSION_CHARS]
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
