"""Coordinator resident memory with thousands of enrolled workers and a job of 10^6 chunks.

Target (from the issue): the coordinator's resident memory stays under 300 MB with 5,000
enrolled workers and a job of 10^6 chunks, and does not grow with the number of completed
chunks.

A real ``hydracompute coordinator`` process (SQLite file, ``--target-chunk-s 0.01``) is
driven over HTTP by one load-generator process: it enrols the workers with the join token
(spread over several loopback source addresses, as separate machines would be: enrolment is
rate-limited per address), submits a π job of 10^6 blocks (one block = 2^20 samples), then
every simulated worker loops on exchanges that return its previous chunks' results and ask
for as many chunks as it has cores. At most ``--concurrency`` exchanges are in flight, so
each worker exchanges about every ``workers / exchanges-per-second`` seconds; the
coordinator's heartbeat is raised (``--heartbeat-s``) so that its leases do not expire in
between. Chunks stay one block long (each lease's compute time is believed only up to its
age, which is far above the 10 ms target), and only the first blocks of the job are ever
completed, so only their hit counts are computed for real (once, cached in
``bench/.build/``): the coordinator checks each output as it would a real worker's.

The coordinator's RSS (psutil) is sampled after it starts, after the enrolment, after the
job is submitted, and each time the number of completed chunks passes a checkpoint (the
load is paused and drained first). Prints RSS against completed chunks and the slope.

``--concurrency`` is also the number of connections the coordinator holds open. Real workers
each keep one, and over TLS each costs the coordinator tens of kilobytes of RSS, so
``--tls --concurrency 5000`` is the closest to 5,000 connected workers (at the price of
multi-second exchange latencies from this one generator process).

    .venv/bin/python bench/bench_memory.py [--workers 5000] [--cores 4] [--concurrency 200]
        [--checkpoints 10000,20000,40000,80000] [--heartbeat-s 30] [--tls] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

from hydracompute.demo import LocalCoordinator, start_coordinator, stop
from hydracompute.kinds.pi import BLOCK_SAMPLES
from hydracompute.kinds.pi_kernel import count_hits

SEED = 11
JOB_BLOCKS = 10**6
TABLE = Path(__file__).parent / ".build" / f"pi_block_hits_seed{SEED}.npy"
#: Enrolments allowed per source address before the coordinator's limiter slows them (its
#: burst is 200; leave some room).
ENROLMENTS_PER_ADDRESS = 150
#: Exchanges in flight per HTTP client of the load generator.
CONNECTIONS_PER_CLIENT = 8


def hit_table(blocks: int) -> np.ndarray:
    """Hits of each of the first ``blocks`` blocks of seed ``SEED`` (cached, extended as
    needed; about 0.5 ms of one core per block)."""
    table = np.load(TABLE) if TABLE.exists() else np.zeros(0, dtype=np.int64)
    if len(table) >= blocks:
        return table
    missing = range(len(table), blocks)
    print(f"computing hit counts of blocks {missing.start}-{missing.stop - 1} ...", file=sys.stderr)

    def hits(block: int) -> int:
        return count_hits(SEED, block * BLOCK_SAMPLES, (block + 1) * BLOCK_SAMPLES)

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:  # count_hits releases the GIL
        extra = np.fromiter(pool.map(hits, missing, chunksize=256), dtype=np.int64)
    table = np.concatenate([table, extra])
    TABLE.parent.mkdir(parents=True, exist_ok=True)
    np.save(TABLE, table)
    return table


@dataclass
class SimWorker:
    worker_id: str
    headers: dict[str, str]
    results: list[dict[str, Any]] = field(default_factory=list)


class Load:
    """Simulated workers exchanging until told to stop, pausable at checkpoints."""

    def __init__(self, clients: list[httpx.AsyncClient], table: np.ndarray, cores: int) -> None:
        self.clients, self.table, self.cores = clients, table, cores
        # One client per few connections: httpx's pool is slow with many connections.
        self.slots = [asyncio.Semaphore(CONNECTIONS_PER_CLIENT) for _ in clients]
        self.running = asyncio.Event()
        self.running.set()
        self.stopping = False
        self.in_flight = 0
        self.accepted = 0
        self.exchanges = 0
        self.refused: dict[int, int] = {}
        self.transport_errors: dict[str, int] = {}
        self.latencies: list[float] = []

    async def worker(self, n: int, sim: SimWorker) -> None:
        url = f"/api/v1/workers/{sim.worker_id}/exchange"
        http, slots = self.clients[n % len(self.clients)], self.slots[n % len(self.clients)]
        while not self.stopping:
            await self.running.wait()
            async with slots:
                if self.stopping or not self.running.is_set():
                    continue
                self.in_flight += 1
                response: httpx.Response | None = None
                try:
                    began = time.perf_counter()
                    # Once stopping, only the results in hand are sent: no more leases.
                    want = 0 if self.stopping else self.cores
                    body = {"results": sim.results, "want": want, "wait_s": 0.0}
                    response = await http.post(url, json=body, headers=sim.headers)
                    self.latencies.append(time.perf_counter() - began)
                except httpx.TransportError as exc:  # as a worker would: retry, same results
                    name = type(exc).__name__
                    self.transport_errors[name] = self.transport_errors.get(name, 0) + 1
                finally:
                    self.in_flight -= 1
            if response is None:
                await asyncio.sleep(0.5)
                continue
            self.exchanges += 1
            if response.status_code != 200:
                self.refused[response.status_code] = self.refused.get(response.status_code, 0) + 1
                await asyncio.sleep(1.0)
                continue
            answer = response.json()
            self.accepted += len(answer["accepted"])
            sim.results = [self._result(lease) for lease in answer["leases"]]

    def _result(self, lease: dict[str, Any]) -> dict[str, Any]:
        start, stop = lease["chunk"]["start"], lease["chunk"]["stop"]
        if stop > len(self.table):
            raise RuntimeError(f"lease for blocks {start}-{stop} beyond the hit table")
        output = {
            "hits": int(self.table[start:stop].sum()),
            "samples": (stop - start) * BLOCK_SAMPLES,
        }
        return {"lease_id": lease["lease_id"], "output": output, "compute_s": 1e6}

    async def pause(self) -> None:
        """Stop starting exchanges and wait for those in flight to be answered."""
        self.running.clear()
        while self.in_flight:
            await asyncio.sleep(0.01)


def rss_mb(process: psutil.Process) -> float:
    return process.memory_info().rss / 2**20


async def enrol_all(
    url: str, verify: Any, token: str, workers: int, cores: int
) -> tuple[list[SimWorker], int]:
    """Enrol ``workers`` over HTTP, from several loopback addresses; returns them and how
    many times the coordinator asked to slow down."""
    addresses = [f"127.0.1.{k + 1}" for k in range(math.ceil(workers / ENROLMENTS_PER_ADDRESS))]
    clients = [
        httpx.AsyncClient(
            base_url=url,
            verify=verify,
            timeout=60,
            transport=httpx.AsyncHTTPTransport(local_address=address, verify=verify),
        )
        for address in addresses
    ]
    slots = asyncio.Semaphore(32)
    slowed = 0

    async def enrol(n: int) -> SimWorker:
        nonlocal slowed
        body = {"join_token": token, "name": f"sim-{n}", "cores": cores, "kinds": ["pi"]}
        while True:
            async with slots:
                response = await clients[n % len(clients)].post("/api/v1/workers", json=body)
            if response.status_code != 429:
                break
            slowed += 1
            await asyncio.sleep(float(response.headers.get("Retry-After", 1)))
        response.raise_for_status()
        enrolled = response.json()
        return SimWorker(enrolled["worker_id"], {"Authorization": f"Bearer {enrolled['secret']}"})

    try:
        sims = await asyncio.gather(*(enrol(n) for n in range(workers)))
    finally:
        for client in clients:
            await client.aclose()
    return list(sims), slowed


async def run(coordinator: LocalCoordinator, args: argparse.Namespace, verify: Any) -> dict:
    process = psutil.Process(coordinator.process.pid)
    checkpoints = sorted(int(c) for c in args.checkpoints.split(","))
    # Leases in hand at the last checkpoint reach beyond it by up to one per worker core.
    # The last checkpoint is noticed a round of exchanges late: up to two rounds of leases.
    table = hit_table(checkpoints[-1] + 2 * args.workers * args.cores + 10_000)
    figures: dict[str, Any] = {"rss_started_mb": rss_mb(process)}
    began = time.monotonic()
    sims, slowed = await enrol_all(
        coordinator.url, verify, coordinator.join_token, args.workers, args.cores
    )
    figures["enrol_s"] = time.monotonic() - began
    figures["enrol_slowed_429"] = slowed
    await asyncio.sleep(1.0)
    figures["rss_enrolled_mb"] = rss_mb(process)

    admin = {"Authorization": f"Bearer {coordinator.admin_key}"}
    limits = httpx.Limits(
        max_connections=CONNECTIONS_PER_CLIENT, max_keepalive_connections=CONNECTIONS_PER_CLIENT
    )
    clients = [
        httpx.AsyncClient(base_url=coordinator.url, limits=limits, verify=verify, timeout=120)
        for _ in range(math.ceil(args.concurrency / CONNECTIONS_PER_CLIENT))
    ]
    http = clients[0]
    tasks: list[asyncio.Task[None]] = []
    try:
        job = {"kind": "pi", "params": {"samples": JOB_BLOCKS * BLOCK_SAMPLES, "seed": SEED}}
        response = await http.post("/api/v1/jobs", json=job, headers=admin)
        response.raise_for_status()
        job_id = response.json()["job_id"]
        assert response.json()["total_units"] == JOB_BLOCKS
        await asyncio.sleep(1.0)
        figures["rss_submitted_mb"] = rss_mb(process)

        async def units_done() -> int:
            view = (await http.get(f"/api/v1/jobs/{job_id}", headers=admin)).json()
            return int(view["units_done"])

        load = Load(clients, table, args.cores)
        tasks = [asyncio.create_task(load.worker(n, sim)) for n, sim in enumerate(sims)]
        samples = [{"chunks_done": 0, "rss_mb": figures["rss_submitted_mb"]}]
        samples[0].update(elapsed_s=0.0, coordinator_cpu_s=0.0)
        cpu0, mine0 = process.cpu_times(), psutil.Process().cpu_times()
        began = time.monotonic()
        for checkpoint in checkpoints:
            while load.accepted < checkpoint:
                await asyncio.sleep(0.05)
                if coordinator.process.poll() is not None:
                    log = (coordinator.data_dir / "coordinator.log").read_text()[-2000:]
                    raise RuntimeError(f"the coordinator exited; its log ends:\n{log}")
                for task in tasks:  # a generator bug must stop the run, not hang it
                    if task.done() and task.exception():
                        raise task.exception()  # type: ignore[misc]
            await load.pause()
            elapsed = time.monotonic() - began
            await asyncio.sleep(1.0)  # let the store thread finish its last batch
            done = await units_done()
            cpu = process.cpu_times()
            samples.append(
                {
                    "chunks_done": done,
                    "rss_mb": rss_mb(process),
                    "elapsed_s": elapsed,
                    "coordinator_cpu_s": cpu.user + cpu.system - cpu0.user - cpu0.system,
                }
            )
            if not args.json:
                print(
                    f"  {done:>7} chunks done: RSS {samples[-1]['rss_mb']:.1f} MB "
                    f"({elapsed:.0f} s of load)",
                    file=sys.stderr,
                )
            load.running.set()
        mine1 = psutil.Process().cpu_times()
        load.stopping = True
        load.running.set()
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for client in clients:
            await client.aclose()
    latencies = sorted(load.latencies)
    figures.update(
        workers=args.workers,
        cores=args.cores,
        concurrency=len(clients) * CONNECTIONS_PER_CLIENT,
        tls=args.tls,
        job_chunks=JOB_BLOCKS,
        samples=samples,
        exchanges=load.exchanges,
        refused=load.refused,
        transport_errors=load.transport_errors,
        chunks_per_s=samples[-1]["chunks_done"] / samples[-1]["elapsed_s"],
        latency_p50_ms=1000 * statistics.median(latencies),
        generator_cpu_s=mine1.user + mine1.system - mine0.user - mine0.system,
        db_mb=sum(p.stat().st_size for p in coordinator.data_dir.glob("coordinator.db*")) / 2**20,
    )
    return figures


def slopes(samples: list[dict[str, float]]) -> dict[str, float]:
    """MB per 10k chunks over the checkpoints after the first (which includes one-off costs:
    the leases in hand, caches filling): least squares, and first to last."""
    samples = samples[1:]
    x = np.array([s["chunks_done"] for s in samples], dtype=float)
    y = np.array([s["rss_mb"] for s in samples])
    fitted = float(np.polyfit(x, y, 1)[0]) * 1e4 if len(x) > 1 else float("nan")
    ends = (y[-1] - y[0]) / (x[-1] - x[0]) * 1e4 if len(x) > 1 else float("nan")
    last = (y[-1] - y[-2]) / (x[-1] - x[-2]) * 1e4 if len(x) > 1 else float("nan")
    return {
        "fit_mb_per_10k": fitted,
        "first_to_last_mb_per_10k": ends,
        "last_interval_mb_per_10k": last,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=5000)
    parser.add_argument("--cores", type=int, default=4, help="cores each worker declares")
    parser.add_argument("--concurrency", type=int, default=200, help="exchanges in flight")
    parser.add_argument("--checkpoints", default="10000,20000,40000,80000")
    parser.add_argument("--heartbeat-s", type=float, default=30.0)
    parser.add_argument("--tls", action="store_true", help="TLS (default: plain HTTP)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        extra = ["--target-chunk-s", "0.01", "--heartbeat-s", str(args.heartbeat_s)]
        coordinator = start_coordinator(
            Path(tmp) / "pool", 0, extra + ([] if args.tls else ["--insecure"])
        )
        try:
            verify: Any = True
            if args.tls:
                from hydracompute import tls

                verify = tls.verification(coordinator.url, coordinator.ca_fingerprint)
            figures = asyncio.run(run(coordinator, args, verify))
        finally:
            stop(coordinator.process)
    figures.update(slopes(figures["samples"]))
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(
        f"coordinator on SQLite, {'TLS' if args.tls else 'plain HTTP'}; {args.workers} workers "
        f"of {args.cores} cores, {args.concurrency} exchanges in flight; π job of "
        f"{JOB_BLOCKS:,} one-block chunks"
    )
    print(f"RSS at start:                 {figures['rss_started_mb']:7.1f} MB")
    print(
        f"RSS after enrolling {args.workers:,}:    {figures['rss_enrolled_mb']:7.1f} MB "
        f"({figures['enrol_s']:.1f} s; slowed down {figures['enrol_slowed_429']} times)"
    )
    print(f"RSS after submitting the job: {figures['rss_submitted_mb']:7.1f} MB")
    print(f"{'chunks done':>12} {'RSS MB':>8} {'load s':>7} {'coord. CPU s':>13}")
    for s in figures["samples"]:
        print(
            f"{s['chunks_done']:>12,} {s['rss_mb']:>8.1f} {s['elapsed_s']:>7.0f} "
            f"{s['coordinator_cpu_s']:>13.1f}"
        )
    print(
        f"slope: {figures['fit_mb_per_10k']:+.2f} MB per 10k chunks (least squares over the "
        f"checkpoints after the first), {figures['first_to_last_mb_per_10k']:+.2f} from the "
        f"first to the last, {figures['last_interval_mb_per_10k']:+.2f} over the last interval"
    )
    print(
        f"load: {figures['chunks_per_s']:.0f} chunks/s, {figures['exchanges']:,} exchanges "
        f"(p50 {figures['latency_p50_ms']:.0f} ms), refused: {figures['refused'] or 'none'}, "
        f"connection errors (retried): {figures['transport_errors'] or 'none'}; "
        f"database {figures['db_mb']:.0f} MB on disk"
    )


if __name__ == "__main__":
    main()
