"""Balance on a Mandelbrot view whose tiles differ in cost by thousands of times, in one run.

The view: centre −0.7436 + 0.1318i, span 0.01, max_iter 100,000, 2048² (its dearest tile costs
about 3,800 times its cheapest). Reference: N plain processes that pull single tiles
dynamically (``imap_unordered`` with chunks of one tile, each tile's counts compressed and
sent back): the best balance possible without coordination. Measured: a real coordinator
(SQLite, loopback, TLS) with N worker processes of one core each, from just before
submission to the answer in the client's hands, with this checkout's code, and (given
``--before-src``, a checkout of the code to compare with) with that code too, alternating.

For each coordinated side it also prints the distribution of the chunks' compute times
(median, p90, max) against the target, and the ETA honesty: the ETA the job's status showed
when it first reached 25% and 50% against the time it actually had left.

With ``--estimates`` it first compares cost models against the view's true iterations
(exact counts, so no timing noise): for runs of 4 and 16 consecutive units (chunks), the
true cost over the estimated cost, scaled so that they agree over the whole view; the
closer to 1, the better chunks sized by it match their target.

``--warm`` runs, before each timed job, one Mandelbrot job of another view (the default view
at 4096², max_iter 2000: about 1.5 s on two workers) on the same coordinator and workers, so
that the timed job meets workers whose speed is learnt, as in a pool that has been running;
without it every timed job starts a new pool, and its first chunks are probes.

``--tiles`` names the tile sides of this checkout's coordinated job, as sides of their own:
``auto`` (the default: the side the coordinator chooses, 16 for this view) or 64, 32, 16
named in the job's parameters. The plain processes always pull 64² tiles.

    .venv/bin/python bench/bench_tiling.py [--workers 2] [--size 2048] [--repeat 3]
        [--tiles auto 64] [--warm] [--before-src /path/to/other/checkout/src] [--estimates]
        [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from hydracompute.demo import start_coordinator, start_worker, stop
from hydracompute.kinds import mandelbrot_cost
from hydracompute.kinds.mandelbrot import TILE, MandelbrotKind, tile_stride

VIEW = {"center_re": -0.7436, "center_im": 0.1318, "span": 0.01, "max_iter": 100_000}
TARGET_S = 2.0
#: The job run first with ``--warm``: another view, so that no cost estimate is cached.
WARM_UP_JOB = {"width": 4096, "height": 4096, "max_iter": 2000}
WARMED = "workers warmed by a job of another view"
#: How often the status is read for the ETA figures.
POLL_S = 0.05


def _warm(_: int) -> None:
    MandelbrotKind().warm_up()


def _tile(args: tuple[dict[str, Any], int]) -> dict[str, Any]:
    params, unit = args
    return MandelbrotKind().compute(params, unit, unit + 1)


def plain_processes(workers: int, params: dict[str, Any]) -> float:
    """Seconds for ``workers`` processes pulling one tile at a time until all are done."""
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers) as procs:
        procs.map(_warm, range(workers))
        tiles = MandelbrotKind().total_units(params)
        began = time.perf_counter()
        for _ in procs.imap_unordered(_tile, [(params, t) for t in range(tiles)], chunksize=1):
            pass
        return time.perf_counter() - began


def _eta_at(samples: list[tuple[float, float, float | None]], end: float, fraction: float) -> Any:
    """The ETA shown when progress first reached ``fraction``, and the time actually left."""
    for at, progress, eta_s in samples:
        if progress >= fraction and eta_s is not None:
            return {"eta_s": eta_s, "actual_s": end - at, "error": eta_s / (end - at) - 1}
    return None


def coordinated(
    workers: int, params: dict[str, Any], src: str | None, tile: str = "auto", warm: bool = False
) -> dict[str, Any]:
    """One job through a coordinator running the code at ``src`` (this checkout's if
    ``None``): its seconds, its chunks' compute times and its ETA samples."""
    saved = os.environ.get("PYTHONPATH")
    if src is not None:
        os.environ["PYTHONPATH"] = src
    try:
        with tempfile.TemporaryDirectory() as tmp:
            coordinator = start_coordinator(Path(tmp), 0)
            procs = [start_worker(coordinator, 1, f"bench-{k}") for k in range(workers)]
            try:
                named = params if tile == "auto" else {**params, "tile": int(tile)}
                if warm:
                    _one_job(coordinator, workers, WARM_UP_JOB, Path(tmp) / "coordinator.db")
                return _one_job(coordinator, workers, named, Path(tmp) / "coordinator.db")
            finally:
                for proc in procs:
                    stop(proc)
                stop(coordinator.process)
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved


