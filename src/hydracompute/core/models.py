"""Plain records of the scheduler's world: jobs, chunks, leases and workers.

Times are seconds on the coordinator's clock (``*_s`` fields), passed in by the caller.
Records are mutable dataclasses; the store hands out copies, so a change takes effect only
when it is written back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from hydracompute.core.carbon import CarbonMode

JSON = dict[str, Any]


class Role(StrEnum):
    """What an API key may do; each role includes the ones below it."""

    ADMIN = "admin"  # keys, join tokens, workers, every job
    SUBMITTER = "submitter"  # submit jobs; see and cancel its own
    VIEWER = "viewer"  # read-only: jobs, workers, results

    def allows(self, needed: Role) -> bool:
        order = [Role.VIEWER, Role.SUBMITTER, Role.ADMIN]
        return order.index(self) >= order.index(needed)


class CredentialKind(StrEnum):
    API_KEY = "api_key"
    JOIN_TOKEN = "join_token"


@dataclass
class Credential:
    """An API key (with a role) or a join token (lets a worker enrol); stored hashed."""

    cred_id: str
    kind: CredentialKind
    name: str
    secret_hash: str
    created_s: float
    role: Role | None = None
    expires_s: float | None = None
    max_uses: int | None = None
    uses: int = 0
    revoked: bool = False
    #: An API key's weight in the fair share between submitters (see
    #: :mod:`hydracompute.core.fairshare`).
    weight: float = 1.0

    def usable(self, now: float) -> bool:
        if self.revoked or (self.expires_s is not None and now >= self.expires_s):
            return False
        return self.max_uses is None or self.uses < self.max_uses


class JobState(StrEnum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self is not JobState.RUNNING


class ChunkState(StrEnum):
    PENDING = "pending"  # waiting for a worker (new, expired or failed once)
    LEASED = "leased"  # at least one active lease
    DONE = "done"  # a valid output is stored


class LeaseState(StrEnum):
    ACTIVE = "active"
    REPORTED = "reported"  # its output waits for other copies to agree (verification)
    DONE = "done"  # its output won (or agreed with the one that did)
    SUPERSEDED = "superseded"  # its output came after another copy won, or the job ended
    ABANDONED = "abandoned"  # the coordinator told the holder to stop
    EXPIRED = "expired"  # the holder stopped renewing it
    FAILED = "failed"  # the holder reported an error
    RETURNED = "returned"  # the holder gave it back unfinished (shutting down)
    INVALID = "invalid"  # its output disagreed with the copies that won, or a known answer


@dataclass
class Job:
    job_id: str
    kind: str
    params: JSON
    total_units: int
    created_s: float
    target_chunk_s: float
    name: str = ""
    #: The API key that submitted it ("" when submitted without one).
    owner: str = ""
    state: JobState = JobState.RUNNING
    next_unit: int = 0  # units [0, next_unit) are carved into chunks
    #: Chunk indices used: one per chunk carved, two more per chunk split (see
    #: :func:`hydracompute.core.lifecycle.split`).
    chunks_carved: int = 0
    units_done: int = 0
    finished_s: float | None = None
    error: str | None = None
    answer: JSON | None = None
    #: The kind's running summary of accepted outputs (see ``JobKind.fold_live``).
    live: JSON = field(default_factory=dict)
    #: Copies of each chunk computed by different workers (1: no replication).
    replication: int = 1
    #: Copies that must agree before a chunk's output is accepted.
    quorum: int = 1
    #: Adaptive verification: a trusted worker's output is replicated only now and then
    #: (see :mod:`hydracompute.core.verification`).
    adaptive: bool = False
    #: Times it ran again after it had finished, because outputs it had accepted came from
    #: a worker since found lying.
    reopened: int = 0
    #: Among its owner's running jobs, higher runs first (see
    #: :mod:`hydracompute.core.fairshare`).
    priority: int = 0
    #: Labels a worker must carry to be given its chunks (see core/placement.py).
    required_labels: list[str] = field(default_factory=list)
    #: When it should be done, on the coordinator's clock (``None``: no deadline).
    deadline_s: float | None = None
    #: How its work is dispatched with respect to grids (see :mod:`hydracompute.core.carbon`).
    carbon: CarbonMode = CarbonMode.BLIND
    #: The pool's mean grid intensity (gCO2/kWh) when it was submitted, for the emissions of
    #: carbon-blind dispatch (``None``: not known, its own emissions stand for them).
    blind_gco2_per_kwh: float | None = None
    #: The expected and the reported compute time of its accepted chunks whose holder's
    #: speed was known when granted: how much longer than expected its chunks take (a
    #: speed learnt on another job of the kind, say). The ETA stretches the expected
    #: durations of the chunks in flight by their ratio (see core/progress.py).
    expected_compute_s: float = 0.0
    reported_compute_s: float = 0.0


@dataclass
class Chunk:
    job_id: str
    index: int
    start: int
    stop: int
    state: ChunkState = ChunkState.PENDING
    failures: int = 0
    last_error: str | None = None
    #: When each worker that failed this chunk did (they wait before retrying it).
    failed_by: dict[str, float] = field(default_factory=dict)
    #: Copies that must agree before the chunk's output is accepted.
    quorum: int = 1
    #: Copies wanted in play (computing or reported); fewer, and the chunk is pending.
    wanted: int = 1
    #: The workers with a copy in play (an active lease or a reported output), each with
    #: the join token it enrolled with: copies go to different workers and volunteers.
    holders: dict[str, str] = field(default_factory=dict)
    #: Outputs reported and waiting for agreement (kept by the backend as candidates).
    reported: int = 0
    #: Its output was accepted because copies from different workers agreed.
    verified: bool = False
    #: Its copies disagreed past the bound: further copies go only to workers whose
    #: outputs others have confirmed.
    disputed: bool = False
    #: The worker whose output was accepted alone, unverified, under adaptive verification
    #: ("" if none): re-done if that worker is found lying.
    unverified_by: str = ""

    @property
    def units(self) -> int:
        return self.stop - self.start


@dataclass
class Lease:
    lease_id: str
    job_id: str
    chunk_index: int
    worker_id: str
    issued_s: float
    deadline_s: float
    state: LeaseState = LeaseState.ACTIVE
    backup: bool = False
    output_digest: str | None = None
    compute_s: float | None = None
    #: A copy of a chunk whose output is already known, to test the holder (who cannot
    #: tell it from ordinary work).
    spot_check: bool = False
    #: When its holder was expected to finish, and to be late (``backup_factor`` times its
    #: expected duration: see :func:`hydracompute.core.leases.wants_backup`), as estimated
    #: when it was granted;
    #: ``None`` for a lease granted before they were kept. They order a job's leases at
    #: its tail (backup copies for those ending last, stragglers' chunks taken back first).
    expected_end_s: float | None = None
    late_s: float | None = None
    #: Whether ``expected_end_s`` came from the holder's speed (``False``: from the job's
    #: target, for a holder of unknown speed such as a probe's; its end tells nothing of
    #: how long the job's chunks take, see ``Job.expected_compute_s``).
    speed_known: bool = False


@dataclass
class Worker:
    worker_id: str
    name: str
    cores: int
    kinds: list[str]
    secret_hash: str
    enrolled_s: float
    last_seen_s: float
    #: Learnt speed per kind, in work units per second on one core.
    speeds: dict[str, float] = field(default_factory=dict)
    #: Seconds of measurements behind each speed (how much to trust it).
    speed_evidence_s: dict[str, float] = field(default_factory=dict)
    chunks_done: int = 0
    units_done: dict[str, int] = field(default_factory=dict)
    left: bool = False
    revoked: bool = False
    #: The join token it enrolled with.
    token_id: str = ""
    #: What the worker says it is doing: "running", or "paused" by its owner's rules.
    state: str = "running"
    #: Why, in the worker's words (e.g. "on battery").
    state_reason: str = ""
    #: Consecutive outputs per kind confirmed by other workers or by a known answer (its
    #: trust; reset by one wrong output).
    trust: dict[str, int] = field(default_factory=dict)
    #: Why it was barred for returning wrong outputs ("" if it is not): a barred worker
    #: gets no more work and its unverified outputs are re-done by others.
    barred: str = ""
    #: The power one of its busy cores draws, in watts, as its owner declared it or the
    #: worker measured it (``None``: it gave none, the pool's figure is used).
    watts_per_core: float | None = None
    #: Labels the pool's admin gave it (``trusted``...): jobs may require them.
    labels: list[str] = field(default_factory=list)
    #: Whether that figure was measured from the machine's energy counters (RAPL) rather
    #: than declared by its owner.
    power_measured: bool = False
    #: Its electricity grid: an ISO country code or an Electricity Maps zone ("" unknown).
    grid_zone: str = ""
    #: The Hydra Compute version it runs, as it said when it last joined ("" unknown:
    #: taken as older than any): jobs whose parameters older workers cannot compute
    #: (:meth:`~hydracompute.kinds.base.JobKind.min_worker_version`) skip it.
    version: str = ""

    def online(self, now: float, lease_ttl_s: float) -> bool:
        """Seen within one lease lifetime and neither signed off nor revoked."""
        return not (self.left or self.revoked) and self.last_seen_s >= now - lease_ttl_s
