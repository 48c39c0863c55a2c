"""Mandelbrot's tile side per job: chosen at submission, and invisible in the answer."""

from __future__ import annotations

import io
import itertools
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from hydracompute.core.config import SchedulerConfig
from hydracompute.errors import InvalidParams
from hydracompute.kinds import ChunkOutput, KindRegistry
from hydracompute.kinds.mandelbrot import (
    MAX_TILE_ITERATIONS,
    TILE,
    TILE_SIDES,
    MandelbrotKind,
    assemble,
    tile_side,
)
from hydracompute.kinds.mandelbrot_colour import colourise
from hydracompute.kinds.mandelbrot_kernel import render_tile
from hydracompute.kinds.mandelbrot_stream import stream_counts_npy, stream_image_png
from hydracompute.store import ResultReport, SQLiteBackend, Store
from hydracompute.worker.executor import run_chunk

MANDEL = MandelbrotKind()
#: The high-variance view of docs/benchmarks.md: its 64² tiles inside the set cost 4·10⁸.
SEAHORSE = {"center_re": -0.7436, "center_im": 0.1318, "span": 0.01, "max_iter": 100_000}
#: A small picture of an edge of the set whose sides are not multiples of any tile side.
EDGE = {"width": 157, "height": 101, "max_iter": 3000, "center_re": -0.7436,
        "center_im": 0.1318, "span": 0.02}  # fmt: skip


def direct(params: dict[str, Any]) -> np.ndarray:
    bounds = [params[k] for k in ("x_min", "x_max", "y_min", "y_max")]
    w, h = params["width"], params["height"]
    return render_tile(*bounds, w, h, params["max_iter"], 0, 0, w, h)


def random_chunks(params: dict[str, Any], seed: int) -> list[ChunkOutput]:
    """The job computed in chunks of random sizes (up to the job's bound), in a shuffled
    order, each output checked."""
    draw = random.Random(seed)
    total = MANDEL.total_units(params)
    edges = [0]
    while edges[-1] < total:
        edges.append(min(total, edges[-1] + draw.randint(1, min(40, MANDEL.max_units(params)))))
    outputs = []
    for start, stop in itertools.pairwise(edges):
        output = MANDEL.compute(params, start, stop)
        MANDEL.check(params, start, stop, output)
        outputs.append(ChunkOutput(start, stop, output))
    draw.shuffle(outputs)
    return outputs


