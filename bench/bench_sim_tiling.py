"""Makespan against the ideal for a pool whose speeds span 10×, on the high-variance view.

The view of the tiling issue (centre −0.7436 + 0.1318i, span 0.01, max_iter 100,000) through
the simulator (``hydracompute simulate``'s engine: the real store and scheduler, virtual
workers and clock): ``--workers`` always-on one-core workers whose speed factors are drawn
uniformly from 0.2 to 2.0 of the reference (a 10× span), round trips of about 2 ms, one job.
The simulated truth is every tile's *exact* iterations (the whole picture rendered once by
the real kernel, ``tile_costs = "exact"``) or, for pictures too large to render here, a
coarse render (``--coarse``: 4×4 points a tile by the real kernel); the coordinator sizes
chunks from its own low-resolution estimate, as it does for real, so the estimate's errors
are simulated. The reference core computes ``--giter`` billion iterations a second (this
machine's numba kernel: 0.97, docs/benchmarks.md), which sets its speed in tiles a second.

Rows: for each tile side (``--tiles``: 64, 32 or 16 pixels named in the job's parameters,
or ``auto``, the side the kind chooses at submission from the view's estimated cost) and
seed, chunks sized in estimated cost (this code), chunks sized in tiles (the stand-in kind's
cost estimate switched off for the run, as the coordinator sized them before cost
estimates) or in the simulated truth (an oracle). Efficiency is the ideal makespan (the
work over the pool's speed: no overhead, no waiting) over the simulated one; the goal is
≤ 5% over the ideal (efficiency ≥ 95.2%).

    .venv/bin/python bench/bench_sim_tiling.py [--workers 200] [--sizes 2048 16384]
        [--tiles 64 32 16 auto] [--seeds 3] [--first-seed 0] [--coarse 16384]
        [--target-s 2.0] [--giter 0.97] [--sizing "estimated cost" tiles "true cost"] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

try:
    import hydracompute  # noqa: F401
except ModuleNotFoundError:  # run from a checkout that is not pip-installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import numpy as np

from hydracompute.kinds import mandelbrot
from hydracompute.kinds.costs import UnitCosts
from hydracompute.kinds.mandelbrot import MandelbrotKind, tile_side, tile_stride
from hydracompute.kinds.mandelbrot_cost import TYPICAL_PIXEL_ITERATIONS
from hydracompute.sim import parse_scenario, simulate, standin
from hydracompute.sim.standin import StandInKind

VIEW = {"center_re": -0.7436, "center_im": 0.1318, "span": 0.01, "max_iter": 100_000}

SCENARIO = """
name = "tiling-{size}"
sample_period_s = 1
max_duration_s = 36000

[coordinator]
target_chunk_s = {target_s}
heartbeat_s = 5.0

[workers]
count = {workers}
cores = 1
kinds = ["mandelbrot"]
latency = {{ dist = "lognormal", median = 0.002, sigma = 0.5 }}

[workers.speed]
mandelbrot = {speed}
factor = {{ dist = "uniform", low = 0.2, high = 2.0 }}

[workers.availability]
always_on = true

[[jobs]]
kind = "mandelbrot"
params = {{ width = {size}, height = {size}, center_re = {center_re}, center_im = {center_im}, span = {span}, max_iter = {max_iter}{tile} }}
tile_costs = "{tile_costs}"
"""  # noqa: E501


@contextlib.contextmanager
def sized_in_tiles() -> Iterator[None]:
    """The stand-in kind without a cost estimate: chunks sized in tiles, as before."""
    saved = StandInKind.unit_costs
    StandInKind.unit_costs = lambda self, params: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        StandInKind.unit_costs = saved  # type: ignore[method-assign]


def job_params(size: int, tile: str) -> dict[str, Any]:
    """The job's parameters as the coordinator stores them: ``tile`` named, or (``auto``)
    chosen by the kind at submission."""
    kind = MandelbrotKind()
    named = {} if tile == "auto" else {"tile": int(tile)}
    return kind.plan(kind.validate({"width": size, "height": size, **VIEW, **named}))


def truth_iterations(params: dict[str, Any], exact: bool) -> np.ndarray:
    """The simulated truth: each tile's iterations, row-major."""
    if exact:
        key = json.dumps(params, sort_keys=True, separators=(",", ":"))
        return standin.exact_tile_iterations(key, tile_side(params))
    return _coarse_tile_iterations(params)


@contextlib.contextmanager
def sized_by_truth(params: dict[str, Any], exact: bool) -> Iterator[None]:
    """The stand-in kind given the simulated truth as its estimate (an oracle: what a
    perfect cost model would give)."""
    per_tile = truth_iterations(params, exact)
    total = per_tile.size
    order = np.arange(total, dtype=np.int64) * tile_stride(total) % total
    typical = mandelbrot.TILE * mandelbrot.TILE * TYPICAL_PIXEL_ITERATIONS
    costs = UnitCosts(total, per_tile[order] / typical)
    saved = StandInKind.unit_costs
    StandInKind.unit_costs = lambda self, params: costs  # type: ignore[method-assign]
    try:
        yield
    finally:
        StandInKind.unit_costs = saved  # type: ignore[method-assign]


