"""Grid-aware dispatch against carbon-blind dispatch of the same jobs, on the real 2020
traces: gCO2 saved, deadlines missed, and what it costs in time to completion.

A year of a pool is played in steps of 15 minutes. Each zone has the same number of
cores; jobs arrive through the year (a seeded Poisson process) at a given share of the
pool's capacity, each with a deadline. At every step each zone's cores take work from the
running jobs, oldest first, as the store hands it out (store/exchange.py), and a
``prefer-clean`` job lets a zone take its work only when the policy of
``hydracompute.core.carbon`` (its threshold over the cleanest capacity slots before the
deadline, the forecast being the trace itself) lets a worker of that zone take it.
Carbon-blind dispatch gives work to every zone as soon as it is there. Work is a fluid here
(no chunks, no worker churn, no network): this measures the policy, not the pool's
mechanics (the simulator, ``hydracompute simulate``, runs the real store).

Traces: the 2020 carbon intensity of Germany (15 min), Great Britain and France (30 min)
shipped in ``hydracompute/carbon/data`` (P. Wiesner et al., "Let's Wait Awhile",
Middleware '21, from ENTSO-E data).

    .venv/bin/python bench/bench_carbon.py [--share 0.5] [--deadline-h 12] [--json]
        [--curve 0 1 2 4 6 12 18 24] [--seed 1]
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from hydracompute.carbon.traces import TraceSource, load_traces
from hydracompute.core import carbon, carbon_plan
from hydracompute.core.carbon_plan import Piece, Window, cleanest_schedule

STEP_S = 900.0
HOUR = 3600.0
YEAR_START = datetime(2020, 1, 1, tzinfo=UTC).timestamp()
YEAR_END = datetime(2021, 1, 1, tzinfo=UTC).timestamp()
#: Cores per zone; each computes one unit of work per second and draws WATTS.
CORES_PER_ZONE = 10
WATTS = 10.0
#: A job's work, on average: this many hours of the whole pool (exponentially distributed).
MEAN_JOB_POOL_H = 1.0
#: How often a job's threshold is worked out again (the store keeps it 30 s).
LIMIT_EVERY_S = STEP_S
#: Time kept in hand before a deadline (the store's lease lifetime and threshold cache):
#: here a step, and a step of staleness.
GUARD_S = 2 * STEP_S
#: The window over which the pool's recent load is reckoned.
LOAD_WINDOW_S = 24 * HOUR
#: The plan's margin (store/grid.py's).
PLAN_MARGIN = carbon_plan.PLAN_MARGIN
#: The share of the load window's largest job the plan keeps room for, as if it arrived
#: at any moment (store/grid.py's).
BURST_SHARE = carbon_plan.BURST_SHARE


@dataclass
class Job:
    index: int
    arrival_s: float
    units: float
    deadline_s: float
    remaining: float = 0.0
    done_s: float | None = None
    limit: float | None = None
    limit_s: float = -math.inf

    def __post_init__(self) -> None:
        self.remaining = self.units


@dataclass
class Outcome:
    gco2: float = 0.0
    energy_kwh: float = 0.0
    missed: int = 0
    unfinished: int = 0
    turnaround_h: list[float] = field(default_factory=list)
    by_zone_units: dict[str, float] = field(default_factory=dict)
    missed_ids: set[int] = field(default_factory=set)

    def summary(self) -> dict[str, float]:
        times = sorted(self.turnaround_h)
        return {
            "gco2_kg": self.gco2 / 1000,
            "energy_kwh": self.energy_kwh,
            "deadlines_missed": self.missed,
            "unfinished": self.unfinished,
            "mean_turnaround_h": sum(times) / len(times) if times else 0.0,
            "p95_turnaround_h": times[int(0.95 * (len(times) - 1))] if times else 0.0,
        }


def arrivals(
    share: float, zones: Sequence[str], deadline_s: float, seed: int, poisson: bool
) -> list[Job]:
    """Jobs through 2020 whose work is ``share`` of the pool's capacity on average: each
    of ``MEAN_JOB_POOL_H`` hours of the pool's work arriving at even intervals (the
    first at a seeded time), or (``poisson``) a seeded Poisson process of jobs of
    exponentially distributed work (bursts, and a few jobs too large for their deadline)."""
    rng = random.Random(seed)
    pool_units_per_s = CORES_PER_ZONE * len(zones)
    mean_units = MEAN_JOB_POOL_H * HOUR * pool_units_per_s
    mean_gap_s = mean_units / (share * pool_units_per_s)
    jobs: list[Job] = []
    t = YEAR_START + (0.0 if poisson else rng.uniform(0, mean_gap_s))
    while True:
        if poisson:
            t += rng.expovariate(1 / mean_gap_s)
        if t >= YEAR_END - 2 * 86400:  # every job can finish within the traces
            return jobs
        units = rng.expovariate(1 / mean_units) if poisson else mean_units
        jobs.append(Job(len(jobs), t, units, t + deadline_s))
        if not poisson:
            t += mean_gap_s


def run(
    jobs: list[Job],
    zones: Sequence[str],
    source: TraceSource,
    clean: bool,
    reserve: bool = True,
    policy: str = "plan",
) -> Outcome:
    """Play the year; ``clean``: prefer-clean dispatch within each job's deadline.

    In each step the running jobs are served oldest first; a job's work is spread over the
    zones that may take it in proportion to the cores they have free (carbon-blind: every
    zone), as free workers of every zone ask for work alike.
    """
    outcome = Outcome(by_zone_units={z: 0.0 for z in zones})
    speed = float(CORES_PER_ZONE)  # units per second of each zone
    kwh_per_unit = WATTS / 3.6e6  # one unit is one core-second
    pending = jobs  # in arrival order
    running: list[Job] = []
    now, next_job = YEAR_START, 0
    while now < YEAR_END and (next_job < len(pending) or running):
        while next_job < len(pending) and pending[next_job].arrival_s < now + STEP_S:
            running.append(pending[next_job])
            next_job += 1
        intensity = {z: source.intensity(z, now) for z in zones}
        free = {z: speed * STEP_S for z in zones}
        pool_limit = (
            _plan_limit(running, zones, source, now, jobs if reserve else [])
            if clean and policy == "plan"
            else None
        )
        for job in running:  # oldest first
            allowed = [z for z in zones if free[z] > 0]
            if clean:
                limit = (
                    pool_limit
                    if policy == "plan"
                    else _limit(job, running, zones, source, now, jobs if reserve else [])
                )
                allowed = [z for z in allowed if carbon.may_take(limit, intensity[z])]
            if not allowed or job.remaining <= 0:
                continue
            # Work that arrives part-way through the step starts when it arrives.
            late = max(job.arrival_s - now, 0.0) / STEP_S
            room = {z: free[z] * (1 - late) for z in allowed}
            total = sum(room.values())
            taken = min(job.remaining, total)
            for z in allowed:
                part = taken * room[z] / total
                free[z] -= part
                outcome.by_zone_units[z] += part
                outcome.energy_kwh += part * kwh_per_unit
                outcome.gco2 += part * kwh_per_unit * intensity[z]
            job.remaining -= taken
            if job.remaining <= 1e-9 and job.done_s is None:
                # The zones' cores took the step's work in job order.
                used = 1 - sum(free[z] for z in allowed) / (speed * STEP_S * len(allowed))
                job.done_s = now + STEP_S * used
        for job in [j for j in running if j.remaining <= 1e-9]:
            running.remove(job)
            done = job.done_s if job.done_s is not None else now + STEP_S
            outcome.turnaround_h.append((done - job.arrival_s) / HOUR)
            if done > job.deadline_s + 1e-6:
                outcome.missed += 1
                outcome.missed_ids.add(job.index)
        now += STEP_S
    outcome.unfinished = len(running) + len(pending) - next_job
    return outcome


def optimum(jobs: Sequence[Job], zones: Sequence[str], source: TraceSource) -> dict[str, float]:
    """The least CO2 of any schedule of ``jobs`` that meets every deadline, knowing every
    job and the whole trace in advance (the offline optimum: core/carbon_plan.py, exact for
    jobs that share one relative deadline). Time is cut at every step and at every job's
    arrival and deadline; the pieces are each zone's cores in each cut."""
    cuts = {j.arrival_s for j in jobs} | {j.deadline_s for j in jobs}
    first, last = min(cuts), max(cuts)
    t = YEAR_START + math.floor((first - YEAR_START) / STEP_S) * STEP_S
    while t < last:
        cuts.add(t)
        t += STEP_S
    times = sorted(c for c in cuts if first <= c <= last)
    index = {t: i for i, t in enumerate(times)}
    pieces = [
        Piece(i, source.intensity(z, times[i]), CORES_PER_ZONE * (times[i + 1] - times[i]))
        for i in range(len(times) - 1)
        for z in zones
    ]
    windows = [Window(j.units, index[j.arrival_s], index[j.deadline_s]) for j in jobs]
    used = cleanest_schedule(len(times) - 1, pieces, windows)
    kwh_per_unit = WATTS / 3.6e6
    grams = sum(u * p.gco2_per_kwh for u, p in zip(used, pieces, strict=True)) * kwh_per_unit
    return {"gco2_kg": grams / 1000, "unplaced_units": sum(j.units for j in jobs) - sum(used)}


