"""The built-in job kinds and the registry: validation, checks, merging, live summaries."""

from __future__ import annotations

import base64
import io
import itertools
import math
from typing import Any

import numpy as np
import pytest
import zstandard
from PIL import Image

from hydracompute.errors import InvalidParams, InvalidResult, UnknownKind
from hydracompute.kinds import ChunkOutput, KindRegistry, default_registry
from hydracompute.kinds.mandelbrot import TILE, MandelbrotKind, decode_counts, tile_stride
from hydracompute.kinds.mandelbrot_colour import COLOUR_MAPS, colourise
from hydracompute.kinds.mandelbrot_kernel import render_tile
from hydracompute.kinds.pi import BLOCK_SAMPLES, PiKind

PI = PiKind()
MANDEL = MandelbrotKind()


def test_builtin_kinds_register_through_entry_points() -> None:
    registry = default_registry()
    assert {"pi", "mandelbrot"} <= set(registry.names())
    assert isinstance(registry.get("pi"), PiKind)
    with pytest.raises(UnknownKind, match="installed: "):
        registry.get("nope")


def test_registry_refuses_duplicates_and_bad_names() -> None:
    registry = KindRegistry()
    registry.register(PiKind())
    with pytest.raises(ValueError, match="already registered"):
        registry.register(PiKind())

    class Bad(PiKind):
        name = "Bad Name"

    with pytest.raises(ValueError, match="must match"):
        registry.register(Bad())


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "samples"),
        ({"samples": 0}, "samples"),
        ({"samples": 10**15 + 1}, "samples"),
        ({"samples": 1.5}, "samples"),
        ({"samples": True}, "samples"),
        ({"samples": "10"}, "samples"),
        ({"samples": 10, "seed": -1}, "seed"),
        ({"samples": 10, "seed": 2**63}, "seed"),
        ({"samples": 10, "colour": 1}, "colour"),
    ],
)
def test_pi_rejects_bad_params(params: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidParams) as err:
        PI.validate(params)
    assert field in err.value.errors


def test_pi_canonical_params_record_the_seed() -> None:
    assert PI.validate({"samples": 1e10, "seed": 5}) == {"samples": 10**10, "seed": 5}
    generated = PI.validate({"samples": 10})
    assert 0 <= generated["seed"] < 2**63
    assert PI.validate(generated) == generated  # workers re-validate to the same thing


def test_pi_units_are_blocks_with_a_partial_last_one() -> None:
    params = PI.validate({"samples": 3 * BLOCK_SAMPLES + 7, "seed": 1})
    assert PI.total_units(params) == 4
    assert PI.compute(params, 3, 4)["samples"] == 7


def test_pi_check_refuses_impossible_and_implausible_outputs() -> None:
    params = PI.validate({"samples": 10 * BLOCK_SAMPLES, "seed": 3})
    good = PI.compute(params, 2, 4)
    PI.check(params, 2, 4, good)
    n = 2 * BLOCK_SAMPLES
    for bad in (
        {"hits": good["hits"], "samples": n - 1},
        {"hits": n + 1, "samples": n},
        {"hits": -1, "samples": n},
        {"hits": n, "samples": n},  # every point inside: statistically impossible
        {"hits": good["hits"] + 20_000, "samples": n},  # ~24 σ off
        {"hits": float(good["hits"]), "samples": n},
        {**good, "extra": 1},
    ):
        with pytest.raises(InvalidResult):
            PI.check(params, 2, 4, bad)


def test_pi_live_summary_matches_the_merged_answer() -> None:
    params = PI.validate({"samples": 5 * BLOCK_SAMPLES + 99, "seed": 11})
    pieces = [(0, 2), (2, 3), (3, 6)]
    outputs = [ChunkOutput(a, b, PI.compute(params, a, b)) for a, b in pieces]
    live: dict[str, Any] = {}
    for chunk in reversed(outputs):
        live = PI.fold_live(params, live, chunk.output)
    answer = PI.merge(params, outputs).summary
    assert live == answer
    assert answer["samples"] == 5 * BLOCK_SAMPLES + 99
    assert abs(answer["estimate"] - math.pi) < 6 * answer["stderr"]


