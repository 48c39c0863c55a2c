"""What each tile of a Mandelbrot view is expected to cost: a cheap low-resolution render.

A tile inside the set costs ``max_iter`` iterations a pixel, one far outside a handful: at
``max_iter`` 100,000 the dearest tile of a view costs thousands of times the cheapest, and a
chunk sized in tiles can take a hundredth of its target or ten times it. The coordinator
sizes chunks in *estimated iterations* instead (see :mod:`hydracompute.kinds.costs`), from the
estimate made here when a job's chunks are first carved.

The estimate samples a grid of points over the view (a few per tile, at most
:data:`SAMPLE_BUDGET`) and iterates them in numpy, dropping each point as it escapes, until
every point has escaped, ``max_iter`` is reached, or :data:`ITERATION_BUDGET` point-iterations
are spent; a point still running then is taken to be inside (``max_iter``). Measured on the
view centred on −0.7436 + 0.1318i, span 0.01, max_iter 100,000 at 2048² against its true
iterations (``bench/bench_tiling.py --estimates``): runs of 16 consecutive units cost 0.91
to 1.27 times their estimate (p10 to p90; 1.89 at most) with 4×4 points a tile, 0.85 to
2.10 with 2×2, while counted in tiles they cost 0.05 to 2.47 times their share. One point a
tile was worse than none (it hits the set or misses it).

It is a pure function of the parameters (plain IEEE double arithmetic, numpy only: the
coordinator never needs the compiled kernel), so every coordinator sharing a database
computes the same costs; results are cached in memory, never stored.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import numpy.typing as npt

from hydracompute.kinds.base import JSON
from hydracompute.kinds.costs import UnitCosts

#: Iterations a pixel of the classic view (−2…0.5, −1.25…1.25) costs on average at
#: max_iter 1000 (247.6): a tile of that cost is the *typical unit* of cost 1.0.
TYPICAL_PIXEL_ITERATIONS = 250.0

#: Points sampled over the whole view, at most.
SAMPLE_BUDGET = 16384
#: Point-iterations the estimate may spend, at most (about 0.1 s of numpy)...
ITERATION_BUDGET = 20_000_000
#: ...counting each step as this many more: a step over a few points costs numpy's
#: overhead of a dozen array operations, about as much as 2,000 points.
STEP_OVERHEAD = 2000
#: Points sampled along each side of a tile, at most.
MAX_SAMPLES_PER_SIDE = 4


@functools.lru_cache(maxsize=8)
def sample_counts(
    x_min: float,
    x_max: float,
    y_min: float,
    y_max: float,
    columns: int,
    rows: int,
    max_iter: int,
) -> npt.NDArray[np.float64]:
    """Estimated escape counts on a ``rows × columns`` grid over the view (each point the
    centre of its cell, rows top to bottom), within :data:`ITERATION_BUDGET`.

    Cached (read-only arrays, 128 KiB each for the usual 128² grid): the tiles of 64 and of
    16 pixels of most views sample the same grid, so a job whose tile side was chosen from
    its 64² estimate (:meth:`MandelbrotKind.plan`) gets its own costs without iterating
    again: on the high-variance view at 2048², 75–220 ms of the coordinator's CPU a job."""
    cr_axis = x_min + (np.arange(columns) + 0.5) * ((x_max - x_min) / columns)
    ci_axis = y_max - (np.arange(rows) + 0.5) * ((y_max - y_min) / rows)
    cr = np.tile(cr_axis, rows)
    ci = np.repeat(ci_axis, columns)
    counts = np.full(cr.size, float(max_iter))
    alive = np.arange(cr.size)
    a = np.zeros(cr.size)
    b = np.zeros(cr.size)
    spent = 0
    with np.errstate(over="ignore", invalid="ignore"):
        for step in range(max_iter):
            if alive.size == 0 or spent > ITERATION_BUDGET:
                break
            spent += alive.size + STEP_OVERHEAD
            a2 = a * a
            b2 = b * b
            escaped = a2 + b2 > 4.0
            if escaped.any():
                counts[alive[escaped]] = step
                kept = ~escaped
                alive, a, b, a2, b2 = alive[kept], a[kept], b[kept], a2[kept], b2[kept]
                cr, ci = cr[kept], ci[kept]
            b = 2.0 * a * b + ci
            a = a2 - b2 + cr
    estimate: npt.NDArray[np.float64] = np.maximum(counts, 1.0).reshape(rows, columns)
    estimate.flags.writeable = False
    return estimate


