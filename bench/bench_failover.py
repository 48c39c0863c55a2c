"""Failover time: from a coordinator's SIGKILL to the first result accepted by another.

Two real ``hydracompute coordinator`` processes share one store (a SQLite file by default,
``--store URL`` for another), and real worker processes are given both URLs, the first
coordinator first: every worker works through it. Once results flow, the first coordinator
is killed (SIGKILL: no goodbye, its connections reset); the job's progress is then read
through the second every 5 ms, and the first increase is the first result the second
accepted. The first is restarted on its port, the workers go back to it (they try it again
every ``PREFERRED_RETRY_S``), and the kill is repeated.

    .venv/bin/python bench/bench_failover.py [--repeats 5] [--workers 2]
        [--target-chunk-s 2] [--heartbeat-s 5] [--store URL]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' pool helper

from tests.shared_pool_support import SharedPool, worker_status


def wait_until(condition: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.005)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--target-chunk-s", type=float, default=2.0)
    parser.add_argument("--heartbeat-s", type=float, default=5.0)
    parser.add_argument("--store", default=None, help="default: a SQLite file in a temp dir")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = args.store or f"sqlite:///{root / 'shared.db'}"
        pool = SharedPool(root, store, 2, args.target_chunk_s, args.heartbeat_s)
        try:
            pool.start(0)
            pool.start(1)
            statuses = [pool.add_worker([0, 1]) for _ in range(args.workers)]
            with pool.client(1) as b:
                job = b.submit("pi", samples=10**15, seed=1)  # never ends during the run
                times = []
                for repeat in range(args.repeats):
                    wait_until(
                        lambda: all(worker_status(s).get("url") == pool.urls[0] for s in statuses),
                        60,
                        "every worker on the first coordinator",
                    )
                    before = job.info().units_done
                    wait_until(lambda done=before: job.info().units_done > done, 60, "results")
                    time.sleep(args.target_chunk_s * 1.5)  # mid-chunk, wherever the chunks are
                    pool.kill(0)
                    killed = time.monotonic()
                    at_kill = job.info().units_done
                    wait_until(lambda done=at_kill: job.info().units_done > done, 60, "on B")
                    took = time.monotonic() - killed
                    times.append(took)
                    print(
                        f"kill {repeat + 1}: first result accepted by the other after {took:.3f} s"
                    )
                    pool.start(0)
                job.cancel()
        finally:
            pool.close()
    print(
        f"failover (SIGKILL -> first result accepted by the other), {len(times)} kills, "
        f"{args.workers} worker(s) of 1 core, target chunk {args.target_chunk_s:g} s: "
        f"median {statistics.median(times):.3f} s, min {min(times):.3f} s, "
        f"max {max(times):.3f} s"
    )


if __name__ == "__main__":
    main()
