"""The fluid model of bench/bench_carbon.py against the real simulator, over the same days.

Runs the shipped scenario ``three-grids`` (or ``--scenario FILE``) through
``hydracompute.sim.simulate`` — the real store and core, virtual workers, chunks, leases —
once as it is (its jobs ``prefer-clean``) and once with every job carbon-blind, and plays
the same jobs (arrival times, work as a share of the pool, deadlines, days of the traces,
workers per zone) in the fluid model of ``bench_carbon.py``, both ways, with the offline
optimum. If the fluid model is right about the policy, the two savings agree.

Besides the CO2, it reports for each run the deadlines missed, the jobs' mean and
longest time to completion, the tightest a job came to its deadline (``least_slack_h``),
the time the last job ended (``makespan_h``) and the simulator's CPU time. ``--zones DE``
puts every worker on one grid (temporal shifting only).

``--days N`` keeps the jobs arriving over the first N days, continuing the scenario's
series of jobs (its first ``[[jobs]]`` entry, at its interval) as far as that when the
scenario has fewer; ``--start 2020-01-01 --days 365.5`` is the whole of 2020 (a leap
year: the simulator runs at most 366 days, and the last jobs' 12 h must fit in it).
``--parallel`` runs the two simulations in two processes; ``--progress FILE`` appends,
every virtual day of each, a JSON line of what it has emitted and done so far (the
figures of a run stopped part-way); ``--no-fluid`` skips the fluid model, ``--no-sim``
the simulator.

``--slack-h 0 2 6 12 24`` runs the whole comparison once per slack, each job due its own
work's time on the whole pool plus the slack (``bench_carbon.py``'s curve), and prints a
table of the savings and what they cost in time (and each slack's figures as a JSON line
on stderr).

    .venv/bin/python bench/bench_carbon_sim.py [--scenario three-grids] [--seed 1]
        [--days N] [--start 2020-01-01] [--zones DE [GB ...]] [--parallel]
        [--progress FILE] [--no-fluid | --no-sim] [--slack-h H [H ...]]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bench_carbon as fluid
from hydracompute.carbon.traces import TraceSource, load_traces
from hydracompute.core.models import Job
from hydracompute.kinds import default_registry
from hydracompute.sim import load_scenario, simulate
from hydracompute.sim.engine import Simulation
from hydracompute.sim.recorder import Recorder
from hydracompute.sim.scenario import MAX_DURATION_S, JobSpec, Scenario

DAY_S = 86400.0


def with_mode(
    scenario: Scenario, mode: str, days: float | None, zones: list[str] | None = None
) -> Scenario:
    jobs = scenario.jobs
    if days is not None:
        jobs = tuple(j for j in _continued(jobs, days * DAY_S) if j.arrival_s < days * DAY_S)
    last_deadline = max(j.arrival_s + (j.deadline_s or 0.0) for j in jobs)
    # Long enough for every job (longer deadlines too), no longer than the scenario's own
    # when it is.
    longest = min(max(scenario.max_duration_s, last_deadline + 3600.0), MAX_DURATION_S)
    scenario = dataclasses.replace(scenario, max_duration_s=longest)
    jobs = tuple(dataclasses.replace(j, carbon=mode) for j in jobs)
    if zones:
        population = dataclasses.replace(scenario.population, zones=dict.fromkeys(zones, 1.0))
        scenario = dataclasses.replace(scenario, population=population)
    return dataclasses.replace(scenario, jobs=jobs)


def _continued(jobs: tuple[JobSpec, ...], until_s: float) -> tuple[JobSpec, ...]:
    """The scenario's jobs, its first series (the jobs named as the first, ``name-N``, at a
    regular interval) continued at that interval until ``until_s``."""
    if len(jobs) < 2:
        return jobs
    stem = jobs[0].name.rsplit("-", 1)[0]
    series = [j for j in jobs if j.name.rsplit("-", 1)[0] == stem]
    every_s = series[1].arrival_s - series[0].arrival_s
    if every_s <= 0:
        return jobs
    added = []
    n, at = len(series), series[-1].arrival_s + every_s
    while at < until_s:
        added.append(dataclasses.replace(series[0], arrival_s=at, name=f"{stem}-{n}"))
        n, at = n + 1, at + every_s
    return jobs + tuple(added)


@dataclasses.dataclass
class DailyRecorder(Recorder):
    """A recorder that appends, every virtual day, what the run has emitted and done so
    far to ``progress`` (a JSON-lines file), so that a run stopped part-way still gives
    figures. gCO2 and work are read from the ledger (the memory backend's, in entry
    order, as far as read before)."""

    progress: Path | None = None
    mode: str = ""
    next_day_s: float = DAY_S
    began_cpu_s: float = dataclasses.field(default_factory=time.process_time)
    deadlines: dict[str, float] = dataclasses.field(default_factory=dict)
    ledger_read: int = 0
    gco2: float = 0.0
    work: float = 0.0

    def job_arrived(self, job: Job, spec: JobSpec, speed: float) -> None:
        super().job_arrived(job, spec, speed)
        if job.deadline_s is not None:
            self.deadlines[job.job_id] = job.deadline_s

    def sample(self, now: float, simulation: Simulation) -> None:
        super().sample(now, simulation)
        if self.progress is None or now < self.next_day_s:
            return
        self.next_day_s += DAY_S
        ledger = getattr(self.store.backend, "_credit", None)  # memory backend only
        if ledger is not None:
            for entry_id in range(self.ledger_read + 1, len(ledger) + 1):
                entry = ledger[entry_id]
                self.gco2 += entry.gco2
                self.work += entry.work
            self.ledger_read = len(ledger)
        missed = sum(
            1
            for r in self.jobs.values()
            if r.job_id in self.deadlines
            and self.deadlines[r.job_id] <= now
            and (r.ended_s is None or r.ended_s > self.deadlines[r.job_id])
        )
        line = {
            "mode": self.mode,
            "zones": sorted(self.scenario.population.zones),
            "day": round(now / DAY_S, 3),
            "gco2": self.gco2,
            "work": self.work,
            "jobs_arrived": len(self.jobs),
            "jobs_ended": sum(1 for r in self.jobs.values() if r.ended_s is not None),
            "deadlines_missed": missed,
            "cpu_s": time.process_time() - self.began_cpu_s,
            "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
        with self.progress.open("a") as out:
            out.write(json.dumps(line) + "\n")


def simulated(scenario: Scenario, seed: int, progress: Path | None = None) -> dict[str, Any]:
    mode = scenario.jobs[0].carbon if scenario.jobs else ""
    report, simulation = simulate(
        scenario,
        seed,
        recorder=lambda store: DailyRecorder(scenario, store, progress=progress, mode=mode),
    )
    carbon = report["carbon"]
    deadlines = {j.job_id: j.deadline_s for j in simulation.store.list_jobs(limit=10**6)}
    records = list(simulation.recorder.jobs.values())
    ended = [r for r in records if r.ended_s is not None]
    hours = sorted((r.ended_s - r.arrived_s) / 3600 for r in ended if r.ended_s is not None)
    slack = [
        (deadline - r.ended_s) / 3600
        for r in ended
        if r.ended_s is not None and (deadline := deadlines[r.job_id]) is not None
    ]
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
        "exchanges": report["exchanges"]["total"],
        "virtual_days": report["virtual_s"] / DAY_S,
        "wall_s": report["measured"]["wall_s"],
        # The simulator's own CPU: on a shared machine, wall time says as much about the
        # neighbours.
        "cpu_s": report["measured"]["process_cpu_s"],
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def pool_s(spec: JobSpec, pool_units_per_s: float) -> float:
    """A job's work: the seconds it takes the whole pool."""
    return default_registry().get(spec.kind).total_units(spec.params) / pool_units_per_s


