"""Grid-aware dispatch as the store applies it: the pure policy of
:mod:`hydracompute.core.carbon` fed with the pool's zones, the jobs' remaining work and an
:class:`~hydracompute.core.carbon.IntensityView`.

What it keeps in memory is a cache this process may lose, never the truth: each job kind's
limit for ``LIMIT_CACHE_S`` (the slots behind it move in steps of minutes), and
the pool's speed per zone for a second. Worker zones and job deadlines are in the database,
so every coordinator sharing it reaches the same decisions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from hydracompute.core import carbon
from hydracompute.core.carbon import CarbonMode, IntensityView
from hydracompute.core.carbon_plan import (
    BURST_SHARE,
    PLAN_MARGIN,
    Due,
    deadline_guard_s,
    plan_limit,
)
from hydracompute.core.models import Job, JobState, Worker
from hydracompute.store.backend import Backend

#: How long a job kind's limit is reused.
LIMIT_CACHE_S = 30.0
#: How long the pool's speed per zone is reused.
ZONE_SPEED_CACHE_S = 1.0
#: Jobs read when summing the work in hand or submitted lately, at most.
MAX_JOBS_AHEAD = 1000
#: The window over which the pool's recent load is reckoned.
LOAD_WINDOW_S = 24 * 3600.0


@dataclass
class GridDispatch:
    """The store's carbon side: which workers may take a deadline job's work now, and the
    intensities emissions are counted at.

    Args:
        view: grid intensities (``None``: no source, every job carbon-blind, no CO2).
        lease_ttl_s: how recently a worker must have been seen to count in the pool, and
            how long a vanished holder's chunk waits before it is given again.
        wait_s: the longest a worker's request is held (a held worker learns that it may
            take the work at its next exchange).
        chunk_target: the chunk time a job asking for a target is sized for now (the
            pool's load control), given the target and the time; ``None``: the target.
        margin: see :data:`hydracompute.core.carbon_plan.PLAN_MARGIN`.
    """

    view: IntensityView | None
    lease_ttl_s: float
    wait_s: float = 0.0
    chunk_target: Callable[[float, float], float] | None = None
    margin: float = PLAN_MARGIN
    #: By kind: when the limit was worked out, the limit, and the jobs it planned for.
    _limits: dict[str, tuple[float, float | None, frozenset[str]]] = field(default_factory=dict)
    _speeds: dict[str, tuple[float, dict[str, float]]] = field(default_factory=dict)

    def intensity(self, zone: str, now: float) -> float:
        """A zone's intensity now (0 without a source: no CO2 is counted)."""
        return 0.0 if self.view is None else self.view.intensity(zone, now)

    def zone_speeds(self, db: Backend, kind: str, now: float) -> dict[str, float]:
        cached = self._speeds.get(kind)
        if cached is not None and 0 <= now - cached[0] < ZONE_SPEED_CACHE_S:
            return cached[1]
        speeds = db.zone_speeds(kind, now - self.lease_ttl_s)
        self._speeds[kind] = (now, speeds)
        return speeds

    def pool_intensity(self, db: Backend, kind: str, now: float) -> float | None:
        """The pool's intensity now for ``kind``, averaged over its zones by their cores'
        speed, or by their cores before any speed is learnt (``None``: no source, or no
        online worker of the kind)."""
        if self.view is None:
            return None
        speeds = dict(self.zone_speeds(db, kind, now))
        if not speeds:  # no speed learnt yet (a new pool): the online cores weigh
            for w in db.list_workers():
                if w.online(now, self.lease_ttl_s) and not w.barred and kind in w.kinds:
                    speeds[w.grid_zone] = speeds.get(w.grid_zone, 0.0) + w.cores
        mean = carbon.mean_intensity(speeds, {z: self.intensity(z, now) for z in speeds})
        return None if mean != mean else mean  # NaN: nobody to average over

    def limit(self, db: Backend, job: Job, now: float) -> float | None:
        """The highest intensity at which a worker may take ``job``'s work now, the same for
        every job of its kind: the cleanest schedule of all the work of the kind in hand
        and of the work the recent load says will arrive (see
        :func:`hydracompute.core.carbon_plan.plan_limit`); ``None``: every worker."""
        cached = self._limits.get(job.kind)
        if cached is not None and 0 <= now - cached[0] < LIMIT_CACHE_S and job.job_id in cached[2]:
            return cached[1]
        assert self.view is not None
        view = self.view
        speeds = self.zone_speeds(db, job.kind, now)
        speed = sum(speeds.values())
        running = db.list_jobs(frozenset({JobState.RUNNING}), MAX_JOBS_AHEAD)
        if all(other.job_id != job.job_id for other in running):
            running.append(job)
        # Kept in hand before every deadline: the longest chunks of the kind's jobs, as
        # the pool sizes them now, and what else stands between the last work planned
        # and its result (see deadline_guard_s).
        target_s = max(o.target_chunk_s for o in running if o.kind == job.kind)
        chunk_s = target_s if self.chunk_target is None else self.chunk_target(target_s, now)
        guard_s = deadline_guard_s(chunk_s, self.lease_ttl_s, self.wait_s, LIMIT_CACHE_S)
        due: list[Due] = []
        relative: list[float] = []
        for other in running:
            left = other.total_units - other.units_done
            if other.kind != job.kind or left <= 0 or speed <= 0:
                continue
            if other.carbon is CarbonMode.PREFER_CLEAN and other.deadline_s is not None:
                due.append(Due(left, other.deadline_s))
                relative.append(other.deadline_s - other.created_s)
            else:  # carbon-blind work takes the cores as soon as it can
                due.append(Due(left, now + guard_s + max(left / speed, carbon.DEFAULT_STEP_S)))
        found: float | None = None
        if due and relative:
            relative_s = sum(relative) / len(relative)
            # As far as the last deadline in hand, or a job arriving now.
            horizon = max(max(d.deadline_s for d in due), now + relative_s)
            zones = [
                (units_per_s, [(p.time_s, p.gco2_per_kwh) for p in view.forecast(z, now, horizon)])
                for z, units_per_s in speeds.items()
            ]
            load, largest = self._recent_load(db, job.kind, speed, now)
            arriving = min(load, carbon.MAX_ARRIVING_SHARE)
            found = plan_limit(
                zones,
                due,
                now,
                carbon.DEFAULT_STEP_S,
                margin=self.margin,
                guard_s=guard_s,
                arriving_units_per_s=arriving * speed,
                arriving_deadline_s=relative_s,
                burst_units=BURST_SHARE * largest,
            )
        self._limits[job.kind] = (now, found, frozenset(j.job_id for j in running))
        return found

    def may_take(self, db: Backend, job: Job, worker: Worker, now: float) -> bool:
        """Whether ``worker`` may take ``job``'s work now: always for a carbon-blind job."""
        if job.carbon is not CarbonMode.PREFER_CLEAN or job.deadline_s is None:
            return True
        if self.view is None:
            return True
        limit = self.limit(db, job, now)
        return carbon.may_take(limit, self.intensity(worker.grid_zone, now))

    @staticmethod
    def _recent_load(db: Backend, kind: str, units_per_s: float, now: float) -> tuple[float, float]:
        """The work of the kind submitted over the last ``LOAD_WINDOW_S``, as a share of
        what the pool computes in that time (the capacity later jobs are expected to
        take), and the work of the largest of those jobs (the burst kept room for)."""
        if units_per_s <= 0:
            return 0.0, 0.0
        since = now - LOAD_WINDOW_S
        recent = [
            j.total_units
            for j in db.list_jobs(None, MAX_JOBS_AHEAD, created_since=since)
            if j.kind == kind
        ]
        return sum(recent) / (units_per_s * LOAD_WINDOW_S), float(max(recent, default=0))
