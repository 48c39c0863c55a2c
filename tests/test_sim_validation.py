"""The simulator against reality: a real pool (one coordinator, two workers, a π job and a
Mandelbrot job on this machine) and the scenario that mirrors it; the predicted makespan is
within 10 % of the real one.

The machine is shared and its load changes from minute to minute, so the kernels' speeds the
scenario uses are measured in this test, around the real run, by two processes at once (the
two workers compute side by side too).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import statistics
import time
from pathlib import Path

import pytest

from hydracompute.kinds import default_registry
from hydracompute.sim import parse_scenario, simulate
from hydracompute.sim.speeds import measure_speed
from tests.e2e_support import pool, wait_until

PI = {"samples": 6 * 10**9, "seed": 5}
MANDELBROT = {"width": 2048, "height": 2048, "max_iter": 1000}
TARGET_CHUNK_S = 0.3
HEARTBEAT_S = 0.5


def _speed(kind: str, params: dict[str, int]) -> float:
    found = default_registry().get(kind)
    return measure_speed(found, found.validate(params), seconds=1.0)


def measured_speeds() -> dict[str, float]:
    """Units/s on one core of each kind, measured by two processes at once."""
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=context) as processes:
        speeds = {}
        for kind, params in (("pi", PI), ("mandelbrot", MANDELBROT)):
            runs = [processes.submit(_speed, kind, params) for _ in range(2)]
            speeds[kind] = statistics.mean(run.result() for run in runs)
    return speeds


SCENARIO = """
name = "validation"
sample_period_s = 1

[coordinator]
target_chunk_s = {target}
heartbeat_s = {heartbeat}

[workers]
count = 2
cores = 1
kinds = ["pi", "mandelbrot"]
latency = {latency}

[workers.speed]
pi = {pi}
mandelbrot = {mandelbrot}

[workers.availability]
always_on = true

[[jobs]]
kind = "pi"
params = {{ samples = {samples}, seed = 5 }}

[[jobs]]
kind = "mandelbrot"
params = {{ width = 2048, height = 2048, max_iter = 1000 }}
arrival_s = {mandelbrot_arrival}
"""


@pytest.mark.e2e
def test_the_simulator_predicts_a_real_pools_makespan(tmp_path: Path) -> None:
    before = measured_speeds()
    with pool(tmp_path / "pool", target_chunk_s=TARGET_CHUNK_S, heartbeat_s=HEARTBEAT_S) as p:
        for _ in range(2):
            p.add_worker(cores=1)
        with p.client() as client:
            wait_until(lambda: p.online_workers() == 2, what="the workers join")
            began = time.perf_counter()
            client.jobs(limit=1)  # a round trip to the coordinator, for the latency
            latency_s = time.perf_counter() - began
            pi = client.submit("pi", **PI)
            mandelbrot = client.submit("mandelbrot", **MANDELBROT)
            real = [pi.wait(timeout=300).raw, mandelbrot.wait(timeout=300).raw]
    after = measured_speeds()
    speeds = {kind: (before[kind] + after[kind]) / 2 for kind in before}
    first = min(job["created_s"] for job in real)
    real_makespan = max(job["finished_s"] for job in real) - first
    scenario = parse_scenario(
        SCENARIO.format(
            target=TARGET_CHUNK_S,
            heartbeat=HEARTBEAT_S,
            latency=latency_s,
            pi=speeds["pi"],
            mandelbrot=speeds["mandelbrot"],
            samples=PI["samples"],
            mandelbrot_arrival=real[1]["created_s"] - first,
        )
    )
    report, _ = simulate(scenario, seed=1)
    predicted = report["makespan_s"]
    detail = (
        f"real {real_makespan:.2f} s, predicted {predicted:.2f} s; speeds before {before}, "
        f"after {after}; round trip {latency_s * 1000:.1f} ms"
    )
    print(detail)
    assert report["all_jobs_ended"]
    assert abs(predicted - real_makespan) <= 0.10 * real_makespan, detail