def tile_iterations(params: JSON, tile: int) -> npt.NDArray[np.float64]:
    """Estimated iterations of each tile of the view, tiles numbered row-major."""
    width, height = int(params["width"]), int(params["height"])
    cols, rows = -(-width // tile), -(-height // tile)
    per_tile = math.sqrt(SAMPLE_BUDGET / (cols * rows))
    if per_tile >= 1:
        side = min(MAX_SAMPLES_PER_SIDE, int(per_tile))
        grid_x, grid_y = cols * side, rows * side
    else:  # more tiles than samples: tiles share the nearest point
        grid_x, grid_y = max(1, int(cols * per_tile)), max(1, int(rows * per_tile))
    grid_x, grid_y = min(grid_x, width), min(grid_y, height)
    counts = sample_counts(
        float(params["x_min"]),
        float(params["x_max"]),
        float(params["y_min"]),
        float(params["y_max"]),
        grid_x,
        grid_y,
        int(params["max_iter"]),
    )
    # Each tile's mean over the points whose cells start inside it (at least the one where
    # it starts), from a summed-area table.
    table = np.zeros((grid_y + 1, grid_x + 1))
    table[1:, 1:] = counts.cumsum(0).cumsum(1)
    x0 = np.arange(cols) * tile
    y0 = np.arange(rows) * tile
    i0 = x0 * grid_x // width
    i1 = np.maximum(i0 + 1, (np.minimum(x0 + tile, width) * grid_x + width - 1) // width)
    j0 = y0 * grid_y // height
    j1 = np.maximum(j0 + 1, (np.minimum(y0 + tile, height) * grid_y + height - 1) // height)
    sums = table[j1][:, i1] - table[j0][:, i1] - table[j1][:, i0] + table[j0][:, i0]  # rows × cols
    mean = sums / np.outer(j1 - j0, i1 - i0)
    pixels = np.outer(np.minimum(tile, height - y0), np.minimum(tile, width - x0))
    iterations: npt.NDArray[np.float64] = (mean * pixels).ravel()
    return iterations


def unit_costs(params: JSON, tile: int, stride: int, typical_pixels: int) -> UnitCosts:
    """The job's unit costs in typical units (``typical_pixels`` pixels of
    :data:`TYPICAL_PIXEL_ITERATIONS` each), unit ``u`` being tile ``u·stride mod n`` of the
    tiles of ``tile`` pixels a side (row-major); cached by parameters."""
    key = tuple(sorted((k, v) for k, v in params.items() if k != "colour_map"))
    return _unit_costs(key, tile, stride, typical_pixels)


#: Jobs whose costs are cached: a running job's are asked for on every chunk carved, and
#: recomputed after eviction (tens of milliseconds). At most 8 MiB each (1,048,576 tiles
#: of 16²).
CACHED_JOBS = 32


@functools.lru_cache(maxsize=CACHED_JOBS)
def _unit_costs(
    key: tuple[tuple[str, object], ...], tile: int, stride: int, typical_pixels: int
) -> UnitCosts:
    per_tile = tile_iterations(dict(key), tile)
    total = per_tile.size
    unit_tiles = np.arange(total, dtype=np.int64) * stride % total
    typical_tile = typical_pixels * TYPICAL_PIXEL_ITERATIONS
    return UnitCosts(total, per_tile[unit_tiles] / typical_tile)
