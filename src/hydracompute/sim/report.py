"""The report of a run: a JSON-ready dict built from the recorder and the store's records.

Every figure outside ``measured`` depends only on the scenario and the seed; ``measured``
holds what the machine running the simulation measured (CPU per exchange, wall time).
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from hydracompute.core.credit import Grouping
from hydracompute.core.models import JobState, LeaseState
from hydracompute.sim.carbon_report import carbon_report
from hydracompute.sim.recorder import Recorder
from hydracompute.sim.standin import StandInKind, true_value

if TYPE_CHECKING:
    from hydracompute.sim.engine import Simulation

#: Kinds of compute a lease's core-seconds are counted as, by how the lease ended.
LOST_STATES = {
    LeaseState.EXPIRED: "expired",
    LeaseState.RETURNED: "returned",
    LeaseState.ABANDONED: "abandoned",
}


def build_report(simulation: Simulation, seed: int, wall_s: float) -> dict[str, Any]:
    recorder = simulation.recorder
    scenario = simulation.scenario
    jobs = [vars(r).copy() for r in recorder.jobs.values()]
    first = min((j["arrived_s"] for j in jobs), default=0.0)
    ended = [j["ended_s"] for j in jobs if j["ended_s"] is not None]
    all_ended = len(ended) == len(jobs)
    last = max(ended) if all_ended and ended else simulation.now
    noise = scenario.population.chunk_noise.mean()
    ideal_end = ideal_end_s(
        [(j["arrived_s"], j["work_core_s"] * noise) for j in jobs], recorder.capacity_steps
    )
    makespan = last - first
    ideal = ideal_end - first
    wrong, missing = _check_outputs(simulation)
    work = _work(recorder, simulation)
    samples = recorder.samples
    periods = _periods(samples)
    results_per_s = [s.results / p for s, p in zip(samples[1:], periods, strict=True)]
    exchanges_per_s = [s.exchanges / p for s, p in zip(samples[1:], periods, strict=True)]
    targets = sorted({round(s.chunk_target_s, 6) for s in samples})
    config = scenario.config
    allowed = config.capacity_results_per_s * config.load_share
    useful = work["core_s"]["useful"]
    verification = work["core_s"]["verification"]
    report: dict[str, Any] = {
        "scenario": scenario.name,
        "seed": seed,
        "workers": scenario.population.count,
        "saboteurs": sum(w.liar for w in simulation.workers),
        "virtual_s": simulation.now,
        "all_jobs_ended": all_ended,
        "makespan_s": makespan,
        "ideal_makespan_s": ideal,
        "efficiency": ideal / makespan if makespan > 0 else 1.0,
        "jobs": jobs,
        "work": work,
        "verification_overhead": verification / useful if useful else 0.0,
        "wrong_chunks_accepted": wrong,
        "units_missing": missing,
        "lies_sent": len(recorder.lies),
        "refused_exchanges": dict(sorted(recorder.refusals.items())),
        "results": {
            "total": recorder.results_total,
            "max_per_s": max(results_per_s, default=0.0),
            "mean_per_s": recorder.results_total / max(simulation.now, 1e-9),
            "allowed_per_s": allowed,
            "capacity_per_s": config.capacity_results_per_s,
        },
        "exchanges": {
            "total": recorder.exchanges_total,
            "max_per_s": max(exchanges_per_s, default=0.0),
            "by_cause": dict(sorted(recorder.exchange_causes.items())),
        },
        "chunk_targets_s": targets,
        "series": {
            "time_s": [s.time_s for s in samples[1:]],
            "results_per_s": results_per_s,
            "exchanges_per_s": exchanges_per_s,
            "workers_online": [s.workers_online for s in samples[1:]],
            "capacity_cores": [s.capacity for s in samples[1:]],
            "chunk_target_s": [s.chunk_target_s for s in samples[1:]],
            "leases_in_play": [s.leases_in_play for s in samples[1:]],
        },
        "chunk_sizes": _chunk_sizes(recorder),
        "credit": _credit(simulation),
        "zones_core_s": dict(sorted(recorder.zone_core_s.items())),
        "carbon": carbon_report(simulation),
        "measured": {
            "wall_s": wall_s,
            "store_cpu_s": recorder.cpu_total_s,
            "cpu_per_exchange_us": 1e6 * recorder.cpu_total_s / max(recorder.exchanges_total, 1),
            "cpu_per_exchange_us_series": [
                1e6 * s.cpu_s / s.exchanges if s.exchanges else 0.0 for s in samples[1:]
            ],
            "backend": scenario.backend,
        },
    }
    return report


def _periods(samples: Sequence[Any]) -> list[float]:
    return [max(b.time_s - a.time_s, 1e-9) for a, b in itertools.pairwise(samples)]


def ideal_end_s(arrivals: list[tuple[float, float]], steps: list[tuple[float, float]]) -> float:
    """When a perfect scheduler would finish: work (reference core-seconds) arriving at
    given times, drained by the pool's capacity (reference cores) as it changed, with no
    overhead, no lost work and no waiting. The pool's last capacity holds after the run."""
    events = sorted([(t, 0, w) for t, w in arrivals] + [(t, 1, c) for t, c in steps])
    if not arrivals:
        return 0.0
    last_arrival = max(t for t, _ in arrivals)
    queue = capacity = 0.0
    now = events[0][0]
    for t, what, amount in events:
        if queue > 0 and capacity > 0 and t > now:
            drained = capacity * (t - now)
            if drained >= queue and now >= last_arrival:
                return now + queue / capacity
            queue = max(queue - drained, 0.0)
        now = t
        if what == 0:
            queue += amount
        else:
            capacity += amount
    if queue <= 0:
        return now
    return now + queue / capacity if capacity > 0 else math.inf


