"""Fair share between submitters: which running job a worker serves first.

Every submitter (owner: the API key that submitted the job) with runnable work is entitled
to a share of the pool's compute in proportion to its *weight* (1 unless an admin set
another on the key). What an owner has had is its *usage*: the compute time of every copy
granted for its jobs (replicas, backups and re-issues included: they all take a core),
estimated at the grant as the chunk's units over the worker's learnt speed per core, in
core-seconds — so a π job and a Mandelbrot job compare, whatever their units. Usage
decays exponentially (half-life :attr:`FairSharePolicy.half_life_s`), so it measures the
recent past: an owner idle for a few half-lives starts again as a newcomer.

A worker is offered the running jobs of the owner whose usage per weight is lowest first
(ties: the owner whose oldest running job is oldest), then the next owner's, and so on;
within an owner, higher ``priority`` first, then oldest first. A newcomer has no usage, so
its first chunks go out at the next exchange, and the owners then alternate as their
usages meet; an owner without runnable work takes no part, so its share goes to the
others. Spot checks (copies testing a worker against a known answer) are the pool's cost,
charged to nobody.

Pure: times are arguments (``now``), usage and weights are plain mappings the store keeps.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

#: Weights an admin may give an API key, at least and at most.
MIN_WEIGHT = 0.01
MAX_WEIGHT = 1000.0
#: Priorities a job may ask for, at least and at most (higher runs first, within its owner).
MIN_PRIORITY = -100
MAX_PRIORITY = 100


@dataclass(frozen=True)
class Usage:
    """An owner's decayed usage, in core-seconds, as of ``as_of_s``."""

    usage_s: float = 0.0
    as_of_s: float = 0.0


@dataclass(frozen=True)
class RunningJob:
    """What the policy needs of a running job (the store lists them oldest first)."""

    job_id: str
    kind: str
    owner: str
    priority: int = 0


@dataclass(frozen=True)
class OwnerShare:
    """An owner's standing, for display.

    Attributes:
        weight: its weight (1 unless an admin set another).
        share: the fraction of the pool it is entitled to now: its weight over the weights
            of every owner with running jobs (0 if it has none).
        usage_s: its decayed usage now, in core-seconds.
        usage_fraction: its part of every owner's decayed usage (what it has had lately).
        running_jobs: how many of its jobs are running.
    """

    owner: str
    weight: float
    share: float
    usage_s: float
    usage_fraction: float
    running_jobs: int


@dataclass(frozen=True)
class FairSharePolicy:
    """The pool's fair-share tunable: the half-life of usage, in seconds (how recent the
    past that counts is; also about how long a newcomer gets the whole pool when the
    others have been using it all along)."""

    half_life_s: float = 60.0

    def __post_init__(self) -> None:
        if not 1.0 <= self.half_life_s <= 7 * 86400:
            raise ValueError("half_life_s must be between 1 s and a week")

    def usage_at(self, usage: Usage | None, now: float) -> float:
        """``usage`` decayed to ``now`` (never grown: a clock that stepped back decays
        nothing)."""
        if usage is None or usage.usage_s <= 0.0:
            return 0.0
        elapsed_s = max(0.0, now - usage.as_of_s)
        return usage.usage_s * math.exp2(-elapsed_s / self.half_life_s)

    def charged(self, usage: Usage | None, cost_s: float, now: float) -> Usage:
        """``usage`` decayed to ``now`` with ``cost_s`` core-seconds added."""
        return Usage(self.usage_at(usage, now) + max(0.0, cost_s), now)

    def job_order(
        self,
        jobs: Sequence[RunningJob],
        usage: Mapping[str, Usage],
        weights: Mapping[str, float],
        now: float,
    ) -> list[RunningJob]:
        """``jobs`` (running, oldest first) in the order a worker is offered them: owners
        by usage per weight, lowest first (ties: oldest job first); within an owner, by
        priority, highest first, then oldest first."""
        if not jobs:
            return []
        owner, priority = jobs[0].owner, jobs[0].priority
        for job in jobs:  # one owner, one priority (most pools, most of the time)?
            if job.owner != owner or job.priority != priority:
                break
        else:
            return list(jobs)
        by_owner: dict[str, list[RunningJob]] = {}
        for job in jobs:
            by_owner.setdefault(job.owner, []).append(job)
        if len(by_owner) == 1:
            mine = next(iter(by_owner.values()))
            return _by_priority(mine)
        # Insertion order of by_owner is the age of each owner's oldest running job.
        arrival = {owner: position for position, owner in enumerate(by_owner)}
        owners = sorted(
            by_owner,
            key=lambda o: (self.usage_at(usage.get(o), now) / weight_of(weights, o), arrival[o]),
        )
        return [job for owner in owners for job in _by_priority(by_owner[owner])]

    def shares(
        self,
        jobs: Iterable[RunningJob],
        usage: Mapping[str, Usage],
        weights: Mapping[str, float],
        now: float,
    ) -> list[OwnerShare]:
        """Every owner with running jobs or usage left, largest entitlement then largest
        usage first."""
        running: dict[str, int] = {}
        for job in jobs:
            running[job.owner] = running.get(job.owner, 0) + 1
        owners = set(running) | {o for o, u in usage.items() if self.usage_at(u, now) > 0}
        now_usage = {o: self.usage_at(usage.get(o), now) for o in owners}
        total_weight = sum(weight_of(weights, o) for o in running)
        total_usage = sum(now_usage.values())
        found = [
            OwnerShare(
                owner=o,
                weight=weight_of(weights, o),
                share=weight_of(weights, o) / total_weight if o in running else 0.0,
                usage_s=now_usage[o],
                usage_fraction=now_usage[o] / total_usage if total_usage > 0 else 0.0,
                running_jobs=running.get(o, 0),
            )
            for o in owners
        ]
        found.sort(key=lambda s: (-s.share, -s.usage_s, s.owner))
        return found


def weight_of(weights: Mapping[str, float], owner: str) -> float:
    """An owner's weight: its key's, 1 if it has none of its own (or no key)."""
    return min(max(weights.get(owner, 1.0), MIN_WEIGHT), MAX_WEIGHT)


def grant_cost_s(units: int, speed_per_core: float | None, target_chunk_s: float) -> float:
    """The core-seconds a copy of ``units`` is charged when granted: at the worker's learnt
    speed per core, or ``target_chunk_s`` for a worker of unknown speed (its probe chunk is
    small; the charge is an upper bound)."""
    if speed_per_core is None or speed_per_core <= 0:
        return target_chunk_s
    return units / speed_per_core


def _by_priority(jobs: list[RunningJob]) -> list[RunningJob]:
    """Higher priority first; the sort is stable, so equal priorities stay oldest first."""
    first = jobs[0].priority
    for job in jobs:  # a loop, not all(): this runs on every exchange
        if job.priority != first:
            return sorted(jobs, key=lambda job: -job.priority)
    return jobs