def with_slack(scenario: Scenario, slack_s: float, pool_units_per_s: float) -> Scenario:
    """Every job due its own work's time on the whole pool plus ``slack_s`` after it arrives."""
    jobs = tuple(
        dataclasses.replace(j, deadline_s=pool_s(j, pool_units_per_s) + slack_s)
        for j in scenario.jobs
    )
    return dataclasses.replace(scenario, jobs=jobs)


def fluid_jobs(scenario: Scenario, pool_units_per_s: float, zones: int) -> list[fluid.Job]:
    """The scenario's jobs in the fluid model: the same times, and the same work as a
    share of the pool (the model's pool: ``fluid.CORES_PER_ZONE`` per zone)."""
    start = scenario.carbon_start_s
    jobs = []
    for i, spec in enumerate(scenario.jobs):
        assert spec.deadline_s is not None
        units = pool_s(spec, pool_units_per_s) * fluid.CORES_PER_ZONE * zones
        arrival = start + spec.arrival_s
        jobs.append(fluid.Job(i, arrival, units, arrival + spec.deadline_s))
    return jobs


def compared(
    scenario: Scenario, pool_units_per_s: float, args: argparse.Namespace
) -> dict[str, Any]:
    """The scenario's jobs (``prefer-clean``) both ways, in the simulator and the fluid model."""
    zones = sorted(scenario.population.zones)
    runs = [with_mode(scenario, mode, args.days) for mode in ("prefer-clean", "blind")]
    result: dict[str, Any] = {"scenario": scenario.name, "zones": zones, "jobs": len(runs[0].jobs)}
    if not args.no_sim:
        if args.parallel:
            with ProcessPoolExecutor(2) as processes:
                futures = [processes.submit(simulated, r, args.seed, args.progress) for r in runs]
                clean, blind = (f.result() for f in futures)
        else:
            clean, blind = (simulated(r, args.seed, args.progress) for r in runs)
        workers = clean["workers_by_zone"]
        if len(set(workers.values())) != 1:
            raise SystemExit(f"the fluid model has as many cores in every zone; drawn: {workers}")
        result["simulator"] = {
            "saved": 1 - clean["gco2"] / blind["gco2"],
            "ledger_estimate_saved": 1 - clean["gco2"] / clean["gco2_blind_estimate"],
            "blind": blind,
            "prefer_clean": clean,
        }
    if args.no_fluid:
        return result
    source = TraceSource(load_traces())
    jobs = fluid_jobs(runs[0], pool_units_per_s, len(zones))
    jobs_blind = [dataclasses.replace(j) for j in jobs]
    for j in jobs_blind:
        j.remaining = j.units
    f_clean = fluid.run(jobs, zones, source, clean=True)
    f_blind = fluid.run(jobs_blind, zones, source, clean=False)
    best = fluid.optimum(jobs, zones, source)
    result["fluid"] = {
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
    }
    return result


