"""How many chunk results one coordinator accepts per second, and how fast it answers.

A load generator plays many simulated workers against a real ``hydracompute coordinator``
process on a SQLite file (``synchronous=FULL``: every answered result is on disk). Each
simulated worker enrols with the join token, then loops on exchanges that return the
previous chunk's result and ask for one more chunk, over its own keep-alive connection,
as a real worker does. The π results are real (a table of per-block hit counts computed
once and cached in ``bench/.build/``), so the coordinator checks them as it would a real
worker's; chunks stay one or two blocks long because each lease's compute time is believed
only up to its age.

The generator speaks HTTP/1.1 itself over asyncio streams (a few tens of microseconds per
request), because on a 2-core machine it shares the CPU with the coordinator: an
ordinary HTTP client library costs more CPU per request than the coordinator does.

Two scenarios, in one run, with the same pool of simulated workers:

- **capacity**: every worker exchanges again as soon as it is answered (no compute time):
  the most results per second the coordinator accepts, and the latency at that load;
- **latency**: each worker "computes" for ``--think-s`` between exchanges (real workers
  come back once per chunk, about every 2 s), so the offered load is
  ``workers / think-s`` exchanges per second; the p50/p99 latency at that load.

Beside them, optionally (``--peers``), the same number of no-op tasks through Dask
distributed, Celery with Redis and Ray, via ``bench/bench_peers.py`` (the ``bench`` extra).

    .venv/bin/python bench/bench_coordinator.py [--workers 1000] [--seconds 10]
        [--think-s 0 2 0.5] [--tls] [--peers] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import psutil

from bench_support import Connection, enrol
from hydracompute.demo import start_coordinator, stop
from hydracompute.kinds.pi import BLOCK_SAMPLES
from hydracompute.kinds.pi_kernel import count_hits

SEED = 7
BLOCKS = 8192
TABLE = Path(__file__).parent / ".build" / f"pi_hits_{SEED}_{BLOCKS}.npy"
#: Jobs submitted for the whole run (each 8192 blocks of 2^20 samples).
JOBS = 100


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


@dataclass
class Figures:
    accepted: int = 0
    latencies: list[float] = field(default_factory=list)
    refused: dict[int, int] = field(default_factory=dict)


class SimulatedWorker:
    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None, n: int) -> None:
        self.connection = Connection(host, port, tls)
        self.n = n
        self.path = ""
        self.secret = ""
        self.results: list[dict[str, Any]] = []

    async def enrol(self, join_token: str) -> None:
        enrolled, _ = await enrol(self.connection, join_token, f"sim-{self.n}", 1)
        self.path = f"/api/v1/workers/{enrolled['worker_id']}/exchange"
        self.secret = enrolled["secret"]

    async def run(
        self, table: np.ndarray, deadline: float, think_s: float, figures: Figures
    ) -> None:
        loop = asyncio.get_running_loop()
        if think_s:  # spread the first exchanges over one think time
            await asyncio.sleep(think_s * (self.n * 0.618034 % 1.0))
        while loop.time() < deadline:
            body = {"results": self.results, "want": 1, "wait_s": 0.5}
            began = time.perf_counter()
            status, _, data = await self.connection.request("POST", self.path, body, self.secret)
            figures.latencies.append(time.perf_counter() - began)
            if status != 200:
                figures.refused[status] = figures.refused.get(status, 0) + 1
                self.results = []
                await asyncio.sleep(0.1)
                continue
            answer = json.loads(data)
            figures.accepted += len(answer["accepted"])
            self.results = []
            for lease in answer["leases"]:
                start, stop = lease["chunk"]["start"], lease["chunk"]["stop"]
                output = {
                    "hits": int(table[start:stop].sum()),
                    "samples": (stop - start) * BLOCK_SAMPLES,
                }
                self.results.append(
                    {"lease_id": lease["lease_id"], "output": output, "compute_s": 1e6}
                )
            if think_s:
                await asyncio.sleep(think_s)

    async def leave(self) -> None:
        await self.connection.request(
            "POST", self.path.replace("exchange", "leave"), None, self.secret
        )
        await self.connection.close()


async def drive(
    workers: list[SimulatedWorker], table: np.ndarray, seconds: float, think_s: float
) -> dict[str, Any]:
    figures = Figures()
    loop = asyncio.get_running_loop()
    began = loop.time()
    await asyncio.gather(*(w.run(table, began + seconds, think_s, figures) for w in workers))
    elapsed = loop.time() - began
    latencies = sorted(figures.latencies)
    return {
        "think_s": think_s,
        "seconds": elapsed,
        "results_per_s": figures.accepted / elapsed,
        "exchanges_per_s": len(latencies) / elapsed,
        "latency_p50_ms": 1000 * statistics.median(latencies),
        "latency_p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
        "latency_max_ms": 1000 * latencies[-1],
        "refused": figures.refused,
    }


async def run_load(
    url: str,
    token: str,
    admin: str,
    n_workers: int,
    seconds: float,
    thinks: list[float],
    tls: ssl.SSLContext | None,
    sample: Any,
) -> dict[str, Any]:
    table = hit_table()
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 443
    submitter = Connection(host, port, tls)
    job = {"kind": "pi", "params": {"samples": BLOCKS * BLOCK_SAMPLES, "seed": SEED}}
    for _ in range(JOBS):
        status, _, data = await submitter.request("POST", "/api/v1/jobs", job, admin)
        if status != 201:
            raise RuntimeError(f"job refused: {status} {data[:300]!r}")
    await submitter.close()
    workers = [SimulatedWorker(host, port, tls, n) for n in range(n_workers)]
    began = time.monotonic()
    for start in range(0, n_workers, 100):
        await asyncio.gather(*(w.enrol(token) for w in workers[start : start + 100]))
    enrolled_s = time.monotonic() - began
    scenarios = []
    for think_s in thinks:
        before = sample()
        figures = await drive(workers, table, seconds, think_s)
        after = sample()
        figures["coordinator_cpu_s"] = after[0] - before[0]
        figures["generator_cpu_s"] = after[1] - before[1]
        figures["coordinator_rss_mb"] = after[2]
        scenarios.append(figures)
    await asyncio.gather(*(w.leave() for w in workers))
    return {"workers": n_workers, "enrol_s": enrolled_s, "scenarios": scenarios}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0, help="per scenario")
    parser.add_argument(
        "--think-s",
        type=float,
        nargs="+",
        default=[0.0, 2.0, 0.5],
        help="pause of each worker between exchanges, one scenario each (0: capacity)",
    )
    parser.add_argument("--tls", action="store_true", help="TLS (default: plain HTTP)")
    parser.add_argument("--peers", action="store_true", help="also Dask, Celery, Ray")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    hit_table()
    with tempfile.TemporaryDirectory() as tmp:
        extra = ["--target-chunk-s", "0.01"] + ([] if args.tls else ["--insecure"])
        coordinator = start_coordinator(Path(tmp) / "pool", 0, extra)
        try:
            process = psutil.Process(coordinator.process.pid)
            me = psutil.Process()

            def sample() -> tuple[float, float, float]:
                """CPU seconds of the coordinator and of this process, and its RSS in MB."""
                theirs, mine = process.cpu_times(), me.cpu_times()
                rss = process.memory_info().rss / 2**20
                return theirs.user + theirs.system, mine.user + mine.system, rss

            tls = None
            if args.tls:
                tls = ssl.create_default_context(cafile=str(coordinator.data_dir / "tls/ca.pem"))
            figures = asyncio.run(
                run_load(
                    coordinator.url,
                    coordinator.join_token,
                    coordinator.admin_key,
                    args.workers,
                    args.seconds,
                    args.think_s,
                    tls,
                    sample,
                )
            )
            figures["coordinator_rss_mb"] = process.memory_info().rss / 2**20
            figures["tls"] = args.tls
        finally:
            stop(coordinator.process)
    if args.peers:
        from bench_peers import measure_peers

        done = max(1, int(figures["scenarios"][0]["results_per_s"] * args.seconds))
        figures["peers"] = measure_peers(done)
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    report(figures)


def report(figures: dict[str, Any]) -> None:
    print(
        f"{figures['workers']} simulated workers (enrolled in {figures['enrol_s']:.1f} s), "
        f"{'TLS' if figures['tls'] else 'plain HTTP'}, SQLite synchronous=FULL; "
        f"coordinator RSS {figures['coordinator_rss_mb']:.0f} MB"
    )
    print(
        f"{'think s':>8} {'results/s':>10} {'exch/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'max ms':>8} {'coord CPU':>10} {'gen CPU':>8} {'RSS MB':>7}  refused"
    )
    for s in figures["scenarios"]:
        print(
            f"{s['think_s']:>8g} {s['results_per_s']:>10.0f} {s['exchanges_per_s']:>8.0f} "
            f"{s['latency_p50_ms']:>8.1f} {s['latency_p99_ms']:>8.1f} "
            f"{s['latency_max_ms']:>8.1f} {s['coordinator_cpu_s'] / s['seconds']:>9.2f}c "
            f"{s['generator_cpu_s'] / s['seconds']:>7.2f}c {s['coordinator_rss_mb']:>7.0f}  "
            f"{s['refused'] or 'none'}"
        )
    for name, peer in figures.get("peers", {}).items():
        if "error" in peer:
            print(f"{name}: not measured ({peer['error']})")
        else:
            print(
                f"{name} {peer['version']}: {peer['tasks_per_s']:.0f} no-op tasks/s "
                f"({peer['tasks']} tasks in {peer['seconds']:.1f} s)"
            )


if __name__ == "__main__":
    main()