def largest_recent(jobs: Sequence[Job], now: float, window_s: float = LOAD_WINDOW_S) -> float:
    """The work of the largest job submitted over the last ``window_s`` (``jobs`` in
    arrival order)."""
    recent_load(jobs, ["-"], now, window_s)  # the arrival times, kept
    times = _PREFIX[id(jobs)][0]
    first = bisect.bisect_left(times, now - window_s)
    last = bisect.bisect_left(times, now)
    return max((j.units for j in jobs[first:last]), default=0.0)


def recent_load(
    jobs: Sequence[Job], zones: Sequence[str], now: float, window_s: float = LOAD_WINDOW_S
) -> float:
    """The work submitted over the last ``window_s`` as a share of the pool's capacity in
    that time (as the store reckons it from its jobs table). ``jobs`` in arrival order."""
    key = id(jobs)
    if key not in _PREFIX:
        sums = [0.0]
        for j in jobs:
            sums.append(sums[-1] + j.units)
        _PREFIX[key] = ([j.arrival_s for j in jobs], sums)
    times, sums = _PREFIX[key]
    first = bisect.bisect_left(times, now - window_s)
    last = bisect.bisect_left(times, now)
    return (sums[last] - sums[first]) / (CORES_PER_ZONE * len(zones) * window_s)


