"""Adaptive verification's overhead against the share of saboteurs, on the simulator.

    .venv/bin/python bench/bench_sim_verification.py [--workers 500] [--seeds 1]
        [--shares 0 0.1 0.2 0.3 0.4] [--strategy always] [--collude]

For each saboteur share, runs the same pool (churn, pauses, round trips; adaptive
verification assuming the share of saboteurs it is given) with that share of its workers
lying, and prints the verification overhead (compute spent on copies and spot checks over
the compute of the accepted outputs), the wrong chunks accepted, the compute spent on lies,
the efficiency against the ideal makespan, and the wall time of the run. ``--collude``
makes every saboteur tell the same lie, so that two of them agree.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

try:
    import hydracompute  # noqa: F401
except ModuleNotFoundError:  # run from a checkout that is not pip-installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from hydracompute.sim import parse_scenario, simulate

SCENARIO = """
name = "verification-{share}"
sample_period_s = 10
max_duration_s = 7200

[coordinator]
target_chunk_s = 2.0
heartbeat_s = 10.0
verify = "adaptive"
saboteur_share = {assumed}
capacity_results_per_s = 400

[workers]
count = {workers}
cores = {{ 1 = 1, 2 = 2, 4 = 1 }}
kinds = ["pi"]
latency = {{ dist = "lognormal", median = 0.05, sigma = 0.5 }}

[workers.speed]
pi = 500.0
factor = {{ dist = "lognormal", median = 1.0, sigma = 0.4 }}
chunk_noise = {{ dist = "lognormal", median = 1.0, sigma = 0.1 }}

[workers.availability]
online = {{ dist = "weibull", shape = 0.6, scale = 7200 }}
offline = {{ dist = "lognormal", median = 1800, sigma = 1.5 }}
online_at_start = 0.8
join_over_s = 10

[saboteurs]
share = {share}
strategy = "{strategy}"
probability = 0.5
collude = {collude}

[[jobs]]
kind = "pi"
params = {{ samples = {samples}, seed = 1 }}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=500)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--shares", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3, 0.4])
    parser.add_argument("--strategy", default="always", choices=["always", "sometimes"])
    parser.add_argument("--collude", action="store_true")
    parser.add_argument("--samples", type=int, default=10**14)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # every barred saboteur is logged otherwise
    print(
        f"{args.workers} workers, adaptive verification, strategy {args.strategy}"
        f"{', colluding' if args.collude else ''}; {args.seeds} seed(s) per share"
    )
    print("share  seed  overhead  wrong  lies_core_s  efficiency  wall_s")
    for share in args.shares:
        for seed in range(1, args.seeds + 1):
            scenario = parse_scenario(
                SCENARIO.format(
                    share=share,
                    assumed=max(share, 0.01),
                    workers=args.workers,
                    strategy=args.strategy,
                    collude=str(args.collude).lower(),
                    samples=args.samples,
                )
            )
            report, _ = simulate(scenario, seed)
            print(
                f"{share:5.2f}  {seed:4d}  {report['verification_overhead']:8.1%}  "
                f"{report['wrong_chunks_accepted']:5d}  {report['work']['core_s']['lies']:11.0f}"
                f"  {report['efficiency']:10.1%}  {report['measured']['wall_s']:6.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
