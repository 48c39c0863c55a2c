"""Deadlines of prefer-clean jobs through the real simulator, over many small scenarios.

Each scenario is a pool of one-core workers split equally over DE, GB and FR (2020
traces), and a few π jobs of a given share of the pool's work, each due a given time
after it arrives, one every half of that time: the work held back from dirty grids must
still come back by the deadline, through chunks of 300 s, leases and long polls. The
``always-on`` sweep varies the pool (3 or 6 workers), the work (10 min to 1 h of the
pool's), the deadline (1.5 to 6 h) and the season; the ``churn`` sweep has 9 workers
that come and go (sessions of a median 1.3 h, absences of 30 min) and pause, and runs
every scenario carbon-blind too. Reports the deadlines missed and the tightest a job
came to its deadline (``least_slack_s``; the store keeps 830 s in hand here).

    .venv/bin/python bench/bench_carbon_deadlines.py [--sweeps always-on churn] [--json]
"""

from __future__ import annotations

import argparse
import itertools
import json
from typing import Any

from hydracompute.sim import parse_scenario, simulate

SCENARIO = """
name = "carbon-deadlines"
max_duration_s = {max_s}
sample_period_s = 900

[coordinator]
target_chunk_s = 300
heartbeat_s = 60

[workers]
count = {count}
cores = 1
kinds = ["pi"]
zones = {{ DE = 1, GB = 1, FR = 1 }}

[workers.speed]
pi = 500.0

{availability}

[carbon]
start = {start}

[[jobs]]
kind = "pi"
params = {{ samples = {samples}, seed = 7 }}
arrival_s = 600
count = {jobs}
every_s = {every}
deadline_s = {deadline}
carbon = "{mode}"
"""
ALWAYS_ON = "[workers.availability]\nalways_on = true"
CHURN = """[workers.availability]
online = { dist = "weibull", shape = 0.6, scale = 7200 }
offline = { dist = "lognormal", median = 1800, sigma = 1.0 }
online_at_start = 0.8
clean_leave_share = 0.3

[workers.pauses]
every = { dist = "exponential", mean = 3600 }
length = { dist = "lognormal", median = 120, sigma = 1.2 }
return_after_s = 300"""


def run(
    mode: str, count: int, pool_s: float, deadline_h: float, start: str, churn: bool, seed: int
) -> dict[str, Any]:
    deadline = int(deadline_h * 3600)
    jobs, every = (4, deadline // 2) if churn else (3, deadline // 2)
    text = SCENARIO.format(
        max_s=600 + every * jobs + 2 * deadline,
        count=count,
        availability=CHURN if churn else ALWAYS_ON,
        start=start,
        samples=int(count * 500 * pool_s) * 2**20,
        jobs=jobs,
        every=every,
        deadline=deadline,
        mode=mode,
    )
    report, simulation = simulate(parse_scenario(text), seed)
    carbon = report["carbon"]
    deadlines = {j.job_id: j.deadline_s for j in simulation.store.list_jobs(limit=100)}
    slack = [
        deadlines[r.job_id] - (r.ended_s if r.ended_s is not None else float("inf"))
        for r in simulation.recorder.jobs.values()
    ]
    return {
        "missed": carbon["deadlines_missed"],
        "gco2": carbon["gco2"],
        "least_slack_s": min(slack),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweeps", nargs="*", default=["always-on", "churn"])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    seasons = ("2020-03-02", "2020-06-10", "2020-11-20")
    if "always-on" in args.sweeps:
        for count, pool_s, deadline_h, start in itertools.product(
            (3, 6), (600, 1800, 3600), (1.5, 3, 6), seasons
        ):
            if pool_s <= deadline_h * 3600 * 0.6:
                row = run("prefer-clean", count, pool_s, deadline_h, start, False, 1)
                rows.append(
                    {
                        "sweep": "always-on",
                        "count": count,
                        "pool_s": pool_s,
                        "deadline_h": deadline_h,
                        "start": start,
                        **row,
                    }
                )
    if "churn" in args.sweeps:
        for seed, start, deadline_h in itertools.product((1, 2, 3), seasons[:2], (3, 6)):
            blind = run("blind", 9, 1800, deadline_h, start, True, seed)
            clean = run("prefer-clean", 9, 1800, deadline_h, start, True, seed)
            rows.append(
                {
                    "sweep": "churn",
                    "seed": seed,
                    "deadline_h": deadline_h,
                    "start": start,
                    **clean,
                    "blind_missed": blind["missed"],
                    "blind_gco2": blind["gco2"],
                }
            )
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    for sweep in dict.fromkeys(r["sweep"] for r in rows):
        mine = [r for r in rows if r["sweep"] == sweep]
        line = (
            f"{sweep}: {len(mine)} scenarios, deadlines missed {sum(r['missed'] for r in mine)}"
            f" of {sum(3 if sweep == 'always-on' else 4 for _ in mine)}, least slack "
            f"{min(r['least_slack_s'] for r in mine):.0f} s"
        )
        if sweep == "churn":
            saved = 1 - sum(r["gco2"] for r in mine) / sum(r["blind_gco2"] for r in mine)
            line += (
                f"; carbon-blind missed {sum(r['blind_missed'] for r in mine)}, saved {saved:.1%}"
            )
        print(line)


if __name__ == "__main__":
    main()
