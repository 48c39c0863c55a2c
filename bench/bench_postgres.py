"""One coordinator on PostgreSQL beside one on SQLite, and two on one PostgreSQL database,
in the same run: results per second.

The load is ``bench/bench_coordinator.py``'s (simulated workers over plain HTTP returning
real π results, one chunk per exchange, 100 running jobs); each round starts a fresh
coordinator on SQLite (``synchronous=FULL``), one on a fresh PostgreSQL schema, and two
coordinator processes on one fresh schema (each serving half of the workers), one after
the other, and the rounds alternate their order. It reports each one's CPU (coordinators,
load generator, and the PostgreSQL server: every ``postgres`` process on this machine),
and the server's commits and rows written per result (``pg_stat_database`` of the
database, so other clients of the same database count too). Counted in this process on a
``Store`` driving batches of exchanges as the coordinator does: SQL statements the server
runs per accepted result and round trips per batch (a psycopg hook).

    .venv/bin/python bench/bench_postgres.py [--workers 500] [--seconds 8] [--rounds 2]
        [--postgres postgresql://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import psycopg
from psycopg import sql

from bench_coordinator import (
    BLOCKS,
    JOBS,
    SEED,
    SimulatedWorker,
    drive,
    hit_table,
    run_load,
)
from bench_support import Connection
from hydracompute.core.config import SchedulerConfig
from hydracompute.demo import start_coordinator, stop
from hydracompute.kinds import default_registry
from hydracompute.kinds.pi import BLOCK_SAMPLES
from hydracompute.kinds.pi_kernel import count_hits
from hydracompute.store import ResultReport, Store
from hydracompute.store.postgres import PostgresBackend
from hydracompute.store.records import ExchangeRequest

STAT_COLUMNS = ("xact_commit", "tup_inserted", "tup_updated", "tup_deleted")


def server_cpu_s() -> float:
    """CPU seconds of every PostgreSQL server process on this machine."""
    total = 0.0
    for process in psutil.process_iter(["name"]):
        if process.info["name"] in ("postgres", "postmaster"):
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
    return total


def backends_cpu_s(clients: list[int], port: int) -> dict[int, float]:
    """CPU seconds so far of each PostgreSQL backend process serving a connection of the
    processes ``clients`` to the server on ``port`` (found by their sockets)."""
    sockets = psutil.net_connections("tcp")
    mine = {c.laddr.port for c in sockets if c.pid in clients and c.raddr and c.raddr.port == port}
    backends = {
        c.pid
        for c in sockets
        if c.pid and c.laddr.port == port and c.raddr and c.raddr.port in mine
    }
    spent = {}
    for pid in backends:
        try:
            spent[pid] = sum(psutil.Process(pid).cpu_times()[:2])
        except psutil.Error:
            continue
    return spent


def backends_spent_s(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU spent between two :func:`backends_cpu_s` (a backend started since counts whole)."""
    return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def database_stats(url: str) -> dict[str, int]:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            f"SELECT {', '.join(STAT_COLUMNS)} FROM pg_stat_database "
            "WHERE datname = current_database()"
        ).fetchone()
    assert row is not None
    return dict(zip(STAT_COLUMNS, map(int, row), strict=True))


