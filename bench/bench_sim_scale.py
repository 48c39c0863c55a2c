"""The simulator at scale: a shipped scenario's wall time, CPU and store cost per exchange.

    .venv/bin/python bench/bench_sim_scale.py [--scenario volunteer-project]
        [--max-duration-s 180] [--seed 1] [--before-src /path/to/other/src] [--json]
        [--progress]

Runs the scenario (its ``max_duration_s`` cut to ``--max-duration-s`` if given) in a
process of its own, and with ``--before-src`` the same with another checkout's code, one
after the other, and prints them side by side: wall time and the process's CPU (on a shared
machine the wall time says as much about the neighbours), exchanges and results, the
store's CPU per exchange, the exchanges by what made the worker send them, efficiency
against the ideal makespan, the share of compute wasted, the highest result rate over a
sample period against the allowed rate, and whether every job ended. Say the load average
(``uptime``) beside any figure taken from it. With ``--progress``, each run prints a line
at every sample period of virtual time (wall, CPU, exchanges, jobs unfinished, load) on
standard error: a run stopped by a timeout still says how far it got.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

#: Run in a process of its own, so that each side imports its own code.
RUNNER = r"""
import json, re, resource, sys, time
from importlib import resources
from hydracompute.sim import parse_scenario, simulate

name, limit, seed, progress = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
text = resources.files("hydracompute.sim").joinpath(f"scenarios/{name}.toml").read_text()
if limit:
    text = re.sub(r"(?m)^max_duration_s = .*$", f"max_duration_s = {limit}", text)
began, began_cpu = time.perf_counter(), time.process_time()
if progress:
    import os
    from hydracompute.sim.recorder import Recorder
    sample = Recorder.sample
    def sample_and_say(self, now, simulation):
        sample(self, now, simulation)
        print(f"virtual {now:.0f} s: wall {time.perf_counter() - began:.0f} s, "
              f"CPU {time.process_time() - began_cpu:.0f} s, {self.exchanges_total:,} "
              f"exchanges, {simulation.unfinished} of {simulation.arrived} jobs unfinished, "
              f"load {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
    Recorder.sample = sample_and_say
report, simulation = simulate(parse_scenario(text), seed=seed)
work = report["work"]
print(json.dumps({
    "wall_s": time.perf_counter() - began,
    "cpu_s": time.process_time() - began_cpu,
    "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "virtual_s": report["virtual_s"],
    "all_jobs_ended": report["all_jobs_ended"],
    "exchanges": report["exchanges"]["total"],
    "by_cause": report["exchanges"].get("by_cause", {}),
    "results": report["results"]["total"],
    "store_cpu_s": report["measured"]["store_cpu_s"],
    "us_per_exchange": report["measured"]["cpu_per_exchange_us"],
    "efficiency": report["efficiency"],
    "wasted_share": work["wasted_share"],
    "max_results_per_s": report["results"]["max_per_s"],
    "allowed_per_s": report["results"]["allowed_per_s"],
    "capacity_per_s": report["results"]["capacity_per_s"],
    "units_missing": report["units_missing"],
    "wrong_chunks_accepted": report["wrong_chunks_accepted"],
    "chunk_targets_s": [min(report["chunk_targets_s"], default=0),
                        max(report["chunk_targets_s"], default=0)],
}))
"""


def run(src: Path, scenario: str, limit: str, seed: int, progress: bool) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(src))
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, scenario, limit, str(seed), "1" if progress else "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=None if progress else subprocess.PIPE,
        text=True,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", default="volunteer-project")
    parser.add_argument("--max-duration-s", default="", help="cut the scenario short")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--before-src", type=Path, help="another checkout's src, run first")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--progress", action="store_true", help="say each sample's figures")
    args = parser.parse_args()
    here = Path(__file__).resolve().parent.parent / "src"
    sides = {}
    if args.before_src:
        sides["before"] = run(
            args.before_src, args.scenario, args.max_duration_s, args.seed, args.progress
        )
    sides["this"] = run(here, args.scenario, args.max_duration_s, args.seed, args.progress)
    load = os.getloadavg()
    if args.json:
        print(json.dumps({"load": load, **sides}, indent=1))
        return
    print(
        f"{args.scenario}, max_duration_s {args.max_duration_s or 'as shipped'}, seed {args.seed}"
    )
    names = list(sides)
    print(f"{'':24}" + "".join(f"{n:>22}" for n in names))
    for key in sides[names[-1]]:
        if key == "by_cause":
            continue
        cells = "".join(f"{_fmt(sides[n].get(key)):>22}" for n in names)
        print(f"{key:24}{cells}")
    for name in names:
        print(f"exchanges by cause ({name}): {sides[name].get('by_cause') or 'not counted'}")
    print("load average after: " + " ".join(f"{x:.2f}" for x in load))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, list):
        return "–".join(_fmt(v) for v in value)
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


if __name__ == "__main__":
    main()
