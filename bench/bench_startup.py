"""How long a fresh worker process takes to return its first result, with a warm kernel cache.

Target (from the issue): a worker whose kernel cache is warm returns its first result
within 2 s of starting.

A real coordinator (TLS with its own authority unless ``--insecure``) runs a job far too big
to finish (π, then separately Mandelbrot). One worker is run first until it has returned a
chunk, so that numba's cache of both kernels is on disk; it is stopped. Then, ``--repeat``
times per kind, a fresh ``hydracompute worker`` process (a new name: it enrols with the join
token) is started and the clock runs from just before ``Popen`` until the coordinator's
worker list shows its first accepted result (``chunks_done`` ≥ 1), polled every
``--poll-s``. The same polls give the timeline: when the worker's first compute process
appeared (psutil), when the worker appeared in the pool (enrolled:
the agent enrols only after its compute processes have loaded the kernels) and when it
first held a lease. The coordinator's own stamp of the exchange that brought the result
(``last_seen_s``) is reported beside the polled time.

References measured in the same run, each in a fresh interpreter: ``python -c pass``,
``python -c "import hydracompute.worker.agent"``, and what a compute process does at start
(import the kinds, then ``warm_up()`` each kernel from the cache), timed inside.

    .venv/bin/python bench/bench_startup.py [--repeat 5] [--cores 2] [--poll-s 0.01]
                                            [--insecure] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench_support import stdout_to_stderr
from hydracompute.demo import LocalCoordinator, start_coordinator, start_worker, stop

#: Jobs no worker here will finish; each is cancelled after its runs.
JOBS = {
    "pi": {"samples": 10**15, "seed": 5},
    "mandelbrot": {"width": 32768, "height": 8192, "max_iter": 1000},
}
#: Viewer keys to poll with, in turn: each key may make 50 requests/s (burst 200).
POLL_KEYS = 4
TIMEOUT_S = 60.0

CLI_HELP = ["-m", "hydracompute", "worker", "run", "--help"]
COMPUTE_START = """
import json, time
began = time.perf_counter()
from hydracompute.kinds import default_registry
kinds = list(default_registry())
imported = time.perf_counter()
warm = {}
for kind in kinds:
    t = time.perf_counter()
    kind.warm_up()
    warm[kind.name] = time.perf_counter() - t
print(json.dumps({"import_s": imported - began, "warm_up_s": warm}))
"""


class Poller:
    """GET requests to the coordinator with several viewer keys in turn (rate limits)."""

    def __init__(self, coordinator: LocalCoordinator, verify: Any) -> None:
        self.http = httpx.Client(base_url=coordinator.url, verify=verify, timeout=30)
        admin = {"Authorization": f"Bearer {coordinator.admin_key}"}
        self.keys = []
        for n in range(POLL_KEYS):
            body = {"name": f"bench poll {n}", "role": "viewer"}
            response = self.http.post("/api/v1/keys", json=body, headers=admin)
            response.raise_for_status()
            self.keys.append({"Authorization": f"Bearer {response.json()['secret']}"})
        self.admin = admin
        self.turn = 0

    def get(self, path: str) -> Any:
        self.turn += 1
        response = self.http.get(path, headers=self.keys[self.turn % len(self.keys)])
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        response = self.http.post(path, json=body, headers=self.admin)
        response.raise_for_status()
        return response.json()

    def worker(self, name: str) -> dict[str, Any] | None:
        found = [w for w in self.get("/api/v1/workers")["workers"] if w["name"] == name]
        return found[0] if found else None


def compute_children(process: psutil.Process) -> list[psutil.Process]:
    """The worker's compute processes (multiprocessing spawn children, not its tracker)."""
    found = []
    for child in process.children():
        try:
            cmdline = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "spawn_main" in cmdline:
            found.append(child)
    return found


def time_worker(
    coordinator: LocalCoordinator, poller: Poller, name: str, cores: int, poll_s: float
) -> dict[str, float]:
    """Start one worker and follow it to its first accepted result; seconds from start."""
    wall0 = time.time()
    began = time.perf_counter()
    with stdout_to_stderr():  # the worker's farewell must not mix with --json output
        process = start_worker(coordinator, cores, name)
    marks: dict[str, float] = {}
    try:
        agent = psutil.Process(process.pid)
        while True:
            now = time.perf_counter() - began
            if now > TIMEOUT_S or process.poll() is not None:
                raise RuntimeError(f"worker {name} gave no result in {now:.0f} s")
            if "compute_process" not in marks and compute_children(agent):
                marks["compute_process"] = now
            view = poller.worker(name)
            if view is not None:
                marks.setdefault("enrolled", now)
                if view["leases"] or view["chunks_done"]:
                    marks.setdefault("leased", now)
                if view["chunks_done"]:
                    marks["result"] = now
                    marks["result_stamped"] = view["last_seen_s"] - wall0
                    return marks
            time.sleep(poll_s)
    finally:
        stop(process)