def _one_job(coordinator: Any, workers: int, params: dict[str, Any], db: Path) -> dict[str, Any]:
    with coordinator.client() as client:
        deadline = time.monotonic() + 120
        while sum(w["online"] for w in client.workers()) < workers:
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not join")
            time.sleep(0.05)
        samples: list[tuple[float, float, float | None]] = []
        done = threading.Event()
        began = time.perf_counter()
        job = client.submit("mandelbrot", **params)

        def poll() -> None:
            with coordinator.client() as watcher:
                handle = watcher.job(job.job_id)
                while not done.wait(POLL_S):
                    info = handle.info()
                    samples.append((time.perf_counter(), info.progress, info.raw.get("eta_s")))

        watcher = threading.Thread(target=poll, daemon=True)
        watcher.start()
        info = job.wait()
        seconds = time.perf_counter() - began
        end = time.perf_counter()
        done.set()
        watcher.join()
        if info.state != "done":
            raise RuntimeError(f"the job ended {info.state}: {info.error}")
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        rows = con.execute(
            "SELECT compute_s FROM leases WHERE job_id = ? AND state = 'done'", (job.job_id,)
        ).fetchall()
    return {
        "seconds": seconds,
        "chunk_s": sorted(r[0] for r in rows if r[0] is not None),
        "eta_25": _eta_at(samples, end, 0.25),
        "eta_50": _eta_at(samples, end, 0.50),
    }


