"""The Mandelbrot cost estimate (kinds/mandelbrot_cost.py) and chunks carved by it."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest

from hydracompute.core.sizing import chunk_units
from hydracompute.kinds import ChunkOutput
from hydracompute.kinds.mandelbrot import TILE, MandelbrotKind, assemble, tile_stride
from hydracompute.kinds.mandelbrot_cost import TYPICAL_PIXEL_ITERATIONS, _unit_costs, sample_counts
from hydracompute.kinds.mandelbrot_kernel import render_tile

MANDEL = MandelbrotKind()
SEAHORSE = {"center_re": -0.7436, "center_im": 0.1318, "span": 0.01}


def direct(params: dict[str, Any]) -> np.ndarray:
    bounds = [params[k] for k in ("x_min", "x_max", "y_min", "y_max")]
    w, h = params["width"], params["height"]
    return render_tile(*bounds, w, h, params["max_iter"], 0, 0, w, h)


def true_unit_iterations(params: dict[str, Any]) -> np.ndarray:
    counts = direct(params).astype(np.float64)
    cols, rows = -(-params["width"] // TILE), -(-params["height"] // TILE)
    per_tile = np.array(
        [
            counts[r * TILE : (r + 1) * TILE, c * TILE : (c + 1) * TILE].sum()
            for r in range(rows)
            for c in range(cols)
        ]
    )
    total = cols * rows
    return per_tile[np.arange(total) * tile_stride(total) % total]


def test_the_estimate_is_a_pure_function_of_the_parameters() -> None:
    params = MANDEL.validate({"width": 700, "height": 300, "max_iter": 3000, **SEAHORSE})
    first = MANDEL.unit_costs(params)
    _unit_costs.cache_clear()
    again = MANDEL.unit_costs(params)
    assert first is not again
    units = MANDEL.total_units(params)
    assert [first.cost(u, u + 1) for u in range(units)] == [
        again.cost(u, u + 1) for u in range(units)
    ]
    # The colours do not change the cost: same estimate, from the cache.
    assert MANDEL.unit_costs({**params, "colour_map": "fire"}) is again


def test_the_estimate_follows_the_tiles_true_cost() -> None:
    """On a view whose tiles differ in cost by hundreds of times, each tile's estimate is
    near its true iterations where counting tiles is off by up to the whole spread."""
    params = MANDEL.validate(
        {
            "width": 768,
            "height": 768,
            "max_iter": 5000,
            "center_re": -0.75,
            "center_im": 0.1,
            "span": 0.05,
        }
    )
    true = true_unit_iterations(params)
    assert true.max() > 150 * true.min()
    costs = MANDEL.unit_costs(params)
    estimate = np.array([costs.cost(u, u + 1) for u in range(true.size)]) * MANDEL.work_per_unit
    assert estimate.sum() == pytest.approx(true.sum(), rel=0.05)
    ratio = true / estimate
    assert np.percentile(ratio, 10) > 0.8 and np.percentile(ratio, 90) < 1.5
    assert ratio.min() > 0.2 and ratio.max() < 10
    # Total work is the estimate; the summary counts the true iterations.
    assert MANDEL.total_work(params) == pytest.approx(estimate.sum())


def test_a_view_all_inside_the_set_is_estimated_within_its_budget() -> None:
    params = MANDEL.validate(
        {
            "width": 1024,
            "height": 1024,
            "max_iter": 10**6,
            "center_re": -0.1,
            "center_im": 0.0,
            "span": 0.01,
        }
    )
    costs = MANDEL.unit_costs(params)
    per_pixel = costs.total() * MANDEL.work_per_unit / (1024 * 1024)
    assert per_pixel == pytest.approx(10**6)  # not escaped within the budget: inside
    assert MANDEL.work_per_unit == TILE * TILE * TYPICAL_PIXEL_ITERATIONS


@pytest.mark.parametrize("speeds", [(3.0, 0.5), (40.0, 7.0, 0.2)])
def test_chunks_carved_by_cost_merge_into_the_direct_render(speeds: tuple[float, ...]) -> None:
    """However the cost model carves a view, the answer is the direct render's, bit for
    bit."""
    params = MANDEL.validate(
        {"width": 5 * TILE + 17, "height": 3 * TILE + 9, "max_iter": 3000, **SEAHORSE}
    )
    units = MANDEL.total_units(params)
    costs = MANDEL.unit_costs(params)
    edges = [0]
    while edges[-1] < units:
        start = edges[-1]
        size = chunk_units(
            speed=speeds[len(edges) % len(speeds)],
            target_s=1.0,
            probe_units=2,
            max_units=MANDEL.max_chunk_units,
            remaining=units - start,
            share=0.5,
            costs=costs,
            start=start,
        )
        edges.append(start + size)
    sizes = {b - a for a, b in itertools.pairwise(edges)}
    assert len(sizes) > 2  # uneven chunks, not one size
    outputs = []
    for start, stop in itertools.pairwise(edges):
        output = MANDEL.compute(params, start, stop)
        MANDEL.check(params, start, stop, output)
        outputs.append(ChunkOutput(start, stop, output))
    expected = direct(params)
    np.testing.assert_array_equal(assemble(params, outputs), expected)
    live: dict[str, Any] = {}
    for chunk in outputs:
        live = MANDEL.fold_live(params, live, chunk.output)
    assert MANDEL.work_done(params, live) == float(expected.sum())


def test_the_live_summary_keeps_the_estimate_of_the_accepted_tiles() -> None:
    """Folded chunk by chunk in any order, the summary holds the real iterations and the
    estimate of the same tiles, whole numbers: the same whatever the order."""
    params = MANDEL.validate({"width": 4 * TILE, "height": 3 * TILE, "max_iter": 2000, **SEAHORSE})
    units = MANDEL.total_units(params)
    ranges = [(0, 3), (3, 4), (4, 9), (9, units)]
    outputs = {r: MANDEL.compute(params, *r) for r in ranges}
    summaries = []
    for order in (ranges, ranges[::-1]):
        live: dict[str, Any] = {}
        for start, stop in order:
            live = MANDEL.fold_live_chunk(params, live, start, stop, outputs[(start, stop)])
        summaries.append(live)
    assert summaries[0] == summaries[1]
    live = summaries[0]
    assert MANDEL.work_done(params, live) == float(direct(params).sum())
    estimated = MANDEL.work_estimated(params, live)
    assert estimated == sum(round(MANDEL.units_of_work(params, *r)) for r in ranges)
    assert estimated == pytest.approx(MANDEL.total_work(params), abs=len(ranges))
    # The answer made from the summary is what merging the outputs gives.
    merged = MANDEL.merge(params, [ChunkOutput(*r, outputs[r]) for r in ranges])
    assert MANDEL.answer_from_live(params, live) == merged
    # A summary folded without the ranges keeps no estimate.
    assert MANDEL.work_estimated(params, MANDEL.fold_live(params, {}, outputs[ranges[0]])) is None


def test_a_job_whose_tile_side_was_chosen_reuses_the_samples_of_the_choice() -> None:
    """The submission's choice of side reads the 64² estimate; the job's own costs, of
    16² tiles, sample the same 128² grid and are not iterated again."""
    kind = MandelbrotKind()
    params = kind.validate(
        {"width": 2048, "height": 2048, "max_iter": 100_000, "span": 0.011}
        | {"center_re": -0.7436, "center_im": 0.1318}
    )
    sample_counts.cache_clear()
    _unit_costs.cache_clear()
    planned = kind.plan(params)
    assert planned["tile"] == 16
    assert sample_counts.cache_info().misses == 1
    costs = kind.unit_costs(planned)
    assert sample_counts.cache_info().misses == 1  # the same grid, from the cache
    assert costs.total_units == (2048 // 16) ** 2
    # The cached samples are shared, so nobody may write to them.
    with pytest.raises(ValueError):
        sample_counts(*(planned[k] for k in ("x_min", "x_max", "y_min", "y_max")), 128, 128, 10**5)[
            0, 0
        ] = 1.0
