"""One coordinator on PostgreSQL beside one on SQLite, in the same run: results per second.

The load is ``bench/bench_coordinator.py``'s (simulated workers over plain HTTP returning
real π results, one chunk per exchange); each round starts a fresh coordinator on SQLite
(``synchronous=FULL``) and one on a fresh PostgreSQL schema, one after the other, and the
rounds alternate. For PostgreSQL it also reports, per accepted result, the server's CPU
time (every ``postgres`` process on this machine) and its commits and rows written
(``pg_stat_database`` of the database, so other clients of the same database count too);
and, counted in this process on a ``Store`` driving batches of exchanges as the
coordinator does, the SQL statements per result.

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

import psutil
import psycopg
from psycopg import sql

from bench_coordinator import hit_table, run_load
from hydracompute.core.config import SchedulerConfig
from hydracompute.demo import start_coordinator, stop
from hydracompute.kinds import default_registry
from hydracompute.kinds.pi import BLOCK_SAMPLES
from hydracompute.kinds.pi_kernel import count_hits
from hydracompute.store import ResultReport, Store
from hydracompute.store.postgres import PostgresBackend
from hydracompute.store.postgres.connection import Connections
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
        "server_cpu_ms_per_result": 1000 * server_s / max(results, 1),
        "per_result": {
            k: (stats_after[k] - stats_before[k]) / max(results, 1) for k in STAT_COLUMNS
        },
    }


def statements_per_result(url: str, schema: str, exchanges: int = 64, rounds: int = 20) -> float:
    """SQL statements a ``Store`` on PostgreSQL sends per accepted result, in batches of
    ``exchanges`` exchanges each returning one result and asking for one chunk."""
    counted = [0]
    execute, executemany = Connections.execute, Connections.executemany

    def counting_execute(self: Connections, *a: Any, **k: Any) -> Any:
        counted[0] += 1
        return execute(self, *a, **k)

    def counting_executemany(self: Connections, *a: Any, **k: Any) -> None:
        counted[0] += 1
        executemany(self, *a, **k)

    store = Store(PostgresBackend(url, schema), default_registry(), SchedulerConfig(0.01))
    try:
        store.submit_job("pi", {"samples": 8192 * BLOCK_SAMPLES, "seed": 7}, now=0.0)
        workers = [
            store.enrol_worker(f"w{k}", 1, ["pi"], 0.0)[0].worker_id for k in range(exchanges)
        ]
        held: dict[str, list[ResultReport]] = {w: [] for w in workers}
        now, accepted = 0.0, 0
        Connections.execute = counting_execute  # type: ignore[method-assign]
        Connections.executemany = counting_executemany  # type: ignore[method-assign]
        for _ in range(rounds):
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
        Connections.execute, Connections.executemany = execute, executemany  # type: ignore[method-assign]
        store.close()
    return counted[0] / max(accepted, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=2, help="alternating SQLite/PostgreSQL")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    hit_table()
    runs: dict[str, list[dict[str, Any]]] = {"sqlite": [], "postgresql": []}
    order = ["sqlite", "postgresql"]
    for _ in range(args.rounds):
        for backend in order:
            if backend == "sqlite":
                runs["sqlite"].append(measure(None, args))
            else:
                with schema_of_its_own(args.postgres) as schema:
                    runs["postgresql"].append(measure(f"{args.postgres}?schema={schema}", args))
        order.reverse()
    with schema_of_its_own(args.postgres) as schema:
        statements = statements_per_result(args.postgres, schema)
    print(
        f"{args.workers} simulated workers, plain HTTP, capacity (no think time), "
        f"{args.seconds:g} s per run, {args.rounds} alternating rounds"
    )
    print(
        f"{'store':>10} {'results/s':>10} {'p50 ms':>7} {'coord':>7} {'server':>7} {'gen':>6}  runs"
    )
    for backend, figures in runs.items():
        rates = [f["results_per_s"] for f in figures]
        print(
            f"{backend:>10} {statistics.median(rates):>10.0f} "
            f"{statistics.median(f['latency_p50_ms'] for f in figures):>7.1f} "
            f"{statistics.median(f['coordinator_cores'] for f in figures):>6.2f}c "
            f"{statistics.median(f['server_cores'] for f in figures):>6.2f}c "
            f"{statistics.median(f['generator_cores'] for f in figures):>5.2f}c  "
            f"{', '.join(f'{r:.0f}' for r in rates)}"
        )
    ratio = statistics.median(f["results_per_s"] for f in runs["postgresql"]) / statistics.median(
        f["results_per_s"] for f in runs["sqlite"]
    )
    pg = runs["postgresql"]
    print(f"PostgreSQL / SQLite: {ratio:.2f}")
    print(
        "PostgreSQL per accepted result: "
        f"{statistics.median(f['server_cpu_ms_per_result'] for f in pg):.3f} ms of server CPU, "
        + ", ".join(
            f"{statistics.median(f['per_result'][k] for f in pg):.2f} {k}" for k in STAT_COLUMNS
        )
        + f"; {statements:.1f} SQL statements (counted in a Store, batches of 64 exchanges)"
    )
    print("(server CPU: every postgres process here; pg_stat_database: the whole database)")


if __name__ == "__main__":
    main()
