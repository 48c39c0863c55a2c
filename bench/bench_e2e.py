"""End-to-end throughput through a coordinator, beside the bare kernels, in one run.

Reference: the same kernels in N plain processes that split the job evenly and never talk
to anyone (the best any coordination could do). Measured: a real coordinator (SQLite, on
loopback) with N worker processes of one core each, from just before submission to the
answer in the client's hands (its status request held until the job ends), so
it includes merging the results into the answer; the files of a Mandelbrot job (image,
counts) are rendered on their first download, which is not counted. Prints both and their
ratio. The π job is sized to last about ten seconds on a fast machine. The Mandelbrot job
lasts about a second, so each side renders it several times per round (on this shared
machine one render varies by ±10%) and keeps its best, as for every figure here.

    .venv/bin/python bench/bench_e2e.py [--workers 2] [--samples 1.5e11] [--size 4096]
                                        [--repeat 3] [--mandelbrot-tries 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from hydracompute.client import Client
from hydracompute.demo import start_coordinator, start_worker, stop
from hydracompute.kinds.mandelbrot import MandelbrotKind
from hydracompute.kinds.pi import PiKind

MANDELBROT_ITER = 1000


def _pi_part(args: tuple[int, int, int]) -> int:
    seed, start, stop = args
    from hydracompute.kinds.pi_kernel import count_hits

    return count_hits(seed, start, stop)


def _mandelbrot_part(args: tuple[dict[str, Any], int, int]) -> int:
    params, start, stop = args
    return int(MandelbrotKind().compute(params, start, stop)["iterations"])


def _mandelbrot_counts(args: tuple[dict[str, Any], int, int]) -> tuple[int, int, Any]:
    """A tile's counts, sent back to the parent (as a user of plain processes would)."""
    params, start, stop = args
    from hydracompute.kinds.mandelbrot import _tiles
    from hydracompute.kinds.mandelbrot_kernel import render_tile

    ((col0, row0, w, h),) = _tiles(params, start, stop)
    bounds = [params[k] for k in ("x_min", "x_max", "y_min", "y_max")]
    counts = render_tile(
        *bounds, params["width"], params["height"], params["max_iter"], col0, row0, w, h
    )
    return col0, row0, counts


def _warm(_: int) -> None:
    PiKind().warm_up()
    MandelbrotKind().warm_up()


def plain_processes(
    workers: int, samples: int, mandelbrot: dict[str, Any], tries: int
) -> dict[str, float]:
    """Seconds for each job split evenly over ``workers`` processes, no coordination (the
    Mandelbrot job ``tries`` times, the best kept)."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers) as procs:
        procs.map(_warm, range(workers))
        edges = [samples * k // workers for k in range(workers + 1)]
        began = time.perf_counter()
        procs.map(_pi_part, [(1, edges[k], edges[k + 1]) for k in range(workers)])
        pi_s = time.perf_counter() - began
        # Mandelbrot cost is uneven across the image: interleave tiles (a fair static split).
        kind = MandelbrotKind()
        tiles = kind.total_units(mandelbrot)
        parts = [(mandelbrot, t, t + 1) for t in range(tiles)]
        mandelbrot_s = math.inf
        for _ in range(tries):
            began = time.perf_counter()
            procs.map(_mandelbrot_part, parts, chunksize=max(1, tiles // (workers * 16)))
            mandelbrot_s = min(mandelbrot_s, time.perf_counter() - began)
        # Context: the same, but the counts come back and are assembled into the image
        # (what the coordinator's answer also holds).
        began = time.perf_counter()
        image = np.zeros((mandelbrot["height"], mandelbrot["width"]), dtype=np.uint32)
        chunksize = max(1, tiles // (workers * 16))
        for col0, row0, counts in procs.imap_unordered(_mandelbrot_counts, parts, chunksize):
            image[row0 : row0 + counts.shape[0], col0 : col0 + counts.shape[1]] = counts
        assembled_s = time.perf_counter() - began
    return {"pi": pi_s, "mandelbrot": mandelbrot_s, "mandelbrot_assembled": assembled_s}


def wait_for_workers(client: Client, workers: int, timeout_s: float = 120) -> None:
    """Return once ``workers`` workers are online.

    Raises:
        RuntimeError: they were not within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while sum(w["online"] for w in client.workers()) < workers:
        if time.monotonic() > deadline:
            raise RuntimeError("workers did not join")
        time.sleep(0.05)