def slack_line(slack_h: float, result: dict[str, Any]) -> str:
    """One row of the ``--slack-h`` table."""
    cells = [f"{slack_h:>5g} h"]
    if "simulator" in result:
        sim = result["simulator"]
        blind, clean = sim["blind"], sim["prefer_clean"]
        cells += [
            f"{sim['saved']:>7.1%}",
            f"{blind['deadlines_missed']:>3}/{clean['deadlines_missed']:<3}",
            f"{blind['mean_turnaround_h']:>5.2f} -> {clean['mean_turnaround_h']:<5.2f}",
            f"{clean['least_slack_h']:>6.2f}",
            f"{blind['makespan_h']:>6.1f} -> {clean['makespan_h']:<6.1f}",
            f"{blind['cpu_s']:>5.0f}/{clean['cpu_s']:<5.0f}",
        ]
    if "fluid" in result:
        f = result["fluid"]
        cells += [
            f"{f['saved']:>7.1%} ({f['bound_saved']:.1%})",
            f"{f['deadlines_missed'][0]}/{f['deadlines_missed'][1]}",
            f"{f['mean_turnaround_h'][1]:>5.2f}",
        ]
    return "  ".join(cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", default="three-grids")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--days", type=float, default=None, help="only the jobs of N days")
    parser.add_argument("--zones", nargs="*", help="every worker on these grids instead")
    parser.add_argument("--start", help="virtual time 0 in the traces instead, as 2020-01-01")
    parser.add_argument("--parallel", action="store_true", help="the two runs at once")
    parser.add_argument("--progress", type=Path, help="append daily figures here (JSON lines)")
    parser.add_argument("--no-fluid", action="store_true", help="skip the fluid model")
    parser.add_argument("--no-sim", action="store_true", help="only the fluid model")
    parser.add_argument(
        "--slack-h",
        type=float,
        nargs="+",
        help="once per slack: deadline = a job's time on the whole pool + slack; a table",
    )
    args = parser.parse_args()
    scenario = with_mode(load_scenario(args.scenario), "prefer-clean", None, args.zones)
    if args.start:
        start = datetime.fromisoformat(args.start).replace(tzinfo=UTC).timestamp()
        scenario = dataclasses.replace(scenario, carbon_start_s=start)
    population = scenario.population
    kinds = {j.kind for j in scenario.jobs}
    assert len(kinds) == 1 and population.cores == ((1, 1.0),), "one kind, one-core workers"
    pool = population.speeds[kinds.pop()] * population.count
    if not args.slack_h:
        print(json.dumps(compared(scenario, pool, args), indent=1))
        return
    print(
        f"{scenario.name}, zones {'+'.join(sorted(population.zones))}, seed {args.seed}, "
        f"days {args.days}: deadline = a job's time on the whole pool + slack\n"
        "slack    sim saved  missed b/c  mean h blind -> clean  least slack h  "
        "makespan h blind -> clean  cpu s b/c  fluid saved (optimum)  missed b/c  mean h",
        flush=True,
    )
    for slack_h in args.slack_h:
        result = compared(with_slack(scenario, slack_h * 3600, pool), pool, args)
        print(json.dumps({"slack_h": slack_h} | result), file=sys.stderr)
        print(slack_line(slack_h, result), flush=True)


if __name__ == "__main__":
    main()