def test_mandelbrot_region_forms() -> None:
    corners = MANDEL.validate(
        {"width": 200, "height": 100, "x_min": -2, "x_max": 1, "y_min": -0.75, "y_max": 0.75}
    )
    centred = MANDEL.validate(
        {"width": 200, "height": 100, "center_re": -0.5, "center_im": 0.0, "span": 3.0}
    )
    assert {k: corners[k] for k in ("x_min", "x_max", "y_min", "y_max")} == {
        k: centred[k] for k in ("x_min", "x_max", "y_min", "y_max")
    }
    assert MANDEL.validate(corners) == corners
    assert centred["max_iter"] == 1000 and centred["colour_map"] == "classic"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"width": 0, "height": 10}, "width"),
        ({"width": 32769, "height": 10}, "width"),
        ({"width": 32768, "height": 32768}, "width"),  # 2^30 pixels > 2^28
        ({"width": 10, "height": 10, "max_iter": 10**6 + 1}, "max_iter"),
        ({"width": 10, "height": 10, "x_min": 1, "x_max": 0, "y_min": 0, "y_max": 1}, "x_max"),
        ({"width": 10, "height": 10, "x_min": 0, "x_max": 1, "y_min": 0}, "y_max"),
        ({"width": 10, "height": 10, "x_min": 0, "span": 1}, "region"),
        ({"width": 10, "height": 10, "center_re": 0, "center_im": 0, "span": 0}, "span"),
        (
            {"width": 10, "height": 10, "x_min": float("nan"), "x_max": 1, "y_min": 0, "y_max": 1},
            "x_min",
        ),
        ({"width": 10, "height": 10, "colour_map": "rainbow"}, "colour_map"),
    ],
)
def test_mandelbrot_rejects_bad_params(params: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidParams) as err:
        MANDEL.validate(params)
    assert field in err.value.errors


def test_mandelbrot_chunks_merge_into_the_direct_render() -> None:
    params = MANDEL.validate({"width": 2 * TILE + 5, "height": TILE + 3, "max_iter": 200})
    units = MANDEL.total_units(params)
    assert units == 3 * 2
    outputs = []
    for start, stop in [(0, 1), (1, 4), (4, units)]:
        output = MANDEL.compute(params, start, stop)
        MANDEL.check(params, start, stop, output)
        outputs.append(ChunkOutput(start, stop, output))
    answer = MANDEL.merge(params, outputs)
    assert answer.artefacts == {}  # rendered on first download
    assert answer.summary["artefacts"] == ["image.png", "counts.npy"]
    npy, png = (
        MANDEL.render(params, outputs, "counts.npy"),
        MANDEL.render(params, outputs, "image.png"),
    )
    assert npy is not None and png is not None and png.media_type == "image/png"
    assert MANDEL.render(params, outputs, "other.txt") is None
    counts = np.load(io.BytesIO(npy.data), allow_pickle=False)
    direct = render_tile(
        params["x_min"],
        params["x_max"],
        params["y_min"],
        params["y_max"],
        params["width"],
        params["height"],
        200,
        0,
        0,
        params["width"],
        params["height"],
    )
    np.testing.assert_array_equal(counts, direct)
    image = Image.open(io.BytesIO(png.data))
    assert image.size == (params["width"], params["height"]) and image.mode == "RGB"
    assert answer.summary["iterations"] == int(direct.sum())
    live: dict[str, Any] = {}
    for chunk in outputs:
        live = MANDEL.fold_live(params, live, chunk.output)
    assert live["iterations"] == answer.summary["iterations"]
    assert live["inside_pixels"] == answer.summary["inside_pixels"] == int((direct == 200).sum())


