"""Time to result on the original Hydra prototype's published workloads, on this machine.

Target (from the issue): time to result on the published workloads of the original Hydra
prototype — π with 5·10^7 samples and a 1024×1024 Mandelbrot at 300 iterations (11.2 s and
49.2 s there, on 8 worker processes) — from submit to answer, on this machine's 2 cores.

A real coordinator (SQLite, TLS with its own authority unless ``--insecure``) and
``--workers`` real ``hydracompute worker --cores 1`` processes, as ``bench_e2e.py`` runs them.
A tiny job of each kind is run first (kernels loaded in every compute process, each worker's
speed learnt, as in a pool that has been up for a while). Then, ``--repeat`` times, each
workload is submitted through the Python client, which waits on it (``Job.wait``: each
status request is held by the coordinator until the job ends, at most ``--poll-s``); the
time from just before the submission to the answer in the client's hands is the figure,
and the coordinator's own ``finished_s - created_s`` is printed beside it.
Each answer is checked: π within 5 standard errors of math.pi, and the Mandelbrot
``counts.npy`` artefact of shape 1024×1024 and equal, pixel for pixel, to the same image
rendered here in one piece by the kernel.

    .venv/bin/python bench/bench_prototype.py [--workers 2] [--repeat 3] [--poll-s 0.01]
                                              [--insecure] [--json]
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench_support import stdout_to_stderr
from hydracompute.client import Client
from hydracompute.demo import start_coordinator, start_worker, stop
from hydracompute.kinds.mandelbrot import MandelbrotKind
from hydracompute.kinds.mandelbrot_kernel import render_tile

#: The prototype's published workloads and times (8 worker processes).
WORKLOADS: dict[str, dict[str, Any]] = {
    "pi": {"samples": 5 * 10**7},
    "mandelbrot": {"width": 1024, "height": 1024, "max_iter": 300},
}
PROTOTYPE_S = {"pi": 11.2, "mandelbrot": 49.2}
LABELS = {"pi": "π, 5·10^7 samples", "mandelbrot": "Mandelbrot 1024², 300 iterations"}
WARM_UP: dict[str, dict[str, Any]] = {
    "pi": {"samples": 1 << 20},
    "mandelbrot": {"width": 64, "height": 64, "max_iter": 300},
}
MAX_SIGMAS = 5.0


def check_pi(answer: dict[str, Any]) -> str:
    """Raise unless π is within ``MAX_SIGMAS`` standard errors; returns a description."""
    sigmas = (answer["estimate"] - math.pi) / answer["stderr"]
    if abs(sigmas) > MAX_SIGMAS or answer["samples"] != WORKLOADS["pi"]["samples"]:
        raise RuntimeError(f"wrong π answer: {answer}")
    return f"π ≈ {answer['estimate']:.6f} ± {answer['stderr']:.1e} ({sigmas:+.2f} σ)"


def check_mandelbrot(counts_npy: bytes, expected: np.ndarray) -> str:
    counts = np.load(io.BytesIO(counts_npy), allow_pickle=False)
    if counts.shape != (1024, 1024) or not np.array_equal(counts, expected):
        raise RuntimeError(f"wrong Mandelbrot counts: shape {counts.shape}")
    return f"counts {counts.shape[1]}×{counts.shape[0]}, {int(counts.sum()):,} iterations, exact"


def expected_counts() -> np.ndarray:
    """The workload's image rendered here in one tile (the kernel's fixed pixel convention)."""
    p = MandelbrotKind().validate(WORKLOADS["mandelbrot"])
    return render_tile(
        p["x_min"], p["x_max"], p["y_min"], p["y_max"], p["width"], p["height"],
        p["max_iter"], 0, 0, p["width"], p["height"],
    )  # fmt: skip


def time_job(client: Client, kind: str, params: dict[str, Any], poll_s: float) -> dict[str, Any]:
    began = time.perf_counter()
    info = client.submit(kind, **params).wait(poll_s=poll_s)
    client_s = time.perf_counter() - began
    return {
        "client_s": client_s,
        "coordinator_s": info.finished_s - info.created_s,
        "job_id": info.job_id,
        "answer": info.answer,
    }


def run(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    coordinator = start_coordinator(data_dir, 0, ["--insecure"] if args.insecure else [])
    with stdout_to_stderr():  # the workers' farewells must not mix with --json output
        workers = [start_worker(coordinator, 1, f"bench-{k}") for k in range(args.workers)]
    try:
        with coordinator.client() as client:
            deadline = time.monotonic() + 120
            while sum(w["online"] for w in client.workers()) < args.workers:
                if time.monotonic() > deadline:
                    raise RuntimeError("workers did not join")
                time.sleep(0.05)
            for kind, params in WARM_UP.items():
                client.submit(kind, **params).wait(poll_s=args.poll_s)
            expected = expected_counts()
            runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in WORKLOADS}
            checks: dict[str, str] = {}
            for _ in range(args.repeat):
                for kind, params in WORKLOADS.items():
                    result = time_job(client, kind, params, args.poll_s)
                    if kind == "pi":
                        checks[kind] = check_pi(result["answer"])
                    else:
                        npy = client.job(result["job_id"]).artefact("counts.npy")
                        checks[kind] = check_mandelbrot(npy, expected)
                    runs[kind].append({k: result[k] for k in ("client_s", "coordinator_s")})
    finally:
        for worker in workers:
            stop(worker)
        stop(coordinator.process)
    return {"runs": runs, "checks": checks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="worker processes of 1 core")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--poll-s", type=float, default=0.01, help="longest each status request is held"
    )
    parser.add_argument("--insecure", action="store_true", help="plain HTTP (default: TLS)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        measured = run(args, Path(tmp) / "pool")
    rows = {}
    for kind, runs in measured["runs"].items():
        client_s = [r["client_s"] for r in runs]
        rows[kind] = {
            "client_best_s": min(client_s),
            "client_median_s": statistics.median(client_s),
            "coordinator_best_s": min(r["coordinator_s"] for r in runs),
            "coordinator_median_s": statistics.median(r["coordinator_s"] for r in runs),
            "prototype_s": PROTOTYPE_S[kind],
            "speed_up_best": PROTOTYPE_S[kind] / min(client_s),
            "speed_up_median": PROTOTYPE_S[kind] / statistics.median(client_s),
            "runs": runs,
            "check": measured["checks"][kind],
        }
    if args.json:
        print(
            json.dumps(
                {
                    "workers": args.workers,
                    "repeat": args.repeat,
                    "tls": not args.insecure,
                    "poll_s": args.poll_s,
                    "load_average_before": load_before,
                    "results": rows,
                },
                indent=2,
            )
        )
        return
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(
        f"{args.workers} 'hydracompute worker --cores 1' processes, "
        f"{'plain HTTP' if args.insecure else 'TLS'}, {args.repeat} runs, status requests "
        f"held up to {1000 * args.poll_s:.0f} ms; load average before {load_before[0]:.2f}"
    )
    print(
        f"{'workload':<34} {'client best':>11} {'median':>7} {'coord. best':>11} {'median':>7}"
        f" {'prototype':>9} {'speed-up best':>13} {'median':>7}"
    )
    for kind, row in rows.items():
        print(
            f"{LABELS[kind]:<34} {row['client_best_s']:>10.3f}s {row['client_median_s']:>6.3f}s"
            f" {row['coordinator_best_s']:>10.3f}s {row['coordinator_median_s']:>6.3f}s"
            f" {row['prototype_s']:>8.1f}s {row['speed_up_best']:>12.0f}× "
            f"{row['speed_up_median']:>6.0f}×"
        )
    for kind, row in rows.items():
        print(f"check, {kind}: {row['check']}")


if __name__ == "__main__":
    main()