@contextmanager
def schema_of_its_own(url: str) -> Iterator[str]:
    name = f"bench_{secrets.token_hex(4)}"
    try:
        yield name
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def measure(store_url: str | None, args: argparse.Namespace) -> dict[str, Any]:
    """One coordinator on ``store_url`` (SQLite in its data directory if ``None``) under
    the capacity load; its results per second and CPU."""
    with tempfile.TemporaryDirectory() as tmp:
        extra = ["--target-chunk-s", "0.01", "--insecure"]
        if store_url is not None:
            extra += ["--store", store_url]
        coordinator = start_coordinator(Path(tmp) / "pool", 0, extra)
        try:
            process = psutil.Process(coordinator.process.pid)
            me = psutil.Process()

            def sample() -> tuple[float, float, float]:
                theirs, mine = process.cpu_times(), me.cpu_times()
                return theirs.user + theirs.system, mine.user + mine.system, 0.0

            server_before = server_cpu_s()
            port = urlsplit(args.postgres).port or 5432
            backends_before = backends_cpu_s([coordinator.process.pid], port)
            stats_before = database_stats(args.postgres)
            figures = asyncio.run(
                run_load(
                    coordinator.url,
                    coordinator.join_token,
                    coordinator.admin_key,
                    args.workers,
                    args.seconds,
                    [0.0],
                    None,
                    sample,
                )
            )
            stats_after = database_stats(args.postgres)
            server_s = server_cpu_s() - server_before
            backends_s = backends_spent_s(
                backends_before, backends_cpu_s([coordinator.process.pid], port)
            )
        finally:
            stop(coordinator.process)
    scenario = figures["scenarios"][0]
    results = scenario["results_per_s"] * scenario["seconds"]
    return {
        "results_per_s": scenario["results_per_s"],
        "latency_p50_ms": scenario["latency_p50_ms"],
        "coordinator_cores": scenario["coordinator_cpu_s"] / scenario["seconds"],
        "generator_cores": scenario["generator_cpu_s"] / scenario["seconds"],
        "server_cores": server_s / scenario["seconds"],
        "backend_cores": backends_s / scenario["seconds"],
        "server_cpu_ms_per_result": 1000 * server_s / max(results, 1),
        "backend_cpu_ms_per_result": 1000 * backends_s / max(results, 1),
        "per_result": {
            k: (stats_after[k] - stats_before[k]) / max(results, 1) for k in STAT_COLUMNS
        },
    }


def measure_two(store_url: str, args: argparse.Namespace) -> dict[str, Any]:
    """Two coordinators on ``store_url`` under the capacity load, each serving half of the
    workers (enrolled with it); their results per second together, and the CPU split."""
    with tempfile.TemporaryDirectory() as tmp:
        extra = ["--target-chunk-s", "0.01", "--insecure", "--store", store_url]
        coordinators = [start_coordinator(Path(tmp) / f"pool{k}", 0, extra) for k in (0, 1)]
        try:
            processes = [psutil.Process(c.process.pid) for c in coordinators]
            server_before, me = server_cpu_s(), psutil.Process()
            pids, port = [p.pid for p in processes], urlsplit(args.postgres).port or 5432
            backends_before = backends_cpu_s(pids, port)
            figures, cpu = asyncio.run(_drive_two(coordinators, processes, me, args))
            server_s = server_cpu_s() - server_before
            backends_s = backends_spent_s(backends_before, backends_cpu_s(pids, port))
        finally:
            for coordinator in coordinators:
                stop(coordinator.process)
    results = figures["results_per_s"] * figures["seconds"]
    return {
        "results_per_s": figures["results_per_s"],
        "latency_p50_ms": figures["latency_p50_ms"],
        "coordinator_cores": [c / figures["seconds"] for c in cpu[:2]],
        "generator_cores": cpu[2] / figures["seconds"],
        "server_cores": server_s / figures["seconds"],
        "backend_cores": backends_s / figures["seconds"],
        "server_cpu_ms_per_result": 1000 * server_s / max(results, 1),
        "backend_cpu_ms_per_result": 1000 * backends_s / max(results, 1),
    }


