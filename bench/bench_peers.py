"""How many no-op tasks per second Dask distributed, Celery with Redis and Ray sustain here.

The figure to set beside ``bench_coordinator.py``'s: each peer's overhead per task when the
task itself costs nothing, with ``--workers`` worker processes on this machine. Each peer runs
the way its users would run it for throughput, warmed up first; the clock starts at the first
submit and stops when every result is back in the submitting process. Start-up and shutdown
(cluster, Celery worker, Ray runtime) are not timed.

- **dask**: ``LocalCluster(n_workers=workers, threads_per_worker=1, processes=True)`` and a
  ``Client``; ``client.map(noop, range(tasks), pure=False)`` then ``client.gather``.
- **celery**: a real ``celery worker`` subprocess (prefork pool, ``--concurrency=workers``) on
  ``peer_tasks.py``, Redis database 15 as broker and result backend (flushed before and
  after); the tasks are sent as one ``group`` of ``noop.s()`` signatures and the
  ``GroupResult`` is collected with ``.get()``, Celery's own batch call (one producer
  connection for the sends, native join on the Redis backend for the results). Celery's
  defaults otherwise (see ``peer_tasks.py``); not ``noop.chunks``, which would pack many calls
  into one task message, where the other peers schedule every call as a task of its own.
- **ray**: ``ray.init(num_cpus=workers)`` locally, ``ray.get([noop.remote() for ...])``.

Each peer runs in a child process of its own (this script again, ``--in-process``), in a new
session, so that one peer's threads, event loops and helper processes cannot slow the next,
and a crash or a hang (more than ``PEER_TIMEOUT_S``) becomes ``{"error": ...}`` for that peer
only. A peer that is not installed is reported the same way; install them with
``pip install -e '.[bench]'``. Redis must be listening at 127.0.0.1:6379 for Celery
(``HYDRA_BENCH_REDIS_URL`` overrides the URL).

    .venv/bin/python bench/bench_peers.py [--tasks 20000] [--workers 2] [--only dask,celery]
        [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

PEERS = ("dask", "celery", "ray")
# The distribution whose version is reported, and the module that must be importable.
DISTRIBUTIONS = {"dask": "distributed", "celery": "celery", "ray": "ray"}
PEER_TIMEOUT_S = 300.0
SHUTDOWN_GRACE_S = 30.0
WARMUP_TASKS = 100
CELERY_READY_TIMEOUT_S = 60.0
BENCH_DIR = Path(__file__).resolve().parent


def noop(*_: object) -> None:
    """The task every peer runs. Defined in the script run as ``__main__``, so Dask and Ray
    ship it to their workers by value (cloudpickle) rather than by an import path."""


def measure_peers(
    tasks: int, workers: int = 2, only: list[str] | None = None
) -> dict[str, dict[str, Any]]:
    """Run `tasks` no-op tasks through each peer (names: "dask", "celery", "ray") and return
    per peer: {"tasks": n, "seconds": s, "tasks_per_s": r, "version": "x.y.z"} or
    {"error": "why"} if the peer is not installed or failed (e.g. Redis down).

    Each peer runs in a child process of its own, one after the other, and is given
    ``PEER_TIMEOUT_S`` seconds including start-up. Raises ValueError for an unknown name.
    """
    names = list(PEERS) if only is None else only
    unknown = sorted(set(names) - set(PEERS))
    if unknown:
        raise ValueError(f"unknown peer(s) {unknown}; known: {', '.join(PEERS)}")
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        if importlib.util.find_spec(DISTRIBUTIONS[name]) is None:
            results[name] = {"error": "not installed (pip install -e '.[bench]')"}
        else:
            results[name] = _run_child(name, tasks, workers)
    return results


def _run_child(name: str, tasks: int, workers: int) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--in-process", "--json"]
    command += ["--only", name, "--tasks", str(tasks), "--workers", str(workers)]
    # A session of its own, so that a timeout ends the peer's helper processes too.
    child = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = child.communicate(timeout=PEER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        _end_session(child)
        return {"error": f"timed out after {PEER_TIMEOUT_S:.0f} s (PEER_TIMEOUT_S)"}
    except BaseException:
        _end_session(child)
        raise
    # The result is the last line; libraries may print before it.
    lines = stdout.strip().splitlines()
    if child.returncode == 0 and lines:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            result: dict[str, Any] = json.loads(lines[-1])[name]
            return result
    tail = " | ".join(stderr.strip().splitlines()[-3:]) or "no output"
    return {"error": f"child exited with status {child.returncode}: {tail}"}


def _end_session(child: subprocess.Popen[str]) -> None:
    """Ask the child to shut its peer down (SIGTERM), then SIGKILL what is left of its process
    group: the child itself if it did not exit within the grace period, helpers it left."""
    child.send_signal(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.communicate(timeout=SHUTDOWN_GRACE_S)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)
    child.communicate()


def _measure_in_process(name: str, tasks: int, workers: int) -> dict[str, Any]:
    runner = {"dask": _run_dask, "celery": _run_celery, "ray": _run_ray}[name]
    try:
        seconds = runner(tasks, workers)
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {
        "tasks": tasks,
        "seconds": round(seconds, 3),
        "tasks_per_s": round(tasks / seconds, 1),
        "version": importlib.metadata.version(DISTRIBUTIONS[name]),
    }


def _timed(run: Callable[[int], list[Any]], tasks: int) -> float:
    """Warm up with a few tasks, then time `tasks` of them; checks that every result came."""
    _check(run(WARMUP_TASKS), WARMUP_TASKS)
    start = time.perf_counter()
    results = run(tasks)
    seconds = time.perf_counter() - start
    _check(results, tasks)
    return seconds


def _check(results: list[Any], tasks: int) -> None:
    if len(results) != tasks or any(r is not None for r in results):
        raise RuntimeError(f"expected {tasks} results, all None; got {len(results)}")


def _run_dask(tasks: int, workers: int) -> float:
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(workers)
        return _timed(lambda n: client.gather(client.map(noop, range(n), pure=False)), tasks)


def _run_ray(tasks: int, workers: int) -> float:
    # Must be set before Ray starts: no usage report over the network.
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    import ray

    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    try:
        remote_noop = ray.remote(noop)
        return _timed(lambda n: ray.get([remote_noop.remote() for _ in range(n)]), tasks)
    finally:
        ray.shutdown()


def _run_celery(tasks: int, workers: int) -> float:
    import redis
    from celery import group

    sys.path.insert(0, str(BENCH_DIR))
    from peer_tasks import REDIS_URL, app
    from peer_tasks import noop as celery_noop

    store = redis.Redis.from_url(REDIS_URL)
    try:
        store.flushdb()
    except redis.RedisError as exc:
        raise RuntimeError(f"Redis at {REDIS_URL} unreachable: {exc}") from exc
    try:
        with _celery_worker(app, workers):
            return _timed(lambda n: group(celery_noop.s() for _ in range(n))().get(), tasks)
    finally:
        with contextlib.suppress(redis.RedisError):
            store.flushdb()
        app.close()


@contextlib.contextmanager
def _celery_worker(app: Any, workers: int) -> Iterator[None]:
    """A ``celery worker`` subprocess on ``peer_tasks``, answering pings before this yields;
    stopped with a warm shutdown (SIGTERM) and waited for afterwards."""
    paths = [str(BENCH_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    command = [sys.executable, "-m", "celery", "-A", "peer_tasks", "worker", "--pool=prefork"]
    command += [f"--concurrency={workers}", "--loglevel=WARNING", "--without-gossip"]
    command += ["--without-mingle", "--without-heartbeat", f"--hostname=bench_peers@{os.getpid()}"]
    with tempfile.TemporaryFile(mode="w+") as log:
        worker = subprocess.Popen(
            command, cwd=BENCH_DIR, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            _wait_for_ping(app, worker, log)
            yield
        finally:
            worker.terminate()
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()


def _wait_for_ping(app: Any, worker: subprocess.Popen[bytes], log: Any) -> None:
    deadline = time.monotonic() + CELERY_READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            log.seek(0)
            tail = " | ".join(log.read().strip().splitlines()[-3:])
            raise RuntimeError(f"celery worker exited with status {worker.returncode}: {tail}")
        # ping() itself waits up to `timeout` for replies, so this loop does not spin.
        if app.control.ping(timeout=0.5):
            return
    raise RuntimeError(f"celery worker did not answer a ping within {CELERY_READY_TIMEOUT_S} s")


def print_table(results: dict[str, dict[str, Any]]) -> None:
    print(f"{'peer':<8} {'version':<10} {'tasks':>7} {'seconds':>8} {'tasks/s':>9}")
    for name, result in results.items():
        if "error" in result:
            print(f"{name:<8} error: {result['error']}")
        else:
            print(
                f"{name:<8} {result['version']:<10} {result['tasks']:>7} "
                f"{result['seconds']:>8.2f} {result['tasks_per_s']:>9.0f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20000, help="timed tasks per peer")
    parser.add_argument("--workers", type=int, default=2, help="worker processes per peer")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(PEERS)}")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    # Used by measure_peers for its child processes: measure here instead of in a child.
    parser.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tasks < 1 or args.workers < 1:
        parser.error("--tasks and --workers must be at least 1")
    only = args.only.split(",") if args.only else None
    unknown = sorted(set(only or ()) - set(PEERS))
    if unknown:
        parser.error(f"unknown peer(s) {unknown}; known: {', '.join(PEERS)}")
    if args.in_process:
        # measure_peers ends a child that overruns with SIGTERM: exit through the `finally`
        # blocks so the Celery worker, the Dask cluster or the Ray runtime are shut down.
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
        results = {n: _measure_in_process(n, args.tasks, args.workers) for n in only or PEERS}
    else:
        results = measure_peers(args.tasks, args.workers, only)
    if args.json:
        print(json.dumps(results))
    else:
        print_table(results)


if __name__ == "__main__":
    main()