def through_coordinator(
    workers: int, samples: int, mandelbrot: dict[str, Any], tries: int
) -> dict[str, float]:
    """Seconds from submission to answer for each job, through a real coordinator (the
    Mandelbrot job ``tries`` times, one after the other, the best kept)."""
    with tempfile.TemporaryDirectory() as tmp:
        coordinator = start_coordinator(Path(tmp), 0)
        procs = [start_worker(coordinator, 1, f"bench-{k}") for k in range(workers)]
        try:
            with coordinator.client() as client:
                wait_for_workers(client, workers)
                times: dict[str, float] = {}
                jobs = [("pi", {"samples": samples, "seed": 1})]
                jobs += [("mandelbrot", mandelbrot)] * tries
                for kind, params in jobs:
                    began = time.perf_counter()
                    info = client.submit(kind, **params).wait()
                    seconds = time.perf_counter() - began
                    times[kind] = min(seconds, times.get(kind, seconds))
                    if info.state != "done":
                        raise RuntimeError(f"the {kind} job ended {info.state}: {info.error}")
                return times
        finally:
            for proc in procs:
                stop(proc)
            stop(coordinator.process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--samples", type=float, default=1.5e11)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the best is kept")
    parser.add_argument(
        "--mandelbrot-tries",
        type=int,
        default=5,
        help="Mandelbrot jobs per round on each side (about a second each); the best is kept",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    samples = int(args.samples)
    mandelbrot = MandelbrotKind().validate(
        {"width": args.size, "height": args.size, "max_iter": MANDELBROT_ITER}
    )
    # Alternate the two, several rounds, and keep each one's best: the machine is shared.
    plain: dict[str, float] = {}
    pooled: dict[str, float] = {}
    for _ in range(args.repeat):
        for best, run in ((plain, plain_processes), (pooled, through_coordinator)):
            seconds_by_kind = run(args.workers, samples, mandelbrot, args.mandelbrot_tries)
            for kind, seconds in seconds_by_kind.items():
                best[kind] = min(seconds, best.get(kind, seconds))
    rows = {
        kind: {
            "plain_s": plain[kind],
            "coordinated_s": pooled[kind],
            "ratio": plain[kind] / pooled[kind],
        }
        for kind in ("pi", "mandelbrot")
    }
    rows["mandelbrot"]["plain_assembled_s"] = plain["mandelbrot_assembled"]
    if args.json:
        print(
            json.dumps(
                {"workers": args.workers, "samples": samples, "size": args.size, "results": rows},
                indent=2,
            )
        )
        return
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(
        f"{args.workers} worker processes of 1 core each vs {args.workers} plain processes, "
        f"best of {args.repeat} alternating rounds (Mandelbrot: {args.mandelbrot_tries} jobs "
        "per round)"
    )
    print(f"{'job':<34} {'plain':>9} {'coordinated':>12} {'throughput ratio':>17}")
    labels = {
        "pi": f"π, {samples:.3g} samples",
        "mandelbrot": f"Mandelbrot {args.size}², max_iter {MANDELBROT_ITER}",
    }
    for kind, row in rows.items():
        print(
            f"{labels[kind]:<34} {row['plain_s']:>8.2f}s {row['coordinated_s']:>11.2f}s "
            f"{row['ratio']:>16.1%}"
        )
    assembled = plain["mandelbrot_assembled"]
    print(
        f"context: plain processes sending the counts back to be assembled: {assembled:.2f}s "
        f"(the coordinated job is {assembled / pooled['mandelbrot']:.1%} of that)"
    )
    print(
        f"π end to end: {samples / pooled['pi'] / 1e9:.3f} G samples/s "
        f"(plain: {samples / plain['pi'] / 1e9:.3f} G samples/s)"
    )


if __name__ == "__main__":
    main()
