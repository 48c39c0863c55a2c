"""What a simulation records as it runs: rates per sample period, chunk sizes, compute per
lease, the pool's capacity over time, and the real CPU the store spent on exchanges.

Everything but the measured CPU and wall time is a function of the scenario and the seed.
"""

from __future__ import annotations

import collections
from array import array
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hydracompute.core.models import Job
from hydracompute.errors import HydraError
from hydracompute.sim.scenario import JobSpec, Scenario
from hydracompute.store import Store
from hydracompute.store.records import ExchangeOutcome, LeaseGrant

if TYPE_CHECKING:
    from hydracompute.sim.engine import Simulation
    from hydracompute.sim.workers import VirtualWorker


@dataclass
class JobRecord:
    job_id: str
    kind: str
    name: str
    units: int
    arrived_s: float
    #: Core-seconds on the reference machine (units over the reference speed).
    work_core_s: float
    ended_s: float | None = None
    state: str = "running"


@dataclass
class Sample:
    time_s: float
    results: int
    exchanges: int
    cpu_s: float
    workers_online: int
    capacity: float
    chunk_target_s: float
    leases_in_play: int


@dataclass
class Recorder:
    scenario: Scenario
    store: Store
    jobs: dict[str, JobRecord] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    #: lease id -> core-seconds its worker computed on it (all of it, or until it stopped)
    compute_s: dict[str, float] = field(default_factory=dict)
    #: units and expected seconds of every lease granted, per kind
    chunk_units: dict[str, array[int]] = field(
        default_factory=lambda: collections.defaultdict(lambda: array("q"))
    )
    chunk_seconds: dict[str, array[float]] = field(
        default_factory=lambda: collections.defaultdict(lambda: array("d"))
    )
    #: core-seconds computed per grid zone
    zone_core_s: dict[str, float] = field(default_factory=lambda: collections.defaultdict(float))
    lies: set[str] = field(default_factory=set)
    refusals: collections.Counter[str] = field(default_factory=collections.Counter)
    #: exchanges by what made the worker send them (chunks done, heartbeat, ...)
    exchange_causes: collections.Counter[str] = field(default_factory=collections.Counter)
    #: (time, change) of the pool's capacity, in reference cores
    capacity_steps: list[tuple[float, float]] = field(default_factory=list)
    capacity: float = 0.0
    online: int = 0
    in_play: int = 0
    exchanges_total: int = 0
    results_total: int = 0
    cpu_total_s: float = 0.0
    _period_results: int = 0
    _period_exchanges: int = 0
    _period_cpu_s: float = 0.0
    _lease_zone: dict[str, str] = field(default_factory=dict)

    def job_arrived(self, job: Job, spec: JobSpec, speed: float) -> None:
        self.jobs[job.job_id] = JobRecord(
            job.job_id, job.kind, spec.name, job.total_units, job.created_s, job.total_units / speed
        )

    def job_ended(self, job: Job) -> None:
        record = self.jobs[job.job_id]
        record.ended_s, record.state = job.finished_s, job.state.value

    def capacity_changed(self, now: float, change: float, online_change: int = 0) -> None:
        """The pool's compute changed by ``change`` reference cores (a worker came, went,
        paused or resumed), and its workers online by ``online_change``."""
        self.capacity += change
        self.online += online_change
        self.capacity_steps.append((now, change))

    def granted(self, grant: LeaseGrant, duration_s: float, worker: VirtualWorker) -> None:
        self.chunk_units[grant.kind].append(grant.stop - grant.start)
        self.chunk_seconds[grant.kind].append(duration_s)
        self.in_play += 1
        if worker.zone:
            self._lease_zone[grant.lease_id] = worker.zone

    def computed(self, lease_id: str, core_s: float, complete: bool) -> None:
        self.compute_s[lease_id] = core_s
        self.in_play -= 1
        zone = self._lease_zone.pop(lease_id, "")
        if zone:
            self.zone_core_s[zone] += core_s

    def lied(self, lease_id: str) -> None:
        self.lies.add(lease_id)

    def refused(self, exc: HydraError) -> None:
        self.refusals[type(exc).__name__] += 1

    def exchanged(
        self, cpu_s: float, results: int, outcome: ExchangeOutcome, cause: str = ""
    ) -> None:
        self.exchange_causes[cause] += 1
        self._period_exchanges += 1
        self._period_results += results
        self._period_cpu_s += cpu_s

    def sample(self, now: float, simulation: Simulation) -> None:
        config = self.store.config
        self.samples.append(
            Sample(
                now,
                self._period_results,
                self._period_exchanges,
                self._period_cpu_s,
                self.online,
                self.capacity,
                self.store.chunk_target_s(config.target_chunk_s, now),
                self.in_play,
            )
        )
        self.exchanges_total += self._period_exchanges
        self.results_total += self._period_results
        self.cpu_total_s += self._period_cpu_s
        self._period_results = self._period_exchanges = 0
        self._period_cpu_s = 0.0