_PREFIX: dict[int, tuple[list[float], list[float]]] = {}


def _limit(
    job: Job,
    running: list[Job],
    zones: Sequence[str],
    source: TraceSource,
    now: float,
    all_jobs: Sequence[Job],
) -> float | None:
    """The job's threshold, as the store works it out (store/grid.py): the remaining work
    of the jobs ahead of it (older ones here: they are served first) counts with its own."""
    if now - job.limit_s < LIMIT_EVERY_S:
        return job.limit
    ahead = sum(j.remaining for j in running if j is not job)
    outlooks = [
        carbon.ZoneOutlook(z, float(CORES_PER_ZONE), source.forecast(z, now, job.deadline_s))
        for z in zones
    ]
    job.limit = carbon.threshold(
        outlooks,
        job.remaining + ahead,
        now,
        job.deadline_s,
        guard_s=GUARD_S,
        arriving_share=recent_load(all_jobs, zones, now) if all_jobs else 0.0,
    )
    job.limit_s = now
    return job.limit


def _plan_limit(
    running: list[Job],
    zones: Sequence[str],
    source: TraceSource,
    now: float,
    all_jobs: Sequence[Job],
) -> float | None:
    """The pool's limit, as the store works it out (store/grid.py): the cleanest schedule
    of all the work in hand and of the work the recent load says will arrive
    (core/carbon_plan.py), worked out at each step (the store: every 30 s)."""
    due = [carbon_plan.Due(j.remaining, j.deadline_s) for j in running if j.remaining > 0]
    if not due:
        return None
    newest = running[-1]
    relative = newest.deadline_s - newest.arrival_s
    horizon = max(max(d.deadline_s for d in due), now + relative)
    outlooks = [
        (
            float(CORES_PER_ZONE),
            [(p.time_s, p.gco2_per_kwh) for p in source.forecast(z, now, horizon)],
        )
        for z in zones
    ]
    pool = float(CORES_PER_ZONE * len(zones))
    load = recent_load(all_jobs, zones, now) if all_jobs else 0.0
    return carbon_plan.plan_limit(
        outlooks,
        due,
        now,
        STEP_S,
        margin=PLAN_MARGIN,
        guard_s=GUARD_S,
        arriving_units_per_s=load * pool,
        arriving_deadline_s=relative,
        burst_units=BURST_SHARE * largest_recent(all_jobs, now) if all_jobs else 0.0,
    )


def compare(
    zones: Sequence[str],
    share: float,
    deadline_h: float,
    seed: int,
    source: TraceSource,
    poisson: bool = False,
    reserve: bool = True,
    bound: bool = True,
    policy: str = "plan",
) -> dict[str, object]:
    """The same jobs dispatched carbon-blind and prefer-clean, and the offline optimum."""
    jobs_blind = arrivals(share, zones, deadline_h * HOUR, seed, poisson)
    jobs_clean = arrivals(share, zones, deadline_h * HOUR, seed, poisson)
    began = time.perf_counter()
    blind = run(jobs_blind, zones, source, clean=False)
    clean = run(jobs_clean, zones, source, clean=True, reserve=reserve, policy=policy)
    b, c = blind.summary(), clean.summary()
    best = optimum(jobs_blind, zones, source) if bound else None
    total = sum(clean.by_zone_units.values()) or 1.0
    return {
        "zones": list(zones),
        "arrivals": "poisson" if poisson else "regular",
        "reserve": reserve,
        "policy": policy,
        "share": share,
        "deadline_h": deadline_h,
        "jobs": len(jobs_blind),
        "blind": b,
        "prefer_clean": c,
        "saved": 1 - c["gco2_kg"] / b["gco2_kg"] if b["gco2_kg"] else 0.0,
        # Deadlines blind dispatch met and prefer-clean missed (jobs too large for their
        # deadline miss it either way).
        "missed_only_clean": len(clean.missed_ids - blind.missed_ids),
        # The most any schedule meeting every deadline saves (None: not computed).
        "bound_saved": None if best is None else 1 - best["gco2_kg"] / b["gco2_kg"],
        "bound": best,
        "work_share_by_zone": {z: u / total for z, u in clean.by_zone_units.items()},
        "wall_s": time.perf_counter() - began,
    }


