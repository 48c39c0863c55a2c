"""The simulator against reality: a real pool (one coordinator, two workers, a π job and a
Mandelbrot job on this machine) and the scenario that mirrors it; the predicted makespan is
within 10 % of the real one.

The machine is shared and its load changes from minute to minute: speeds measured before
and after the run differed by 40 % here. So the scenario's speeds are the kernels' speeds
during the run itself: each job's units over the compute seconds its workers reported (the
coordinator's ``hydracompute_chunk_compute_seconds`` sums). What the simulator predicts from
them is everything else: probes, chunk sizes, round trips, waits, the tail.
"""

from __future__ import annotations

import ssl
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hydracompute.sim import parse_scenario, simulate
from tests.e2e_support import Pool, pool, wait_until

PI = {"samples": 6 * 10**9, "seed": 5}
MANDELBROT = {"width": 2048, "height": 2048, "max_iter": 1000}
TARGET_CHUNK_S = 0.3
HEARTBEAT_S = 0.5


def compute_seconds(p: Pool) -> dict[str, float]:
    """Compute seconds of accepted chunks per kind, as the workers reported them."""
    pinned = ssl.create_default_context(cafile=p.data_dir / "tls" / "ca.pem")
    headers = {"Authorization": f"Bearer {p.coordinator.admin_key}"}
    with httpx.Client(base_url=p.url, verify=pinned, headers=headers) as http:
        text = http.get("/metrics").raise_for_status().text
    found = {}
    for family in text_string_to_metric_families(text):
        if family.name == "hydracompute_chunk_compute_seconds":
            for sample in family.samples:
                if sample.name.endswith("_sum"):
                    found[sample.labels["kind"]] = sample.value
    return found


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
        spent_s = compute_seconds(p)
    speeds = {job["kind"]: job["total_units"] / spent_s[job["kind"]] for job in real}
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
        f"real {real_makespan:.2f} s, predicted {predicted:.2f} s; speeds during the run "
        f"{speeds}; round trip {latency_s * 1000:.1f} ms"
    )
    print(detail)
    assert report["all_jobs_ended"]
    assert abs(predicted - real_makespan) <= 0.10 * real_makespan, detail
