"""Grid-aware dispatch as the store applies it: the pure policy of
:mod:`hydracompute.core.carbon` fed with the pool's zones, the jobs' remaining work and an
:class:`~hydracompute.core.carbon.IntensityView`.

What it keeps in memory is a cache this process may lose, never the truth: each deadline
job's threshold for ``LIMIT_CACHE_S`` (the slots behind it move in steps of minutes), and
the pool's speed per zone for a second. Worker zones and job deadlines are in the database,
so every coordinator sharing it reaches the same decisions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hydracompute.core import carbon
from hydracompute.core.carbon import CarbonMode, IntensityView, ZoneOutlook
from hydracompute.core.models import Job, JobState, Worker
from hydracompute.store.backend import Backend

#: How long a job's threshold is reused.
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
        lease_ttl_s: how recently a worker must have been seen to count in the pool.
        margin: see :data:`hydracompute.core.carbon.DEFAULT_MARGIN`.
    """

    view: IntensityView | None
    lease_ttl_s: float
    margin: float = carbon.DEFAULT_MARGIN
    _limits: dict[str, tuple[float, float | None]] = field(default_factory=dict)
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
        """The job's threshold (see :func:`hydracompute.core.carbon.threshold`)."""
        cached = self._limits.get(job.job_id)
        if cached is not None and 0 <= now - cached[0] < LIMIT_CACHE_S:
            return cached[1]
        assert self.view is not None and job.deadline_s is not None
        view, deadline_s = self.view, job.deadline_s
        outlooks = [
            ZoneOutlook(zone, speed, view.forecast(zone, now, deadline_s))
            for zone, speed in self.zone_speeds(db, job.kind, now).items()
        ]
        running = db.list_jobs(frozenset({JobState.RUNNING}), MAX_JOBS_AHEAD)
        remaining = job.total_units - job.units_done + self._work_ahead(running, job)
        speed = sum(o.units_per_s for o in outlooks)
        # Kept in hand: a lease's lifetime (the last chunks) and this cache's.
        guard_s = self.lease_ttl_s + LIMIT_CACHE_S
        found = carbon.threshold(
            outlooks,
            remaining,
            now,
            deadline_s,
            self.margin,
            guard_s=guard_s,
            arriving_share=self._recent_load(db, job.kind, speed, now),
        )
        if len(self._limits) > MAX_JOBS_AHEAD:
            self._limits.clear()
        self._limits[job.job_id] = (now, found)
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
    def _work_ahead(running: list[Job], job: Job) -> float:
        """The other running jobs' work of the kind: the same cores are to do it, and what
        is held back piles up where later jobs will need the cores (bench/bench_carbon.py
        measured deadlines missed when only older jobs counted)."""
        return sum(
            other.total_units - other.units_done
            for other in running
            if other.job_id != job.job_id and other.kind == job.kind
        )

    @staticmethod
    def _recent_load(db: Backend, kind: str, units_per_s: float, now: float) -> float:
        """The work of the kind submitted over the last ``LOAD_WINDOW_S``, as a share of
        what the pool computes in that time: the capacity later jobs are expected to take."""
        if units_per_s <= 0:
            return 0.0
        recent = [
            j.total_units
            for j in db.list_jobs(None, MAX_JOBS_AHEAD)
            if j.kind == kind and j.created_s >= now - LOAD_WINDOW_S
        ]
        return sum(recent) / (units_per_s * LOAD_WINDOW_S)
