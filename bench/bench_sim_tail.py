"""Where a simulated pool's makespan goes past its ideal: efficiency, work and the tail.

    .venv/bin/python bench/bench_sim_tail.py [--seeds 1 2 3] [--workers 1000] [--tail 12]

Runs the 1,000-worker scenario of ``tests/test_sim.py`` (churn, owner pauses, two jobs,
load control stretching 2 s chunks) for each seed and prints its efficiency (the ideal
makespan over the makespan), how the computed core-seconds ended (the report's ``work``),
and, per job, the timeline of its tail: when it was fully carved, when its last chunks
were accepted, how many times each had been leased and how those leases ended (expired,
returned, backup copies), and the pool's idle cores in the meantime. Run it against
another checkout with ``PYTHONPATH=<checkout>/src`` to compare.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

try:
    import hydracompute  # noqa: F401
except ModuleNotFoundError:  # run from a checkout that is not pip-installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from hydracompute.sim import build_store, parse_scenario
from hydracompute.sim.engine import Simulation
from hydracompute.sim.report import build_report

#: The scenario of tests/test_sim.py's thousand-worker test.
SCENARIO = Path(__file__).resolve().parent.parent / "tests" / "scenarios" / "thousand.toml"


class Timeline:
    """Grants and accepted chunks as the exchanges of a run returned them."""

    def __init__(self, simulation: Simulation) -> None:
        self.sim = simulation
        self.granted: dict[str, tuple[float, str, str, int, int, int]] = {}
        self.accepted: dict[tuple[str, int], float] = {}
        store = simulation.store
        real = store.exchange

        def exchange(*args: Any, **kwargs: Any) -> Any:
            outcome = real(*args, **kwargs)
            now = simulation.now
            for grant in outcome.leases:
                self.granted[grant.lease_id] = (
                    now,
                    args[0],
                    grant.job_id,
                    grant.chunk_index,
                    grant.start,
                    grant.stop,
                )
            for done in outcome.finished:
                self.accepted[(done.job_id, done.chunk_index)] = now
            return outcome

        store.exchange = exchange  # type: ignore[method-assign]


def tail_of(simulation: Simulation, timeline: Timeline, job_id: str, tail: int) -> list[str]:
    backend = simulation.store.backend
    factors = {w.worker_id: w.factor for w in simulation.workers}
    by_chunk: dict[int, list[str]] = collections.defaultdict(list)
    for lease_id, (_, _, job, index, _, _) in timeline.granted.items():
        if job == job_id:
            by_chunk[index].append(lease_id)
    job = simulation.store.get_job(job_id)
    record = simulation.recorder.jobs[job_id]
    ends = sorted((at, index) for (job, index), at in timeline.accepted.items() if job == job_id)
    lines = [
        f"  job {record.kind}: arrived {record.arrived_s:.0f} s, ended {record.ended_s:.1f} s, "
        f"{job.chunks_carved} chunks carved; last {tail} accepted:"
    ]
    with backend.transaction(read_only=True):
        for at, index in ends[-tail:]:
            parts = []
            for lease_id in sorted(by_chunk[index], key=lambda lid: timeline.granted[lid][0]):
                issued, worker_id, _, _, start, stop = timeline.granted[lease_id]
                lease = backend.get_lease(lease_id)
                assert lease is not None
                tag = "B" if lease.backup else ""
                parts.append(
                    f"{issued:.0f}s:{lease.state.value[:4]}{tag}"
                    f"(x{factors.get(worker_id, 0):.2f},{stop - start}u)"
                )
            lines.append(f"    chunk {index:5d} accepted {at:7.1f} s  leases: {' '.join(parts)}")
    return lines


def run(workers: int, seed: int, tail: int) -> dict[str, Any]:
    scenario = parse_scenario(SCENARIO.read_text())
    scenario = dataclasses.replace(
        scenario, population=dataclasses.replace(scenario.population, count=workers)
    )
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-sim-tail-") as folder:
        store = build_store(scenario, seed, Path(folder))
        try:
            simulation = Simulation(scenario, store, seed)
            timeline = Timeline(simulation)
            simulation.run()
            report = build_report(simulation, seed, 0.0)
            lines = []
            for job_id in simulation.job_ids:
                lines += tail_of(simulation, timeline, job_id, tail)
        finally:
            store.close()
    wall = time.perf_counter() - began
    work = report["work"]
    core_s = work["core_s"]
    total = sum(core_s.values())
    split = ", ".join(f"{k} {v / total:.1%}" for k, v in core_s.items() if v)
    print(
        f"seed {seed}: efficiency {report['efficiency']:.3f} (makespan "
        f"{report['makespan_s']:.1f} s, ideal {report['ideal_makespan_s']:.1f} s), "
        f"units missing {report['units_missing']}, max results/s "
        f"{report['results']['max_per_s']:.0f} (capacity "
        f"{report['results']['capacity_per_s']:.0f}), store CPU per exchange "
        f"{report['measured']['cpu_per_exchange_us']:.0f} µs, wall {wall:.0f} s"
    )
    print(f"  work: {split}")
    print(f"  targets chosen: {report['chunk_targets_s']}")
    for line in lines:
        print(line)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[3])
    parser.add_argument("--workers", type=int, default=1000)
    parser.add_argument("--tail", type=int, default=12, help="last chunks shown per job")
    args = parser.parse_args()
    efficiencies = [run(args.workers, seed, args.tail)["efficiency"] for seed in args.seeds]
    print(
        "efficiency per seed: "
        + ", ".join(f"{s}: {e:.3f}" for s, e in zip(args.seeds, efficiencies, strict=True))
        + f"; mean {statistics.mean(efficiencies):.3f}, min {min(efficiencies):.3f}"
    )


if __name__ == "__main__":
    main()