async def _drive_two(
    coordinators: list[Any], processes: list[psutil.Process], me: psutil.Process, args: Any
) -> tuple[dict[str, Any], list[float]]:
    table = hit_table()
    hosts = [urlsplit(c.url) for c in coordinators]
    submitter = Connection(hosts[0].hostname or "127.0.0.1", hosts[0].port or 443, None)
    job = {"kind": "pi", "params": {"samples": BLOCKS * BLOCK_SAMPLES, "seed": SEED}}
    for _ in range(JOBS):
        status, _, data = await submitter.request(
            "POST", "/api/v1/jobs", job, coordinators[0].admin_key
        )
        if status != 201:
            raise RuntimeError(f"job refused: {status} {data[:300]!r}")
    await submitter.close()
    workers = [
        SimulatedWorker(hosts[n % 2].hostname or "", hosts[n % 2].port or 443, None, n)
        for n in range(args.workers)
    ]
    for start in range(0, len(workers), 100):
        await asyncio.gather(
            *(w.enrol(coordinators[w.n % 2].join_token) for w in workers[start : start + 100])
        )

    def cpu() -> list[float]:
        return [sum(p.cpu_times()[:2]) for p in (*processes, me)]

    before = cpu()
    figures = await drive(workers, table, args.seconds, 0.0)
    spent = [b - a for a, b in zip(before, cpu(), strict=True)]
    await asyncio.gather(*(w.leave() for w in workers))
    return figures, spent


def statements_per_result(
    url: str, schema: str, exchanges: int = 64, rounds: int = 20
) -> tuple[float, float]:
    """SQL statements the server runs per accepted result (each row of an
    ``executemany`` counts), and round trips per batch (a pipeline, or a statement outside
    one), of a ``Store`` on PostgreSQL driving batches of ``exchanges`` exchanges each
    returning one result and asking for one chunk."""
    counted = {"statements": 0, "round trips": 0, "batches": 0}
    execute, executemany = psycopg.Connection.execute, psycopg.Cursor.executemany
    pipeline = psycopg.Connection.pipeline

    def counting_execute(self: psycopg.Connection[Any], *a: Any, **k: Any) -> Any:
        counted["statements"] += 1
        if self._pipeline is None:
            counted["round trips"] += 1
        return execute(self, *a, **k)

    def counting_executemany(self: psycopg.Cursor[Any], query: Any, rows: Any, **k: Any) -> None:
        rows = list(rows)
        counted["statements"] += len(rows)
        if self.connection._pipeline is None:
            counted["round trips"] += 1
        executemany(self, query, rows, **k)

    def counting_pipeline(self: psycopg.Connection[Any]) -> Any:
        counted["round trips"] += 1
        return pipeline(self)

    store = Store(PostgresBackend(url, schema), default_registry(), SchedulerConfig(0.01))
    try:
        store.submit_job("pi", {"samples": 8192 * BLOCK_SAMPLES, "seed": 7}, now=0.0)
        workers = [
            store.enrol_worker(f"w{k}", 1, ["pi"], 0.0)[0].worker_id for k in range(exchanges)
        ]
        held: dict[str, list[ResultReport]] = {w: [] for w in workers}
        now, accepted = 0.0, 0
        psycopg.Connection.execute = counting_execute  # type: ignore[method-assign,assignment]
        psycopg.Cursor.executemany = counting_executemany  # type: ignore[method-assign]
        psycopg.Connection.pipeline = counting_pipeline  # type: ignore[method-assign,assignment]
        for _ in range(rounds):
            counted["batches"] += 1
            now += 0.01
            requests = [ExchangeRequest(w, held[w], [], 1, now) for w in workers]
            for worker_id, outcome in zip(workers, store.exchange_many(requests), strict=True):
                assert not isinstance(outcome, Exception), outcome
                accepted += len(outcome.accepted)
                held[worker_id] = [
                    ResultReport(
                        g.lease_id,
                        {"hits": count_hits(7, g.start * BLOCK_SAMPLES, g.stop * BLOCK_SAMPLES),
                         "samples": (g.stop - g.start) * BLOCK_SAMPLES},
                        compute_s=1e6,
                    )
                    for g in outcome.leases
                ]  # fmt: skip
    finally:
        psycopg.Connection.execute = execute  # type: ignore[method-assign]
        psycopg.Cursor.executemany = executemany  # type: ignore[method-assign]
        psycopg.Connection.pipeline = pipeline  # type: ignore[method-assign]
        store.close()
    return counted["statements"] / max(accepted, 1), counted["round trips"] / counted["batches"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=2, help="rounds, in rotating order")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    hit_table()
    runs: dict[str, list[dict[str, Any]]] = {"sqlite": [], "postgresql": [], "2 x pg": []}
    order = list(runs)
    for _ in range(args.rounds):
        for backend in order:
            if backend == "sqlite":
                runs[backend].append(measure(None, args))
                continue
            with schema_of_its_own(args.postgres) as schema:
                url = f"{args.postgres}?schema={schema}"
                runs[backend].append(
                    measure(url, args) if backend == "postgresql" else measure_two(url, args)
                )
        order = order[1:] + order[:1]
    with schema_of_its_own(args.postgres) as schema:
        statements, round_trips = statements_per_result(args.postgres, schema)
    report(runs, statements, round_trips, args)