def _encoded(values: np.ndarray, dtype: str = "<u2", **options: Any) -> str:
    packed = zstandard.ZstdCompressor(**options).compress(values.astype(dtype).tobytes())
    return base64.b64encode(packed).decode()


def test_mandelbrot_check_refuses_malformed_outputs() -> None:
    params = MANDEL.validate({"width": TILE, "height": TILE, "max_iter": 50})
    good = MANDEL.compute(params, 0, 1)
    counts = np.full(TILE * TILE, 3, dtype=np.uint32)
    bomb = _encoded(np.zeros(10**8, dtype=np.uint8), "u1")
    for bad in (
        {**good, "counts": _encoded(counts[:-1])},  # too few pixels
        {**good, "counts": _encoded(np.zeros(TILE * TILE, dtype=np.uint32))},  # count 0
        {**good, "counts": _encoded(np.full(TILE * TILE, 51, dtype=np.uint32))},  # > max_iter
        {"counts": _encoded(counts), "iterations": 1, "inside": 0},  # wrong total
        {"counts": _encoded(counts), "iterations": 3 * TILE * TILE, "inside": 1},  # none is
        {**good, "inside": float(good["inside"])},
        {"counts": good["counts"], "iterations": good["iterations"]},  # no inside
        {**good, "counts": "not base64!"},
        {**good, "counts": base64.b64encode(b"not zstd").decode()},
        {**good, "counts": bomb},  # 100 MB of zeros: refused without inflating it all
        {**good, "counts": _encoded(counts, "<u4")},  # 32-bit where 16 bits are the format
        {**good, "counts": _encoded(counts, write_content_size=False)},  # size not recorded
        {**good, "counts": base64.b64encode(base64.b64decode(good["counts"]) + b"x").decode()},
        {"counts": good["counts"]},
    ):
        with pytest.raises(InvalidResult):
            MANDEL.check(params, 0, 1, bad)


def test_mandelbrot_counts_beyond_16_bits_travel_as_32_bit_values() -> None:
    # Outside the set everything escapes at once: cheap, whatever max_iter says.
    region = {"x_min": 1.0, "x_max": 2.0, "y_min": 1.0, "y_max": 2.0}
    params = MANDEL.validate({"width": TILE, "height": TILE, "max_iter": 70_000, **region})
    output = MANDEL.compute(params, 0, 1)
    MANDEL.check(params, 0, 1, output)
    raw = zstandard.ZstdDecompressor().decompress(base64.b64decode(output["counts"]))
    assert len(raw) == TILE * TILE * 4
    counts = decode_counts(params, 0, 1, output)
    assert counts.dtype == np.uint32 and int(counts.sum()) == output["iterations"]
    small = MANDEL.validate({"width": TILE, "height": TILE, "max_iter": 65_535})
    assert decode_counts(small, 0, 1, MANDEL.compute(small, 0, 1)).size == TILE * TILE
    with pytest.raises(InvalidResult):  # the same bytes are not counts of a 16-bit job
        MANDEL.check(small, 0, 1, output)


def test_mandelbrot_previews_compose_into_the_final_picture() -> None:
    params = MANDEL.validate({"width": 3 * TILE + 9, "height": 2 * TILE + 5, "max_iter": 150})
    units = MANDEL.total_units(params)
    pieces = [(0, 1), (1, 3), (3, 6), (6, units)]
    canvas = np.zeros((params["height"], params["width"], 3), dtype=np.uint8)
    drawn = np.zeros(canvas.shape[:2], dtype=np.int32)
    outputs = []
    for start, stop in pieces:
        output = MANDEL.compute(params, start, stop)
        outputs.append(ChunkOutput(start, stop, output))
        picture = MANDEL.preview(params, start, stop, output)
        sheet = np.asarray(Image.open(io.BytesIO(picture.png)).convert("RGB"))
        assert len(picture.pieces) == stop - start  # one per tile
        for x, y, w, h, at_x, at_y in picture.pieces:
            canvas[at_y : at_y + h, at_x : at_x + w] = sheet[y : y + h, x : x + w]
            drawn[at_y : at_y + h, at_x : at_x + w] += 1
    assert (drawn == 1).all()  # every pixel drawn, once
    png = MANDEL.render(params, outputs, "image.png")
    assert png is not None
    final = np.asarray(Image.open(io.BytesIO(png.data)).convert("RGB"))
    np.testing.assert_array_equal(canvas, final)