def _work(recorder: Recorder, simulation: Simulation) -> dict[str, Any]:
    """Core-seconds computed, by what became of them."""
    backend = simulation.store.backend
    totals = dict.fromkeys(
        (
            "useful",
            "verification",
            "lies",
            "rejected_honest",
            "superseded",
            "expired",
            "returned",
            "abandoned",
            "unfinished",
        ),
        0.0,
    )
    backups = 0.0
    accepted: set[tuple[str, int]] = set()
    with backend.transaction():
        for lease_id in sorted(recorder.compute_s):
            core_s = recorder.compute_s[lease_id]
            lease = backend.get_lease(lease_id)
            if lease is None:
                continue
            if lease.backup:
                backups += core_s
            state = lease.state
            if lease_id in recorder.lies and state is not LeaseState.DONE:
                category = "lies"
            elif state in LOST_STATES:
                category = LOST_STATES[state]
            elif lease.spot_check:
                category = "verification"
            elif state is LeaseState.DONE:
                key = (lease.job_id, lease.chunk_index)
                category = "verification" if key in accepted else "useful"
                accepted.add(key)
            elif state is LeaseState.INVALID:
                category = "rejected_honest"
            elif state is LeaseState.SUPERSEDED:
                category = "superseded"
            else:
                category = "unfinished"
            totals[category] += core_s
    total = sum(totals.values())
    return {
        "core_s": totals,
        "shares": {k: v / total if total else 0.0 for k, v in totals.items()},
        "total_core_s": total,
        "backup_core_s": backups,
        "wasted_share": (
            sum(totals[k] for k in ("superseded", "expired", "returned", "abandoned")) / total
            if total
            else 0.0
        ),
    }


def _check_outputs(simulation: Simulation) -> tuple[int, int]:
    """Accepted outputs that differ from the truth, and units of ended jobs with no output
    (a chunk lost)."""
    wrong = missing = 0
    store = simulation.store
    for job_id in simulation.job_ids:
        job = store.get_job(job_id)
        kind = store.kinds.get(job.kind)
        assert isinstance(kind, StandInKind)
        key = kind.key(job.params)
        covered = 0
        for output in store.job_outputs(job_id):
            covered += output.stop - output.start
            if output.output.get("value") != true_value(key, output.start, output.stop):
                wrong += 1
        if job.state is JobState.DONE:
            missing += job.total_units - covered
    return wrong, missing


def _quantiles(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def at(q: float) -> float:
        return float(ordered[min(int(q * len(ordered)), len(ordered) - 1)])

    return {
        "count": float(len(ordered)),
        "min": float(ordered[0]),
        "p10": at(0.1),
        "p50": at(0.5),
        "p90": at(0.9),
        "max": float(ordered[-1]),
        "mean": sum(ordered) / len(ordered),
    }


#: Edges of the chunk-time histogram: 10 per decade from 1 ms to 10,000 s.
HISTOGRAM_EDGES_S = [10 ** (e / 10) for e in range(-30, 41)]


def _chunk_sizes(recorder: Recorder) -> dict[str, Any]:
    return {
        kind: {
            "units": _quantiles(recorder.chunk_units[kind]),
            "seconds": _quantiles(recorder.chunk_seconds[kind]),
            "seconds_histogram": _histogram(recorder.chunk_seconds[kind]),
        }
        for kind in sorted(recorder.chunk_units)
    }


def _histogram(values: Sequence[float]) -> dict[str, list[float]]:
    counts = [0.0] * (len(HISTOGRAM_EDGES_S) - 1)
    for value in values:
        at = bisect.bisect_right(HISTOGRAM_EDGES_S, value) - 1
        counts[min(max(at, 0), len(counts) - 1)] += 1
    return {"edges_s": HISTOGRAM_EDGES_S, "counts": counts}


def _credit(simulation: Simulation) -> dict[str, Any]:
    totals = simulation.store.credit_totals(Grouping.VOLUNTEER)
    by_volunteer = {t.key: t.credit for t in totals}
    liars = {f"volunteer-{w.volunteer}" for w in simulation.workers if w.liar}
    volunteers = sorted({f"volunteer-{w.volunteer}" for w in simulation.workers})
    credits = [by_volunteer.get(v, 0.0) for v in volunteers]
    honest = [by_volunteer.get(v, 0.0) for v in volunteers if v not in liars]
    return {
        "volunteers": len(volunteers),
        "total": sum(credits),
        "per_volunteer": _quantiles(credits),
        "honest_per_volunteer": _quantiles(honest),
        "to_saboteurs": sum(by_volunteer.get(v, 0.0) for v in liars),
        "gini": _gini(credits),
        # Largest first, at most 1,000 points (every k-th of a larger pool).
        "values": _every_kth(sorted(credits, reverse=True), 1000),
    }


def _every_kth(values: list[float], most: int) -> list[float]:
    step = max(1, -(-len(values) // most))
    return values[::step]


def _gini(values: Sequence[float]) -> float:
    ordered = sorted(values)
    n, total = len(ordered), sum(ordered)
    if n == 0 or total <= 0:
        return 0.0
    weighted = sum((i + 1) * v for i, v in enumerate(ordered))
    return (2 * weighted) / (n * total) - (n + 1) / n
