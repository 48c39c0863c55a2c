"""How many chunk results one coordinator accepts per second, and how fast it answers.

A load generator plays many simulated workers (asyncio, one HTTP client) against a real
``hydracompute coordinator`` process on a SQLite file: each enrols, then loops on exchanges
that return the previous chunk's result and ask for one more. The π results are real (a
table of per-block hit counts computed once and cached), so the coordinator's checks run as
for real workers; chunks stay one or two blocks long because each lease's compute time is
believed only up to its age. Prints accepted results per second, exchange latency
percentiles, and the CPU used by the coordinator and by the generator (on a 2-core machine
the generator competes with the coordinator, which the figures show).

    .venv/bin/python bench/bench_coordinator.py [--workers 200] [--seconds 10] [--tls] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

from hydracompute.demo import start_coordinator, stop
from hydracompute.kinds.pi_kernel import BLOCK_SAMPLES, count_hits

SEED = 7
BLOCKS = 8192
TABLE = Path(__file__).parent / ".build" / f"pi_hits_{SEED}_{BLOCKS}.npy"


def hit_table() -> np.ndarray:
    """Hits per block of the benchmark's job (computed once, about 5 s)."""
    if TABLE.exists():
        return np.load(TABLE)
    TABLE.parent.mkdir(parents=True, exist_ok=True)
    table = np.array(
        [count_hits(SEED, b * BLOCK_SAMPLES, (b + 1) * BLOCK_SAMPLES) for b in range(BLOCKS)],
        dtype=np.int64,
    )
    np.save(TABLE, table)
    return table


class Load:
    def __init__(self, http: httpx.AsyncClient, table: np.ndarray, deadline: float) -> None:
        self.http, self.table, self.deadline = http, table, deadline
        self.latencies: list[float] = []
        self.accepted = 0
        self.refused: dict[int, int] = {}

    async def worker(self, join_token: str, n: int) -> None:
        enrolled = (
            await self.http.post(
                "/api/v1/workers",
                json={
                    "join_token": join_token,
                    "name": f"sim-{n}",
                    "cores": 1,
                    "kinds": ["pi"],
                },
            )
        ).json()
        url = f"/api/v1/workers/{enrolled['worker_id']}/exchange"
        headers = {"Authorization": f"Bearer {enrolled['secret']}"}
        results: list[dict[str, Any]] = []
        while time.monotonic() < self.deadline:
            began = time.perf_counter()
            response = await self.http.post(
                url, json={"results": results, "want": 1, "wait_s": 0.5}, headers=headers
            )
            self.latencies.append(time.perf_counter() - began)
            if response.status_code != 200:
                self.refused[response.status_code] = self.refused.get(response.status_code, 0) + 1
                await asyncio.sleep(0.1)
                continue
            answer = response.json()
            self.accepted += len(answer["accepted"])
            results = []
            for lease in answer["leases"]:
                start, stop = lease["chunk"]["start"], lease["chunk"]["stop"]
                output = {
                    "hits": int(self.table[start:stop].sum()),
                    "samples": (stop - start) * BLOCK_SAMPLES,
                }
                results.append({"lease_id": lease["lease_id"], "output": output, "compute_s": 1e6})


async def run_load(
    url: str, token: str, admin: str, workers: int, seconds: float, verify: Any
) -> dict[str, Any]:
    table = hit_table()
    limits = httpx.Limits(max_connections=workers, max_keepalive_connections=workers)
    async with httpx.AsyncClient(base_url=url, limits=limits, verify=verify, timeout=60) as http:
        job = {"kind": "pi", "params": {"samples": BLOCKS * BLOCK_SAMPLES, "seed": SEED}}
        for _ in range(20):  # enough work for the whole run
            await http.post("/api/v1/jobs", json=job, headers={"Authorization": f"Bearer {admin}"})
        load = Load(http, table, time.monotonic() + seconds)
        began = time.monotonic()
        await asyncio.gather(*(load.worker(token, n) for n in range(workers)))
        elapsed = time.monotonic() - began
    latencies = sorted(load.latencies)
    return {
        "workers": workers,
        "seconds": elapsed,
        "results_per_s": load.accepted / elapsed,
        "exchanges": len(latencies),
        "latency_p50_ms": 1000 * statistics.median(latencies),
        "latency_p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
        "refused": load.refused,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--tls", action="store_true", help="TLS (default: plain HTTP)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    hit_table()
    with tempfile.TemporaryDirectory() as tmp:
        extra = ["--target-chunk-s", "0.01"] + ([] if args.tls else ["--insecure"])
        coordinator = start_coordinator(Path(tmp) / "pool", 0, extra)
        try:
            process = psutil.Process(coordinator.process.pid)
            me = psutil.Process()
            cpu0, mine0 = process.cpu_times(), me.cpu_times()
            verify: Any = True
            if args.tls:
                from hydracompute import tls

                verify = tls.verification(coordinator.url, coordinator.ca_fingerprint)
            figures = asyncio.run(
                run_load(
                    coordinator.url,
                    coordinator.join_token,
                    coordinator.admin_key,
                    args.workers,
                    args.seconds,
                    verify,
                )
            )
            cpu1, mine1 = process.cpu_times(), me.cpu_times()
            figures["coordinator_cpu_s"] = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
            figures["generator_cpu_s"] = (mine1.user + mine1.system) - (mine0.user + mine0.system)
            figures["coordinator_rss_mb"] = process.memory_info().rss / 2**20
            figures["tls"] = args.tls
        finally:
            stop(coordinator.process)
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(
        f"{figures['workers']} simulated workers, {figures['seconds']:.1f} s, "
        f"{'TLS' if args.tls else 'plain HTTP'}, SQLite"
    )
    print(
        f"accepted results: {figures['results_per_s']:.0f}/s over {figures['exchanges']} "
        f"exchanges; latency p50 {figures['latency_p50_ms']:.1f} ms, "
        f"p99 {figures['latency_p99_ms']:.1f} ms; refused: {figures['refused'] or 'none'}"
    )
    print(
        f"CPU: coordinator {figures['coordinator_cpu_s']:.1f} s, generator "
        f"{figures['generator_cpu_s']:.1f} s; coordinator RSS "
        f"{figures['coordinator_rss_mb']:.0f} MB"
    )


if __name__ == "__main__":
    main()