def _true_unit_iterations(params: dict[str, Any]) -> np.ndarray:
    from hydracompute.kinds.mandelbrot_kernel import render_tile

    width, height = params["width"], params["height"]
    bounds = [params[k] for k in ("x_min", "x_max", "y_min", "y_max")]
    total = MandelbrotKind().total_units(params)
    order = np.arange(total) * tile_stride(total) % total
    cols = -(-width // TILE)
    per_tile = np.zeros(total)
    for tile in range(total):
        row0, col0 = tile // cols * TILE, tile % cols * TILE
        w, h = min(TILE, width - col0), min(TILE, height - row0)
        counts = render_tile(*bounds, width, height, params["max_iter"], col0, row0, w, h)
        per_tile[tile] = counts.sum(dtype=np.uint64)
    return per_tile[order]


def compare_estimates(params: dict[str, Any]) -> None:
    """Print how well each cost model predicts runs of consecutive units."""
    began = time.perf_counter()
    true = _true_unit_iterations(params)
    print(f"cost models against the true iterations ({time.perf_counter() - began:.1f}s to count)")
    total = true.size
    cols = rows = -(-params["width"] // TILE)
    order = np.arange(total) * tile_stride(total) % total
    models: dict[str, tuple[np.ndarray, float]] = {"tiles (no model)": (np.ones(total), 0.0)}
    for side in (1, 2, 4):
        began = time.perf_counter()
        counts = mandelbrot_cost.sample_counts(
            params["x_min"],
            params["x_max"],
            params["y_min"],
            params["y_max"],
            cols * side,
            rows * side,
            params["max_iter"],
        )
        spent = time.perf_counter() - began
        per_tile = counts.reshape(rows, side, cols, side).mean(axis=(1, 3)).ravel()
        models[f"{side}×{side} points a tile"] = (per_tile[order], spent)
    head = "runs of 4: p10   p90   max    runs of 16: p10   p90   max"
    print(f"  {'model':<22} {'estimate':>9}   {head}")
    for name, (estimate, spent) in models.items():
        cells = []
        for run in (4, 16):
            starts = np.arange(0, total, run)
            ratio = np.add.reduceat(true, starts) / np.add.reduceat(estimate, starts)
            ratio /= true.sum() / estimate.sum()
            cells.append(
                f"{np.percentile(ratio, 10):>5.2f} {np.percentile(ratio, 90):>5.2f} "
                f"{ratio.max():>5.2f}"
            )
        print(f"  {name:<22} {spent * 1000:>7.0f}ms   {cells[0]}        {cells[1]}")


def _distribution(chunk_s: list[float]) -> str:
    if not chunk_s:
        return "no chunks"
    p90 = chunk_s[min(len(chunk_s) - 1, math.ceil(0.9 * len(chunk_s)) - 1)]
    return (
        f"{len(chunk_s)} chunks: median {statistics.median(chunk_s):.2f}s, p90 {p90:.2f}s, "
        f"max {chunk_s[-1]:.2f}s (target {TARGET_S:.1f}s)"
    )


def _eta(figure: Any) -> str:
    if figure is None:
        return "not seen"
    return f"{figure['eta_s']:.2f}s shown, {figure['actual_s']:.2f}s left ({figure['error']:+.0%})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=3, help="rounds; each side's best kept")
    parser.add_argument("--before-src", default=None, help="src/ of the code to compare with")
    parser.add_argument("--estimates", action="store_true", help="compare cost models first")
    parser.add_argument(
        "--tiles",
        nargs="+",
        default=["auto"],
        choices=["auto", "64", "32", "16"],
        help="tile sides of this code's job (auto: the coordinator's choice)",
    )
    parser.add_argument(
        "--warm", action="store_true", help="a job of another view first, on the same pool"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    params = MandelbrotKind().validate({"width": args.size, "height": args.size, **VIEW})
    if args.estimates and not args.json:
        compare_estimates(params)
    sides: dict[str, tuple[str | None, str]] = {
        ("this code" if tile == "auto" else f"tiles {tile}"): (None, tile) for tile in args.tiles
    }
    if args.before_src:
        sides["before"] = (str(Path(args.before_src).resolve()), "auto")
    plain: list[float] = []
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
    # Alternate the sides, several rounds: the machine is shared.
    for _ in range(args.repeat):
        plain.append(plain_processes(args.workers, params))
        for name, (src, tile) in sides.items():
            runs[name].append(coordinated(args.workers, params, src, tile, args.warm))
    best_plain = min(plain)
    if args.json:
        print(json.dumps({"plain_s": plain, "runs": runs}, indent=2))
        return
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(
        f"Mandelbrot {args.size}², centre {VIEW['center_re']}+{VIEW['center_im']}i, span "
        f"{VIEW['span']}, max_iter {VIEW['max_iter']}: {args.workers} worker processes of 1 "
        f"core vs {args.workers} plain processes pulling single tiles, {args.repeat} "
        f"alternating rounds; {WARMED if args.warm else 'a new pool for each job'}"
    )
    print(f"plain processes: best {best_plain:.2f}s; every run {[round(s, 2) for s in plain]}")
    for name, results in runs.items():
        seconds = [r["seconds"] for r in results]
        ratios = [best_plain / s for s in seconds]
        best = min(results, key=lambda r: r["seconds"])
        print(
            f"{name:<10} best {best['seconds']:.2f}s = {best_plain / best['seconds']:.1%} of "
            f"plain; every run {[f'{r:.1%}' for r in ratios]} "
            f"(against that round's plain: "
            f"{[f'{p / s:.1%}' for p, s in zip(plain, seconds, strict=True)]})"
        )
        for k, r in enumerate(results):
            print(f"  run {k + 1}: {_distribution(r['chunk_s'])}")
            print(f"         ETA at 25%: {_eta(r['eta_25'])}; at 50%: {_eta(r['eta_50'])}")


if __name__ == "__main__":
    main()