def reference_s(*arguments: str) -> float:
    began = time.perf_counter()
    subprocess.run([sys.executable, *arguments], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - began


def references(repeat: int) -> dict[str, Any]:
    """Bare costs, each in a fresh interpreter: start, the agent's imports, a compute
    process's start-up (imports and warm-up from the cache, timed inside)."""
    interpreter = [reference_s("-c", "pass") for _ in range(repeat)]
    agent = [reference_s("-c", "import hydracompute.worker.agent") for _ in range(repeat)]
    cli = [reference_s(*CLI_HELP) for _ in range(repeat)]
    inside = []
    for _ in range(repeat):
        out = subprocess.run(
            [sys.executable, "-c", COMPUTE_START], check=True, capture_output=True, text=True
        )
        inside.append(json.loads(out.stdout))
    return {
        "interpreter_s": statistics.median(interpreter),
        "import_agent_s": statistics.median(agent),
        "cli_help_s": statistics.median(cli),
        "compute_import_kinds_s": statistics.median(r["import_s"] for r in inside),
        "compute_warm_up_s": {
            name: statistics.median(r["warm_up_s"][name] for r in inside)
            for name in inside[0]["warm_up_s"]
        },
    }


def summary(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def run(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    extra = ["--insecure"] if args.insecure else []
    coordinator = start_coordinator(data_dir, 0, extra)
    try:
        from hydracompute import tls

        verify = tls.verification(coordinator.url, coordinator.ca_fingerprint)
        poller = Poller(coordinator, verify)
        results: dict[str, Any] = {}
        for kind, params in JOBS.items():
            job = poller.post("/api/v1/jobs", {"kind": kind, "params": params})
            # Warm: one worker to its first result (numba's cache on disk, files in the
            # page cache); not counted.
            time_worker(coordinator, poller, f"warm-{kind}", args.cores, args.poll_s)
            runs = []
            for n in range(args.repeat):
                if not args.reuse_job:
                    # A stopped worker gives its chunk back, and the next worker would get
                    # that chunk (sized for the other's speed) before any probe: start anew.
                    poller.post(f"/api/v1/jobs/{job['job_id']}/cancel", {})
                    job = poller.post("/api/v1/jobs", {"kind": kind, "params": params})
                runs.append(
                    time_worker(coordinator, poller, f"{kind}-{n}", args.cores, args.poll_s)
                )
            poller.post(f"/api/v1/jobs/{job['job_id']}/cancel", {})
            results[kind] = {
                "runs": runs,
                **{
                    mark: summary([r[mark] for r in runs if mark in r])
                    for mark in (
                        "compute_process",
                        "enrolled",
                        "leased",
                        "result",
                        "result_stamped",
                    )
                },
            }
        return results
    finally:
        stop(coordinator.process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="fresh workers per kind")
    parser.add_argument(
        "--cores", type=int, default=os.cpu_count() or 1, help="the worker's --cores"
    )
    parser.add_argument("--poll-s", type=float, default=0.01)
    parser.add_argument(
        "--reuse-job",
        action="store_true",
        help="one job for every run: each worker first gets the chunk the last one gave back",
    )
    parser.add_argument("--insecure", action="store_true", help="plain HTTP (default: TLS)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        results = run(args, Path(tmp) / "pool")
    refs = references(args.repeat)
    figures = {
        "cores": args.cores,
        "repeat": args.repeat,
        "tls": not args.insecure,
        "poll_s": args.poll_s,
        "reuse_job": args.reuse_job,
        "load_average_before": load_before,
        "kinds": results,
        "references": refs,
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(
        f"fresh 'hydracompute worker --cores {args.cores}' processes, "
        f"{'plain HTTP' if args.insecure else 'TLS'}, warm numba cache; {args.repeat} runs per "
        f"kind{' (one job: returned chunks first)' if args.reuse_job else ', a new job each'}; "
        f"polled every {1000 * args.poll_s:.0f} ms; load average before "
        f"{load_before[0]:.2f}"
    )
    print("seconds from Popen, min / median / max:")
    labels = {
        "compute_process": "first compute process started",
        "enrolled": "enrolled (kernels loaded)",
        "leased": "first lease held",
        "result": "first result accepted",
        "result_stamped": "  (coordinator's stamp of it)",
    }
    for kind, result in results.items():
        print(f"  {kind}:")
        for mark, label in labels.items():
            s = result[mark]
            print(f"    {label:<48} {s['min']:6.3f} {s['median']:6.3f} {s['max']:6.3f}")
    print("references (fresh interpreters, medians):")
    rows = {
        "python -c pass": refs["interpreter_s"],
        "python -c 'import hydracompute.worker.agent'": refs["import_agent_s"],
        "python -m hydracompute worker run --help": refs["cli_help_s"],
        "compute process: import the kinds": refs["compute_import_kinds_s"],
        **{
            f"compute process: {name}.warm_up() from cache": seconds
            for name, seconds in refs["compute_warm_up_s"].items()
        },
    }
    for label, seconds in rows.items():
        print(f"    {label:<48} {seconds:6.3f}")


if __name__ == "__main__":
    main()