@pytest.mark.parametrize("total", [1, 2, 3, 6, 64, 100, 4096, 65536, 12 * 35])
def test_mandelbrot_units_visit_every_tile_once_spread_over_the_picture(total: int) -> None:
    stride = tile_stride(total)
    assert math.gcd(stride, total) == 1
    assert sorted(u * stride % total for u in range(total)) == list(range(total))
    if total >= 400:  # any run of a tenth of the units lands in every tenth of the tiles
        run = total // 10
        for start in range(0, total - run, max(1, total // 37)):
            tenths = {u * stride % total * 10 // total for u in range(start, start + run)}
            assert tenths == set(range(10))


def test_mandelbrot_chunks_of_equal_size_cost_about_the_same() -> None:
    # What the unit order is for: a worker's speed measured on one chunk holds for the next.
    # Here, eighths of the units cost within 27% of each other in unit order; in row order
    # the band through the set cost dozens of times the top band.
    params = MANDEL.validate({"width": 2048, "height": 2048, "max_iter": 100})
    units = MANDEL.total_units(params)
    costs = [
        MANDEL.compute(params, start, start + units // 8)["iterations"]
        for start in range(0, units, units // 8)
    ]
    assert max(costs) < 1.4 * min(costs)


@pytest.mark.parametrize("max_iter", [1, 2, 300, 1000])
@pytest.mark.parametrize("colour_map", sorted(COLOUR_MAPS))
def test_colours_follow_the_gradient_of_each_count(max_iter: int, colour_map: str) -> None:
    # The documented map, pixel by pixel: position log(1 + count) / log(1 + max_iter) on the
    # gradient, linear between its stops, rounded; points that never escaped are black.
    def colour(count: int) -> tuple[int, ...]:
        if count >= max_iter:
            return (0, 0, 0)
        t = math.log1p(count) / (math.log1p(max_iter) if max_iter > 1 else 1.0)
        stops = COLOUR_MAPS[colour_map]
        for (p0, c0), (p1, c1) in itertools.pairwise(stops):
            if p0 <= t <= p1:
                f = (t - p0) / (p1 - p0)
                return tuple(round(a + f * (b - a)) for a, b in zip(c0, c1, strict=True))
        return stops[-1][1]

    counts = np.arange(max_iter + 2, dtype=np.uint32).reshape(1, -1)
    rgb = colourise(counts, max_iter, colour_map)
    assert [tuple(int(v) for v in px) for px in rgb[0]] == [colour(int(c)) for c in counts[0]]


def test_answers_from_the_live_summary_equal_the_merged_ones() -> None:
    # Finishing a job uses answer_from_live when a kind gives one (no outputs read); it
    # must be what merge gives from every output.
    pi_params = PiKind().validate({"samples": 5 * BLOCK_SAMPLES + 77, "seed": 3})
    mandel_params = MANDEL.validate({"width": 2 * TILE + 5, "height": TILE + 3, "max_iter": 40})
    for kind, params, cuts in (
        (PiKind(), pi_params, [(0, 2), (2, 3), (3, 6)]),
        (MANDEL, mandel_params, [(0, 1), (1, 4), (4, 6)]),
    ):
        outputs = [ChunkOutput(a, b, kind.compute(params, a, b)) for a, b in cuts]
        live: dict[str, Any] = {}
        for chunk in reversed(outputs):  # in no particular order
            live = kind.fold_live(params, live, chunk.output)
        from_live = kind.answer_from_live(params, live)
        assert from_live is not None
        assert from_live == kind.merge(params, outputs)