def report(
    runs: dict[str, list[dict[str, Any]]],
    statements: float,
    round_trips: float,
    args: argparse.Namespace,
) -> None:
    def median(figures: list[dict[str, Any]], key: str) -> float:
        return statistics.median(f[key] for f in figures)

    print(
        f"{args.workers} simulated workers, plain HTTP, capacity (no think time), "
        f"{args.seconds:g} s per run, {args.rounds} rounds in rotating order; "
        f"load average {' '.join(f'{x:.1f}' for x in psutil.getloadavg())}"
    )
    print(f"{'store':>10} {'results/s':>10} {'p50 ms':>7} {'coord':>11} {'server':>7} "
          f"{'backends':>8} {'gen':>6}  runs")  # fmt: skip
    for backend, figures in runs.items():
        rates = [f["results_per_s"] for f in figures]
        cores = [f["coordinator_cores"] for f in figures]
        if isinstance(cores[0], list):
            coord = "+".join(f"{statistics.median(c[k] for c in cores):.2f}" for k in (0, 1))
        else:
            coord = f"{statistics.median(cores):.2f}"
        print(
            f"{backend:>10} {statistics.median(rates):>10.0f} "
            f"{median(figures, 'latency_p50_ms'):>7.1f} {coord:>10}c "
            f"{median(figures, 'server_cores'):>6.2f}c "
            f"{median(figures, 'backend_cores') if backend != 'sqlite' else 0:>7.2f}c "
            f"{median(figures, 'generator_cores'):>5.2f}c  "
            f"{', '.join(f'{r:.0f}' for r in rates)}"
        )
    sqlite, pg, two = (median(runs[k], "results_per_s") for k in runs)
    print(f"PostgreSQL / SQLite: {pg / sqlite:.2f}; two coordinators / one: {two / pg:.2f}")
    one, both = runs["postgresql"], runs["2 x pg"]
    print(
        "PostgreSQL CPU per accepted result, one coordinator: "
        f"{median(one, 'backend_cpu_ms_per_result'):.3f} ms in its backends, "
        f"{median(one, 'server_cpu_ms_per_result'):.3f} ms in every postgres process here; "
        f"two: {median(both, 'backend_cpu_ms_per_result'):.3f} and "
        f"{median(both, 'server_cpu_ms_per_result'):.3f} ms"
    )
    print(
        "pg_stat_database per accepted result (the whole database): "
        + ", ".join(
            f"{statistics.median(f['per_result'][k] for f in runs['postgresql']):.2f} {k}"
            for k in STAT_COLUMNS
        )
    )
    print(
        f"In a Store, batches of 64 exchanges: {statements:.2f} SQL statements run per "
        f"accepted result, {round_trips:.1f} round trips per batch"
    )
    print("(server: every postgres process here; backends: those serving the coordinators)")


if __name__ == "__main__":
    main()
