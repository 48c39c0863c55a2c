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

Each simulated worker keeps a keep-alive connection of its own, opened to enrol, as a real
worker's agent does: the coordinator holds all 5,000 open (each costs it RSS, tens of
kilobytes over TLS), and the number is read off at each checkpoint. The generator speaks
HTTP/1.1 itself over asyncio streams (``bench_support.Connection``): with an HTTP client
library it, not the coordinator, would set the pace.

    .venv/bin/python bench/bench_memory.py [--workers 5000] [--cores 4] [--concurrency 200]
        [--checkpoints 10000,20000,40000,80000] [--heartbeat-s 30] [--tls] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import ssl
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import psutil

from bench_support import Connection, enrol
from hydracompute.coordinator.server import raise_open_files_limit
from hydracompute.demo import LocalCoordinator, start_coordinator, stop
from hydracompute.kinds.pi import BLOCK_SAMPLES
from hydracompute.kinds.pi_kernel import count_hits

SEED = 11
JOB_BLOCKS = 10**6
TABLE = Path(__file__).parent / ".build" / f"pi_block_hits_seed{SEED}.npy"
#: Enrolments allowed per source address before the coordinator's limiter slows them (its
#: burst is 200; leave some room).
ENROLMENTS_PER_ADDRESS = 150


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
    secret: str
    #: The worker's own keep-alive connection, opened to enrol, as a real worker's agent.
    connection: Connection
    results: list[dict[str, Any]] = field(default_factory=list)


class Load:
    """Simulated workers exchanging until told to stop, pausable at checkpoints."""

    def __init__(self, table: np.ndarray, cores: int, concurrency: int) -> None:
        self.table, self.cores = table, cores
        self.slots = asyncio.Semaphore(concurrency)
        self.running = asyncio.Event()
        self.running.set()
        self.idle = asyncio.Event()
        self.idle.set()
        self.stopping = False
        self.in_flight = 0
        self.accepted = 0
        self.exchanges = 0
        self.refused: dict[int, int] = {}
        self.transport_errors: dict[str, int] = {}
        self.latencies: list[float] = []

    async def worker(self, sim: SimWorker) -> None:
        path = f"/api/v1/workers/{sim.worker_id}/exchange"
        while not self.stopping:
            await self.running.wait()
            async with self.slots:
                if self.stopping or not self.running.is_set():
                    continue
                self.in_flight += 1
                self.idle.clear()
                answered: tuple[int, dict[str, str], bytes] | None = None
                try:
                    began = time.perf_counter()
                    # Once stopping, only the results in hand are sent: no more leases.
                    want = 0 if self.stopping else self.cores
                    body = {"results": sim.results, "want": want, "wait_s": 0.0}
                    answered = await sim.connection.request("POST", path, body, sim.secret)
                    self.latencies.append(time.perf_counter() - began)
                except (OSError, asyncio.IncompleteReadError) as exc:
                    # As a worker would: a new connection, the same results again.
                    name = type(exc).__name__
                    self.transport_errors[name] = self.transport_errors.get(name, 0) + 1
                    await sim.connection.close()
                finally:
                    self.in_flight -= 1
                    if not self.in_flight:
                        self.idle.set()
            if answered is None:
                await asyncio.sleep(0.5)
                continue
            self.exchanges += 1
            status, _, data = answered
            if status != 200:
                self.refused[status] = self.refused.get(status, 0) + 1
                await asyncio.sleep(1.0)
                continue
            answer = json.loads(data)
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
        await self.idle.wait()


def rss_mb(process: psutil.Process) -> float:
    return process.memory_info().rss / 2**20


async def enrol_all(
    host: str, port: int, tls: ssl.SSLContext | None, token: str, workers: int, cores: int
) -> tuple[list[SimWorker], int]:
    """Enrol ``workers``, each over a connection of its own from one of several loopback
    addresses; returns them (their connections still open) and how many times the
    coordinator asked to slow down."""
    addresses = [f"127.0.1.{k + 1}" for k in range(math.ceil(workers / ENROLMENTS_PER_ADDRESS))]
    slots = asyncio.Semaphore(32)
    slowed = 0

    async def enrol_one(n: int) -> SimWorker:
        nonlocal slowed
        connection = Connection(host, port, tls, addresses[n % len(addresses)])
        enrolled, times = await enrol(connection, token, f"sim-{n}", cores, slots)
        slowed += times
        return SimWorker(enrolled["worker_id"], enrolled["secret"], connection)

    return list(await asyncio.gather(*(enrol_one(n) for n in range(workers)))), slowed


