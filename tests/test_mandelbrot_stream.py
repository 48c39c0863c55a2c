"""Mandelbrot artefacts rendered band by band: the same answers as the in-memory renderer
(``counts.npy`` byte for byte, ``image.png`` pixel for pixel) in memory that does not grow
with the image."""

from __future__ import annotations

import io
import tempfile
import tracemalloc
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from hydracompute.kinds import ChunkOutput
from hydracompute.kinds.base import JSON
from hydracompute.kinds.mandelbrot import TILE, MandelbrotKind

MANDEL = MandelbrotKind()


def outputs_of(params: JSON, chunk_units: int) -> list[ChunkOutput]:
    units = MANDEL.total_units(params)
    return [
        ChunkOutput(
            start,
            min(units, start + chunk_units),
            MANDEL.compute(params, start, min(units, start + chunk_units)),
        )
        for start in range(0, units, chunk_units)
    ]


def streamed(params: JSON, outputs: list[ChunkOutput], name: str) -> bytes:
    with tempfile.TemporaryFile() as scratch:
        stream = MANDEL.render_stream(params, iter(outputs), name, scratch)
        assert stream is not None
        return b"".join(stream.pieces)


@pytest.mark.parametrize(
    "params",
    [
        {"width": 2 * TILE + 5, "height": TILE + 3, "max_iter": 200},
        {"width": 1, "height": 1, "max_iter": 5},
        {"width": 3 * TILE, "height": 2 * TILE, "max_iter": 70_000, "colour_map": "fire"},  # uint32
        {"width": 300, "height": 5 * TILE + 1, "max_iter": 300, "colour_map": "grey",
         "center_re": -0.75, "center_im": 0.1, "span": 0.5},
    ],
)  # fmt: skip
def test_streamed_artefacts_equal_the_in_memory_render(params: JSON) -> None:
    params = MANDEL.validate(params)
    outputs = outputs_of(params, chunk_units=3)
    reference_npy = MANDEL.render(params, outputs, "counts.npy")
    reference_png = MANDEL.render(params, outputs, "image.png")
    assert reference_npy is not None and reference_png is not None
    shuffled = outputs[::-1]  # outputs may come in any order
    assert streamed(params, shuffled, "counts.npy") == reference_npy.data
    png = streamed(params, shuffled, "image.png")
    expected = np.asarray(Image.open(io.BytesIO(reference_png.data)))
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), expected)
    with tempfile.TemporaryFile() as scratch:
        assert MANDEL.render_stream(params, iter(outputs), "other.txt", scratch) is None


def peak_bytes_while(consume: Iterator[bytes]) -> tuple[int, int]:
    """(peak bytes allocated by Python and NumPy while ``consume`` is drained, total size)."""
    tracemalloc.start()
    try:
        size = sum(len(piece) for piece in consume)
        return tracemalloc.get_traced_memory()[1], size
    finally:
        tracemalloc.stop()


def test_rendering_a_large_picture_takes_memory_that_does_not_grow_with_it() -> None:
    params = MANDEL.validate({"width": 4096, "height": 1024, "max_iter": 20})  # 1,024 tiles
    outputs = outputs_of(params, chunk_units=64)
    counts_bytes = 4096 * 1024 * 4  # the image of uint32 counts the in-memory render builds
    for name in ("counts.npy", "image.png"):
        with tempfile.TemporaryFile() as scratch:
            stream = MANDEL.render_stream(params, iter(outputs), name, scratch)
            assert stream is not None
            peak, size = peak_bytes_while(stream.pieces)
        assert size > 0
        # A chunk's counts and a band of 64 rows, a few times over: about 2-4 MB here.
        assert peak < counts_bytes / 3, (name, peak)
    # The in-memory renderer, measured the same way, holds the whole image (and more):
    # the bound above tells them apart.
    tracemalloc.start()
    try:
        MANDEL.render(params, outputs, "image.png")
        assert tracemalloc.get_traced_memory()[1] > counts_bytes
    finally:
        tracemalloc.stop()
