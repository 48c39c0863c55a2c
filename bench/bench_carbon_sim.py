"""The fluid model of bench/bench_carbon.py against the real simulator, over the same days.

Runs the shipped scenario ``three-grids`` (or ``--scenario FILE``) through
``hydracompute.sim.simulate`` — the real store and core, virtual workers, chunks, leases —
once as it is (its jobs ``prefer-clean``) and once with every job carbon-blind, and plays
the same jobs (arrival times, work as a share of the pool, deadlines, days of the traces,
workers per zone) in the fluid model of ``bench_carbon.py``, both ways, with the offline
optimum. If the fluid model is right about the policy, the two savings agree.

Besides the CO2, it reports for each run the deadlines missed, the jobs' mean and
longest time to completion, the tightest a job came to its deadline (``least_slack_h``),
and the time the last job ended (``makespan_h``). ``--zones DE`` puts every worker on
one grid (temporal shifting only).

    .venv/bin/python bench/bench_carbon_sim.py [--scenario three-grids] [--seed 1]
        [--days N] [--zones DE [GB ...]]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections import Counter
from typing import Any

import bench_carbon as fluid
from hydracompute.carbon.traces import TraceSource, load_traces
from hydracompute.kinds import default_registry
from hydracompute.sim import load_scenario, simulate
from hydracompute.sim.scenario import Scenario


def with_mode(
    scenario: Scenario, mode: str, days: float | None, zones: list[str] | None = None
) -> Scenario:
    jobs = scenario.jobs
    if days is not None:
        jobs = tuple(j for j in jobs if j.arrival_s < days * 86400)
    jobs = tuple(dataclasses.replace(j, carbon=mode) for j in jobs)
    if zones:
        population = dataclasses.replace(scenario.population, zones=dict.fromkeys(zones, 1.0))
        scenario = dataclasses.replace(scenario, population=population)
    return dataclasses.replace(scenario, jobs=jobs)


def simulated(scenario: Scenario, seed: int) -> dict[str, Any]:
    began = time.perf_counter()
    report, simulation = simulate(scenario, seed)
    carbon = report["carbon"]
    deadlines = {j.job_id: j.deadline_s for j in simulation.store.list_jobs(limit=10**6)}
    records = list(simulation.recorder.jobs.values())
    ended = [r for r in records if r.ended_s is not None]
    hours = sorted((r.ended_s - r.arrived_s) / 3600 for r in ended if r.ended_s is not None)
    slack = [(deadlines[r.job_id] - r.ended_s) / 3600 for r in ended if r.ended_s is not None]
    return {
        "gco2": carbon["gco2"],
        "gco2_blind_estimate": carbon["gco2_blind_estimate"],
        "deadlines_missed": carbon["deadlines_missed"],
        "mean_turnaround_h": sum(hours) / len(hours) if hours else None,
        "max_turnaround_h": hours[-1] if hours else None,
        "least_slack_h": min(slack) if slack else None,
        "makespan_h": max((r.ended_s or 0.0) for r in ended) / 3600 if ended else None,
        "chunks_by_zone": {z: v["chunks"] for z, v in carbon["zones"].items()},
        "all_jobs_ended": report["all_jobs_ended"],
        "workers_by_zone": dict(Counter(w.zone for w in simulation.workers)),
        "wall_s": time.perf_counter() - began,
    }


def fluid_jobs(scenario: Scenario, pool_units_per_s: float, zones: int) -> list[fluid.Job]:
    """The scenario's jobs in the fluid model: the same times, and the same work as a
    share of the pool (the model's pool: ``fluid.CORES_PER_ZONE`` per zone)."""
    registry = default_registry()
    start = scenario.carbon_start_s
    jobs = []
    for i, spec in enumerate(scenario.jobs):
        assert spec.deadline_s is not None
        pool_s = registry.get(spec.kind).total_units(spec.params) / pool_units_per_s
        units = pool_s * fluid.CORES_PER_ZONE * zones
        arrival = start + spec.arrival_s
        jobs.append(fluid.Job(i, arrival, units, arrival + spec.deadline_s))
    return jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", default="three-grids")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--days", type=float, default=None, help="only the jobs of N days")
    parser.add_argument("--zones", nargs="*", help="every worker on these grids instead")
    args = parser.parse_args()
    scenario = with_mode(load_scenario(args.scenario), "prefer-clean", None, args.zones)
    population = scenario.population
    zones = sorted(population.zones)
    clean = simulated(with_mode(scenario, "prefer-clean", args.days), args.seed)
    blind = simulated(with_mode(scenario, "blind", args.days), args.seed)
    workers = clean["workers_by_zone"]
    if len(set(workers.values())) != 1:
        raise SystemExit(f"the fluid model has as many cores in every zone; drawn: {workers}")
    kinds = {j.kind for j in scenario.jobs}
    assert len(kinds) == 1 and population.cores == ((1, 1.0),), "one kind, one-core workers"
    pool = population.speeds[kinds.pop()] * population.count
    source = TraceSource(load_traces())
    jobs = fluid_jobs(with_mode(scenario, "prefer-clean", args.days), pool, len(zones))
    jobs_blind = [dataclasses.replace(j) for j in jobs]
    for j in jobs_blind:
        j.remaining = j.units
    f_clean = fluid.run(jobs, zones, source, clean=True)
    f_blind = fluid.run(jobs_blind, zones, source, clean=False)
    best = fluid.optimum(jobs, zones, source)
    result = {
        "scenario": scenario.name,
        "zones": zones,
        "jobs": len(jobs),
        "simulator": {
            "saved": 1 - clean["gco2"] / blind["gco2"],
            "ledger_estimate_saved": 1 - clean["gco2"] / clean["gco2_blind_estimate"],
            "blind": blind,
            "prefer_clean": clean,
        },
        "fluid": {
            "saved": 1 - f_clean.gco2 / f_blind.gco2,
            "bound_saved": 1 - best["gco2_kg"] * 1000 / f_blind.gco2,
            "deadlines_missed": [f_blind.missed, f_clean.missed],
            "mean_turnaround_h": [
                f_blind.summary()["mean_turnaround_h"],
                f_clean.summary()["mean_turnaround_h"],
            ],
            "p95_turnaround_h": [
                f_blind.summary()["p95_turnaround_h"],
                f_clean.summary()["p95_turnaround_h"],
            ],
        },
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