def reference_speed(params: dict[str, Any], exact: bool, giter: float) -> tuple[float, float]:
    """Tiles a second of the reference core on the job, and the seconds the simulated
    truth took to count."""
    began = time.process_time()
    iterations = truth_iterations(params, exact)
    spent = time.process_time() - began
    return iterations.size / (float(iterations.sum()) / (giter * 1e9)), spent


@functools.lru_cache(maxsize=4)
def _coarse_cached(key: str) -> np.ndarray:
    from hydracompute.kinds.mandelbrot_kernel import render_tile

    params = json.loads(key)
    tile = tile_side(params)
    cols, rows = -(-params["width"] // tile), -(-params["height"] // tile)
    side = standin.COARSE_SAMPLES
    while cols * rows * side * side > standin.MAX_COST_SAMPLES and side > 1:
        side //= 2  # as the simulator's own coarse truth
    bounds = [params[k] for k in ("x_min", "x_max", "y_min", "y_max")]
    w, h = cols * side, rows * side
    counts = render_tile(*bounds, w, h, params["max_iter"], 0, 0, w, h).astype(np.float64)
    per_pixel = counts.reshape(rows, side, cols, side).mean(axis=(1, 3))
    return (per_pixel + standin.PIXEL_OVERHEAD_ITERATIONS).ravel() * tile * tile


def _coarse_tile_iterations(params: dict[str, Any]) -> np.ndarray:
    return _coarse_cached(json.dumps(params, sort_keys=True, separators=(",", ":")))


def run(
    size: int, tile: str, exact: bool, seed: int, sizing: str, args: argparse.Namespace
) -> dict[str, Any]:
    params = job_params(size, tile)
    speed, _ = reference_speed(params, exact, args.giter)
    text = SCENARIO.format(
        size=size,
        workers=args.workers,
        speed=speed,
        target_s=args.target_s,
        tile_costs="exact" if exact else "coarse",
        tile="" if tile == "auto" else f", tile = {tile}",
        **VIEW,
    )
    scenario = parse_scenario(text)
    managers = {
        "tiles": sized_in_tiles,
        "true cost": lambda: sized_by_truth(params, exact),
    }
    manager = managers.get(sizing, contextlib.nullcontext)()
    with manager:
        report, _simulation = simulate(scenario, seed)
    chunks = report["chunk_sizes"].get("mandelbrot", {})
    return {
        "size": size,
        "tile": tile,
        "tile_side": tile_side(params),
        "truth": "exact" if exact else "coarse",
        "sizing": sizing,
        "seed": seed,
        "makespan_s": report["makespan_s"],
        "ideal_s": report["ideal_makespan_s"],
        "efficiency": report["efficiency"],
        "results": report["results"]["total"],
        "chunk_units": chunks.get("units"),
        "wall_s": report["measured"]["wall_s"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=200)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 16384])
    parser.add_argument(
        "--coarse", type=int, nargs="*", default=[16384], help="sizes costed coarsely"
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--target-s", type=float, default=2.0)
    parser.add_argument(
        "--giter", type=float, default=0.97, help="G iterations/s of a reference core"
    )
    parser.add_argument(
        "--sizing",
        nargs="+",
        default=["estimated cost", "tiles", "true cost"],
        help="how chunks are sized: the coordinator's estimate, tiles, the truth (an oracle)",
    )
    parser.add_argument(
        "--tiles",
        nargs="+",
        default=["64", "32", "auto"],
        choices=[*map(str, mandelbrot.TILE_SIDES), "auto"],
        help="tile sides named in the job's parameters; auto: the kind's choice",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logging.getLogger("hydracompute").setLevel(logging.ERROR)
    rows = []
    if not args.json:
        print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    for size in args.sizes:
        exact = size not in args.coarse
        for tile in args.tiles:
            params = job_params(size, tile)
            speed, spent = reference_speed(params, exact, args.giter)
            if not args.json:
                core_s = MandelbrotKind().total_units(params) / speed
                truth = "exact" if exact else "coarse (a few points a tile)"
                print(
                    f"{size}², tiles {tile} ({tile_side(params)}²): truth {truth}, counted in "
                    f"{spent:.1f}s of CPU; the job is {core_s:.0f} s of the reference core "
                    f"({speed:.1f} tiles/s)"
                )
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                for sizing in args.sizing:
                    row = run(size, tile, exact, seed, sizing, args)
                    rows.append(row)
                    if not args.json:
                        units = row["chunk_units"] or {}
                        print(
                            f"  seed {seed}, sized in {sizing:<14}: makespan "
                            f"{row['makespan_s']:7.2f}s, ideal {row['ideal_s']:7.2f}s, "
                            f"{1 / row['efficiency'] - 1:+7.1%} over the ideal; "
                            f"{row['results']} results, chunk units median "
                            f"{units.get('p50', 0):.0f}, max {units.get('max', 0):.0f}"
                        )
    if args.json:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
