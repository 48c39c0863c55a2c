"""Exchanges per second the store records on SQLite: one commit each, or batched.

Every exchange returns one result and asks for one chunk, as a worker's does. Side by side
in one run: each exchange in its own transaction (one fsync each, `synchronous=FULL`), and
the coordinator's way, up to 64 exchanges per transaction and commit. No HTTP: this is the
store thread's own capacity.

Also, side by side: how long the exchange that brings a job's last result takes when the
kind merges every output again, and when it answers from its live summary (as π and
Mandelbrot do).

    .venv/bin/python bench/bench_store.py [--workers 64] [--exchanges 3000] [--jobs 1]
                                          [--finish-chunks 100000] [--json]

The store's CPU work per exchange, free of the machine's noise: count instructions with
valgrind for two numbers of exchanges and divide the difference (start-up cancels out):

    valgrind --tool=callgrind --callgrind-out-file=/dev/null .venv/bin/python \
        bench/bench_store.py --batched-only --workers 300 --jobs 100 --exchanges N
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from hydracompute.core.config import SchedulerConfig
from hydracompute.kinds import Answer, ChunkOutput, JobKind, KindRegistry
from hydracompute.store import ResultReport, SQLiteBackend, Store
from hydracompute.store.records import ExchangeOutcome, ExchangeRequest


class CountKind(JobKind):
    """Trivial work: a chunk's output is its number of units."""

    name = "count"
    max_chunk_units = 1

    def validate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return {"n": int(params["n"])}

    def total_units(self, params: dict[str, Any]) -> int:
        return int(params["n"])

    def compute(self, params: dict[str, Any], start: int, stop: int) -> dict[str, Any]:
        return {"units": stop - start}

    def check(self, params: dict[str, Any], start: int, stop: int, output: dict[str, Any]) -> None:
        pass

    def merge(self, params: dict[str, Any], outputs: Iterable[ChunkOutput]) -> Answer:
        return Answer(summary={"units": sum(o.output["units"] for o in outputs)})


def run(batch: int, workers: int, exchanges: int, jobs: int = 1) -> float:
    """Exchanges per second with ``batch`` exchanges per transaction, on ``jobs`` running
    jobs (the oldest gets the workers; the others wait their turn, as in a busy pool)."""
    registry = KindRegistry()
    registry.register(CountKind())
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(SQLiteBackend(Path(tmp) / "pool.db"), registry, SchedulerConfig())
        for n in range(jobs):
            store.submit_job("count", {"n": exchanges * 2}, now=float(n))
        ids = [
            store.enrol_worker(f"w{n}", 1, ["count"], now=0.0)[0].worker_id for n in range(workers)
        ]
        held: dict[str, list[ResultReport]] = {w: [] for w in ids}
        done = 0
        began = time.perf_counter()
        while done < exchanges:
            now = time.time()  # as the coordinator's clock: lease ids follow it
            requests = [ExchangeRequest(w, held[w], [], 1, now) for w in ids][:batch]
            if batch == 1:
                answers: list[ExchangeOutcome | Exception] = []
                for request in requests:
                    answers.append(store.exchange(request.worker_id, request.results, [], 1, now))
            else:
                answers = store.exchange_many(requests)
            for request, answer in zip(requests, answers, strict=True):
                assert not isinstance(answer, Exception), answer
                held[request.worker_id] = [
                    ResultReport(g.lease_id, {"units": g.stop - g.start}, 0.001)
                    for g in answer.leases
                ]
            done += len(requests)
            ids = ids[len(requests) :] + ids[: len(requests)]  # round robin
        elapsed = time.perf_counter() - began
        store.close()
    return done / elapsed


class LiveCountKind(CountKind):
    """The same, but answered from its live summary, as π and Mandelbrot are."""

    def fold_live(self, params: dict[str, Any], live: dict[str, Any], output: Any) -> Any:
        return {"units": live.get("units", 0) + output["units"]}

    def answer_from_live(self, params: dict[str, Any], live: dict[str, Any]) -> Answer:
        return Answer(summary={"units": live["units"]})


def finishing_s(kind: CountKind, chunks: int) -> float:
    """Seconds of the exchange that brings the last result of a job of ``chunks`` chunks
    (every other exchange waits behind it on the coordinator's store thread)."""
    registry = KindRegistry()
    registry.register(kind)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(SQLiteBackend(Path(tmp) / "pool.db"), registry, SchedulerConfig())
        job = store.submit_job("count", {"n": chunks}, now=0.0)
        worker = store.enrol_worker("w", 64, ["count"], now=0.0)[0].worker_id
        reports: list[ResultReport] = []
        last = 0.0
        while store.get_job(job.job_id).state.value == "running":
            began = time.perf_counter()
            leases = store.exchange(worker, reports, [], 64, 1.0).leases
            last = time.perf_counter() - began
            reports = [ResultReport(g.lease_id, {"units": 1}, 0.001) for g in leases]
        store.close()
    return last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--exchanges", type=int, default=3000)
    parser.add_argument("--jobs", type=int, default=1, help="running jobs")
    parser.add_argument(
        "--batched-only",
        action="store_true",
        help="only the batched run, and print nothing else (to count its instructions)",
    )
    parser.add_argument("--finish-chunks", type=int, default=100_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.batched_only:
        run(64, args.workers, args.exchanges, args.jobs)
        return
    single = run(1, args.workers, args.exchanges, args.jobs)
    batched = run(64, args.workers, args.exchanges, args.jobs)
    merged = finishing_s(CountKind(), args.finish_chunks)
    from_live = finishing_s(LiveCountKind(), args.finish_chunks)
    figures = {
        "one_commit_each_per_s": single,
        "batched_per_s": batched,
        "ratio": batched / single,
        "finish_chunks": args.finish_chunks,
        "finishing_exchange_merge_s": merged,
        "finishing_exchange_from_live_s": from_live,
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(
        f"SQLite (synchronous=FULL), {args.workers} workers, {args.jobs} running job(s), "
        f"{args.exchanges} exchanges"
    )
    print(f"one commit per exchange: {single:8.0f} exchanges/s")
    print(f"up to 64 per commit:     {batched:8.0f} exchanges/s   ({batched / single:.1f}×)")
    print(
        f"the exchange that finishes a job of {args.finish_chunks:,} chunks: "
        f"{1000 * merged:.0f} ms merging every output, {1000 * from_live:.1f} ms answered "
        "from the live summary"
    )


if __name__ == "__main__":
    main()