def connections_held(process: psutil.Process, port: int) -> int:
    """TCP connections the coordinator holds open on its port."""
    return sum(
        1
        for c in process.net_connections(kind="tcp")
        if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port
    )


async def run(
    coordinator: LocalCoordinator, args: argparse.Namespace, tls: ssl.SSLContext | None
) -> dict:
    process = psutil.Process(coordinator.process.pid)
    parts = urlsplit(coordinator.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 443
    checkpoints = sorted(int(c) for c in args.checkpoints.split(","))
    # Leases in hand at the last checkpoint reach beyond it by up to one per worker core.
    # The last checkpoint is noticed a round of exchanges late: up to two rounds of leases.
    table = hit_table(checkpoints[-1] + 2 * args.workers * args.cores + 10_000)
    figures: dict[str, Any] = {"rss_started_mb": rss_mb(process)}
    began = time.monotonic()
    sims, slowed = await enrol_all(
        host, port, tls, coordinator.join_token, args.workers, args.cores
    )
    figures["enrol_s"] = time.monotonic() - began
    figures["enrol_slowed_429"] = slowed
    await asyncio.sleep(1.0)
    figures["rss_enrolled_mb"] = rss_mb(process)
    figures["connections_enrolled"] = connections_held(process, port)

    admin = Connection(host, port, tls)
    tasks: list[asyncio.Task[None]] = []
    try:
        job = {"kind": "pi", "params": {"samples": JOB_BLOCKS * BLOCK_SAMPLES, "seed": SEED}}
        status, _, data = await admin.request("POST", "/api/v1/jobs", job, coordinator.admin_key)
        if status != 201:
            raise RuntimeError(f"job refused: {status} {data[:300]!r}")
        job_id = json.loads(data)["job_id"]
        assert json.loads(data)["total_units"] == JOB_BLOCKS
        await asyncio.sleep(1.0)
        figures["rss_submitted_mb"] = rss_mb(process)

        async def units_done() -> int:
            path = f"/api/v1/jobs/{job_id}"
            _, _, view = await admin.request("GET", path, token=coordinator.admin_key)
            return int(json.loads(view)["units_done"])

        load = Load(table, args.cores, args.concurrency)
        tasks = [asyncio.create_task(load.worker(sim)) for sim in sims]
        samples = [{"chunks_done": 0, "rss_mb": figures["rss_submitted_mb"]}]
        samples[0].update(elapsed_s=0.0, coordinator_cpu_s=0.0, connections=0)
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
                    "connections": connections_held(process, port),
                }
            )
            if not args.json:
                print(
                    f"  {done:>7} chunks done: RSS {samples[-1]['rss_mb']:.1f} MB "
                    f"({elapsed:.0f} s of load, {samples[-1]['connections']} connections)",
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
        await asyncio.gather(admin.close(), *(sim.connection.close() for sim in sims))
    latencies = sorted(load.latencies)
    figures.update(
        workers=args.workers,
        cores=args.cores,
        concurrency=args.concurrency,
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
    # One connection per simulated worker, and a few more: many systems start processes
    # with a soft limit of 1,024 open files.
    if (limit := raise_open_files_limit()) != -1 and limit < args.workers + 64:
        sys.exit(
            f"{args.workers} workers need {args.workers + 64} open files; the limit is {limit}"
        )
    with tempfile.TemporaryDirectory() as tmp:
        extra = ["--target-chunk-s", "0.01", "--heartbeat-s", str(args.heartbeat_s)]
        coordinator = start_coordinator(
            Path(tmp) / "pool", 0, extra + ([] if args.tls else ["--insecure"])
        )
        try:
            tls = None
            if args.tls:
                tls = ssl.create_default_context(cafile=str(coordinator.data_dir / "tls/ca.pem"))
            figures = asyncio.run(run(coordinator, args, tls))
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
        f"({figures['enrol_s']:.1f} s; slowed down {figures['enrol_slowed_429']} times; "
        f"{figures['connections_enrolled']} connections held)"
    )
    print(f"RSS after submitting the job: {figures['rss_submitted_mb']:7.1f} MB")
    print(f"{'chunks done':>12} {'RSS MB':>8} {'load s':>7} {'coord. CPU s':>13} {'conns':>6}")
    for s in figures["samples"]:
        print(
            f"{s['chunks_done']:>12,} {s['rss_mb']:>8.1f} {s['elapsed_s']:>7.0f} "
            f"{s['coordinator_cpu_s']:>13.1f} {s['connections']:>6}"
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
