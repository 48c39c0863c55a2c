"""How much of the work in flight the tail sizing should count: a simulation.

Cores of equal true speed take chunks from one job whenever they are free, sized by
:func:`hydracompute.core.sizing.chunk_units` from speeds learnt as the coordinator learns
them (:func:`~hydracompute.core.sizing.updated_speed`), with the work in flight
(:class:`hydracompute.core.inflight.InFlight`) weighed by 0 (not counted), 0.5 and 1.
Each chunk's true time is off its estimate by up to ``±sigma``, and each costs its core a
round trip of ``overhead`` seconds. Prints the mean time to finish over the ideal (the
job's work over the pool's speed), and the mean number of chunks, over 100 seeds: the
figures behind ``IN_FLIGHT_WEIGHT`` in ``core/sizing.py``. No coordinator runs; this is
pure arithmetic, repeatable anywhere.

    .venv/bin/python bench/bench_tail_sizing.py
"""

from __future__ import annotations

import itertools
import random
import statistics

import hydracompute.core.sizing as sizing
from hydracompute.core.inflight import InFlight

WEIGHTS = (0.0, 0.5, 1.0)
TARGET_S = 2.0
SPEED = 100.0


def finish(
    job_s: float, cores: int, sigma: float, overhead_s: float, weight: float, seed: int
) -> tuple[float, int]:
    """(time to finish / ideal, chunks) of one simulated job."""
    rng = random.Random(seed)
    learnt, evidence = [SPEED] * cores, [10.0] * cores
    job = int(job_s * SPEED * cores)
    free = [0.0] * cores
    flight, carved, chunks = InFlight(), 0, 0
    sizing.IN_FLIGHT_WEIGHT = weight
    while carved < job:
        core = min(range(cores), key=free.__getitem__)
        now = free[core]
        flight.settle(f"c{core}", ())  # its last chunk is done
        units = sizing.chunk_units(
            speed=learnt[core],
            target_s=TARGET_S,
            probe_units=1,
            max_units=10**9,
            remaining=job - carved,
            share=learnt[core] / sum(learnt),
            in_flight=flight.units("j", now),
        )
        flight.granted("j", f"l{chunks}", f"c{core}", learnt[core], units / learnt[core], now)
        carved, chunks = carved + units, chunks + 1
        took = units / (SPEED * (1 + rng.uniform(-sigma, sigma)))
        learnt[core], evidence[core] = sizing.updated_speed(
            learnt[core], evidence[core], units, took, 0.5
        )
        free[core] = now + overhead_s + took
    return max(free) / (job / (SPEED * cores)), chunks


def main() -> None:
    saved = sizing.IN_FLIGHT_WEIGHT
    print(
        f"{'job s':>6} {'cores':>5} {'sigma':>5} {'rt ms':>5}  "
        + "  ".join(f"{'weight ' + str(w):>18}" for w in WEIGHTS)
    )
    regret = dict.fromkeys(WEIGHTS, 0.0)
    try:
        for job_s, cores, sigma, overhead_s in itertools.product(
            (2.5, 5.0, 20.0), (2, 8), (0.0, 0.1, 0.3), (0.0, 0.005, 0.02)
        ):
            means = {}
            for weight in WEIGHTS:
                runs = [finish(job_s, cores, sigma, overhead_s, weight, s) for s in range(100)]
                means[weight] = (
                    statistics.mean(r[0] for r in runs),
                    statistics.mean(r[1] for r in runs),
                )
            best = min(m[0] for m in means.values())
            for weight, (ratio, _) in means.items():
                regret[weight] = max(regret[weight], ratio / best - 1)
            cells = "  ".join(f"{r:.4f} ({c:5.1f} ch)" for r, c in means.values())
            print(f"{job_s:>6} {cores:>5} {sigma:>5} {overhead_s * 1000:>5.0f}  {cells}")
    finally:
        sizing.IN_FLIGHT_WEIGHT = saved
    print(
        "largest shortfall from the best weight of a row: "
        + ", ".join(f"weight {w}: {100 * r:.1f}%" for w, r in regret.items())
    )


if __name__ == "__main__":
    main()