def line(result: dict[str, object]) -> str:
    b, c = result["blind"], result["prefer_clean"]
    assert isinstance(b, dict) and isinstance(c, dict)
    zones = "+".join(result["zones"])  # type: ignore[arg-type]
    return (
        f"{zones:>9} {result['deadline_h']:>6g} h {result['jobs']:>5} "
        f"{b['gco2_kg']:>9.1f} {c['gco2_kg']:>9.1f} {result['saved']:>7.1%} "
        f"{_percent(result['bound_saved']):>7} "
        f"{b['deadlines_missed']:>7}/{c['deadlines_missed']:>4}/{result['missed_only_clean']:>4} "
        f"{b['mean_turnaround_h']:>6.2f} {c['mean_turnaround_h']:>6.2f} "
        f"{b['p95_turnaround_h']:>6.2f} {c['p95_turnaround_h']:>6.2f}"
    )


def _percent(share: object) -> str:
    return "-" if not isinstance(share, float) else f"{share:.1%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--share", type=float, default=0.5, help="load: share of capacity")
    parser.add_argument("--deadline-h", type=float, default=12.0)
    parser.add_argument(
        "--slack-h",
        type=float,
        nargs="*",
        default=[0, 1, 2, 4, 6, 12, 18, 24],
        help="the curve's slacks: deadline = a job's time on the whole pool + slack",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--policy",
        choices=("plan", "threshold"),
        default="plan",
        help="plan: the store's (core/carbon_plan.py); threshold: the one before it",
    )
    parser.add_argument("--no-bound", action="store_true", help="skip the offline optimum")
    parser.add_argument(
        "--sections",
        nargs="*",
        choices=("regular", "poisson", "curve"),
        default=["regular", "poisson", "curve"],
    )
    parser.add_argument(
        "--curve-zones",
        nargs="*",
        default=["DE+GB+FR", "DE", "GB"],
        help="the pools of the slack curve, zones joined by +",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    source = TraceSource(load_traces())
    everywhere, germany, britain = ("DE", "GB", "FR"), ("DE",), ("GB",)

    def row(
        zones: Sequence[str], hours: float, poisson: bool = False, reserve: bool = True
    ) -> dict[str, object]:
        return compare(
            zones,
            args.share,
            hours,
            args.seed,
            source,
            poisson,
            reserve,
            # Poisson work holds jobs too large for their deadline: no bound for all of it.
            bound=not args.no_bound and not poisson,
            policy=args.policy,
        )

    sections = {}
    if "regular" in args.sections:
        sections["regular arrivals, deadline"] = [
            row(zones, args.deadline_h) for zones in (everywhere, germany, britain)
        ]
    if "poisson" in args.sections:
        sections["Poisson arrivals of exponential work (bursts), deadline"] = [
            row(everywhere, args.deadline_h, poisson=True),
            row(everywhere, args.deadline_h, poisson=True, reserve=False),
            row(germany, args.deadline_h, poisson=True),
        ]
    if "curve" in args.sections:
        sections["savings against slack (deadline = 1 h of work + slack), regular arrivals"] = [
            row(tuple(zones.split("+")), MEAN_JOB_POOL_H + slack)
            for zones in args.curve_zones
            for slack in args.slack_h
        ]
    if args.json:
        print(json.dumps(sections, indent=1))
        return
    print(
        f"2020 traces, {CORES_PER_ZONE} cores per zone at {WATTS:g} W, jobs at "
        f"{args.share:.0%} of capacity (mean {MEAN_JOB_POOL_H:g} h of the pool), seed {args.seed}"
    )
    header = (
        f"{'zones':>9} {'deadline':>8} {'jobs':>5} {'blind kg':>9} {'clean kg':>9} "
        f"{'saved':>7} {'bound':>7} {'missed b/c/c-only':>17} {'mean h':>6} {'clean':>6} "
        f"{'p95 h':>6} {'clean':>6}"
    )
    for title, results in sections.items():
        print(f"\n{title}")
        print(header)
        for result in results:
            print(line(result) + ("" if result["reserve"] else "  (recent load not counted)"))


if __name__ == "__main__":
    main()
