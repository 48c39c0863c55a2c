"""What goes into an exchange and what comes out of it: plain records, shared by the store,
the coordinator and the live displays."""

from __future__ import annotations

from dataclasses import dataclass, field

from hydracompute.core.models import JSON


@dataclass(frozen=True)
class ResultReport:
    """A worker's report on one lease: an ``output`` or an ``error``, not both."""

    lease_id: str
    output: JSON | None = None
    compute_s: float = 0.0
    error: str | None = None


@dataclass(frozen=True)
class ExchangeRequest:
    """The arguments of one :meth:`Store.exchange`, for batching several in one commit."""

    worker_id: str
    results: list[ResultReport]
    running: list[str]
    want: int
    now: float
    state: str = "running"
    state_reason: str = ""


@dataclass(frozen=True)
class LeaseGrant:
    lease_id: str
    job_id: str
    kind: str
    params: JSON
    chunk_index: int
    start: int
    stop: int
    deadline_s: float


@dataclass(frozen=True)
class FinishedChunk:
    job_id: str
    chunk_index: int
    start: int
    stop: int


@dataclass
class ExchangeOutcome:
    accepted: list[str] = field(default_factory=list)
    leases: list[LeaseGrant] = field(default_factory=list)
    abandon: list[str] = field(default_factory=list)
    #: Some work became available to others (a chunk went back to pending).
    released_work: bool = False
    #: Chunks whose output this exchange stored (for live displays).
    finished: list[FinishedChunk] = field(default_factory=list)
    #: Jobs whose progress or state this exchange changed.
    changed_jobs: set[str] = field(default_factory=set)
    #: Jobs this exchange finished (done or failed).
    ended_jobs: set[str] = field(default_factory=set)
    #: Credit this exchange granted, and withdrew from workers it barred (for metrics).
    credit_granted: float = 0.0
    credit_withdrawn: float = 0.0
    #: The carbon intensity of the worker's grid now (``None``: no zone, or no source).
    grid_gco2_per_kwh: float | None = None
    #: The worker is barred: no exchange will give it work, so a held request of its is
    #: not looked at again when work appears (it waits out its long poll).
    barred: bool = False