@pytest.mark.parametrize("side", TILE_SIDES)
def test_every_tile_side_gives_the_direct_render_bit_for_bit(side: int) -> None:
    """Counts, counts.npy and image.png do not depend on the tiling."""
    params = MANDEL.validate({**EDGE, "tile": side})
    assert tile_side(params) == side
    assert MANDEL.total_units(params) == -(-157 // side) * -(-101 // side)
    outputs = random_chunks(params, seed=side)
    expected = direct(params)
    np.testing.assert_array_equal(assemble(params, outputs), expected)
    npy = b"".join(stream_counts_npy(params, outputs, io.BytesIO()))
    np.testing.assert_array_equal(np.load(io.BytesIO(npy)), expected)
    png = b"".join(stream_image_png(params, outputs, io.BytesIO()))
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    np.testing.assert_array_equal(rgb, colourise(expected, params["max_iter"], "classic"))
    live: dict[str, Any] = {}
    for chunk in outputs:
        live = MANDEL.fold_live_chunk(params, live, chunk.start, chunk.stop, chunk.output)
    assert MANDEL.work_done(params, live) == float(expected.sum())
    assert MANDEL.answer_from_live(params, live).summary["iterations"] == int(expected.sum())


@pytest.mark.parametrize("side", TILE_SIDES)
def test_previews_drawn_where_they_go_make_the_picture(side: int) -> None:
    """The dashboard's canvas: each chunk's preview, its pieces drawn at their places as
    the chunks arrive, is the final picture pixel for pixel whatever the tile side."""
    params = MANDEL.validate({**EDGE, "tile": side})
    canvas = np.zeros((params["height"], params["width"], 3), dtype=np.uint8)
    for chunk in random_chunks(params, seed=7 * side):
        preview = MANDEL.preview(params, chunk.start, chunk.stop, chunk.output)
        sheet = np.asarray(Image.open(io.BytesIO(preview.png)).convert("RGB"))
        for x, y, w, h, at_x, at_y in preview.pieces:
            assert (w, h) <= (side, side)
            canvas[at_y : at_y + h, at_x : at_x + w] = sheet[y : y + h, x : x + w]
    np.testing.assert_array_equal(canvas, colourise(direct(params), params["max_iter"], "classic"))


def test_a_dear_view_gets_smaller_tiles_and_a_cheap_one_keeps_its_parameters() -> None:
    default = MANDEL.validate({"width": 4096, "height": 4096})
    assert MANDEL.plan(default) == default  # nothing added: the parameters of old
    assert MANDEL.total_units(default) == 64 * 64
    dear = MANDEL.validate({"width": 2048, "height": 2048, **SEAHORSE})
    planned = MANDEL.plan(dear)
    # A 64² tile inside the set costs 4.1·10⁸ iterations, a 16² one 2.6·10⁷.
    assert planned == {**dear, "tile": 16}
    assert 16 * 16 * SEAHORSE["max_iter"] <= MAX_TILE_ITERATIONS < 32 * 32 * SEAHORSE["max_iter"]
    assert MANDEL.total_units(planned) == 128 * 128
    # Planned parameters are canonical, and planning them again changes nothing.
    assert MANDEL.validate(planned) == planned
    assert MANDEL.plan(planned) == planned
    # A side the submitter names is kept, even 64 on a dear view.
    named = MANDEL.validate({"width": 2048, "height": 2048, **SEAHORSE, "tile": 64})
    assert MANDEL.plan(named) == named
    # A chunk's bound is the same 4 Mpixel whatever the side.
    assert MANDEL.max_units(default) == MANDEL.max_chunk_units == 1024
    assert MANDEL.max_units(planned) == 1024 * 16


@pytest.mark.parametrize("tile", [48, 128, 8, 0, "16", 16.5, True])
def test_a_tile_side_not_offered_is_refused(tile: object) -> None:
    with pytest.raises(InvalidParams) as caught:
        MANDEL.validate({"width": 256, "height": 256, "tile": tile})
    assert "tile" in caught.value.errors


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    kinds = KindRegistry()
    kinds.register(MANDEL)
    s = Store(SQLiteBackend(tmp_path / "s.db"), kinds, SchedulerConfig(target_chunk_s=1.0))
    yield s
    s.close()


def test_the_coordinator_stores_the_planned_side(store: Store) -> None:
    job = store.submit_job("mandelbrot", {"width": 512, "height": 512, **SEAHORSE}, now=0.0)
    assert job.params["tile"] == 16
    assert job.total_units == 32 * 32
    cheap = store.submit_job("mandelbrot", {"width": 512, "height": 512}, now=0.0)
    assert "tile" not in cheap.params
    assert cheap.total_units == 8 * 8


def test_a_fast_worker_gets_chunks_bounded_in_pixels_not_in_tiles(store: Store) -> None:
    """A job of 16² tiles may be carved into chunks of up to 16,384 of them (4 Mpixel, as
    1,024 tiles of 64²); the answer is still the direct render's."""
    params = {"width": 2048, "height": 2048, "max_iter": 20, "tile": 16}
    job = store.submit_job("mandelbrot", params, now=0.0)
    costs = MANDEL.unit_costs(job.params)
    worker, _ = store.enrol_worker("a", 1, ["mandelbrot"], now=0.0)
    now, speed = 0.0, 1e6  # typical units a second: any chunk is capped
    leases = store.exchange(worker.worker_id, [], [], 1, now=now).leases
    sizes = []
    while leases:
        (lease,) = leases
        took = costs.cost(lease.start, lease.stop) / speed
        now += took
        sizes.append(lease.stop - lease.start)
        output = MANDEL.compute(lease.params, lease.start, lease.stop)
        report = ResultReport(lease.lease_id, output, took)
        leases = store.exchange(worker.worker_id, [report], [], 1, now=now).leases
    assert store.get_job(job.job_id).answer["iterations"] == int(direct(job.params).sum())
    assert MANDEL.max_chunk_units < max(sizes) <= MANDEL.max_units(job.params) == 16384


def test_the_unit_costs_count_typical_64_pixel_tiles_whatever_the_side() -> None:
    """A unit of cost 1.0 is a 64² tile of the typical cost for every side, so a speed
    learnt on one job holds for the next: the estimate of the whole view is the same."""
    totals = {}
    for side in TILE_SIDES:
        params = MANDEL.validate({"width": 512, "height": 512, **SEAHORSE, "tile": side})
        totals[side] = MANDEL.unit_costs(params).total()
        assert MANDEL.total_work(params) == pytest.approx(totals[side] * MANDEL.work_per_unit)
    assert totals[32] == pytest.approx(totals[TILE], rel=0.15)
    assert totals[16] == pytest.approx(totals[TILE], rel=0.15)


def test_a_worker_computes_a_chunk_of_small_tiles_up_to_its_bound_in_pixels() -> None:
    params = MANDEL.validate({"width": 2048, "height": 2048, "max_iter": 5, "tile": 16})
    run = run_chunk("mandelbrot", params, 0, 4096)  # 1 Mpixel: more than 1,024 tiles
    assert run.error is None and run.output is not None
    MANDEL.check(params, 0, 4096, run.output)
