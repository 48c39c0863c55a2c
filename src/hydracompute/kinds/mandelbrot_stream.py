"""Mandelbrot artefacts rendered band by band, in memory that does not grow with the image.

A chunk's tiles are spread over the whole picture (see :mod:`hydracompute.kinds.mandelbrot`),
so no band of rows can be drawn before every chunk has been read. Rendering therefore takes
two passes: the first decodes each chunk once and writes its tiles into a scratch file in
band order (each tile in a slot of the job's tile side squared, the tiles of a band side by
side); the second reads the scratch file one band of a tile's rows at a time and encodes it, as
``counts.npy`` (the ``.npy`` header, then rows) or as ``image.png`` (see
:mod:`hydracompute.kinds.png_stream`). What is in memory at once is one chunk's output and
one band: a few megabytes for the largest image allowed, against gigabytes when the whole
image is assembled.

The bytes of ``counts.npy`` are exactly those of ``np.save`` on the assembled image; the
pixels of ``image.png`` are exactly those of the picture Pillow encodes from it.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

from hydracompute.kinds.base import JSON, ChunkOutput
from hydracompute.kinds.mandelbrot import (
    _tile_grid,
    _tiles,
    count_dtype,
    decode_counts,
    tile_side,
)
from hydracompute.kinds.mandelbrot_colour import palette
from hydracompute.kinds.png_stream import PngStreamWriter

#: Bytes of PNG or .npy gathered before they are handed on (fewer, larger writes).
PIECE_BYTES = 1 << 20


def stream_counts_npy(
    params: JSON, outputs: Iterable[ChunkOutput], scratch: BinaryIO
) -> Iterator[bytes]:
    """``counts.npy`` of the job (``uint32``, height×width), piece by piece."""
    height, width = int(params["height"]), int(params["width"])
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<u4", "fortran_order": False, "shape": (height, width)}
    )

    def pieces() -> Iterator[bytes]:
        yield header.getvalue()
        for band in _count_bands(params, outputs, scratch):
            yield band.astype("<u4", copy=False).tobytes()

    yield from _gathered(pieces())


def stream_image_png(
    params: JSON, outputs: Iterable[ChunkOutput], scratch: BinaryIO
) -> Iterator[bytes]:
    """``image.png`` of the job, piece by piece."""
    max_iter = int(params["max_iter"])
    colours = palette(max_iter, str(params["colour_map"]))
    writer = PngStreamWriter(int(params["width"]), int(params["height"]))

    def pieces() -> Iterator[bytes]:
        yield writer.start()
        for band in _count_bands(params, outputs, scratch):
            yield writer.write_rows(colours[np.minimum(band, max_iter)])
        yield writer.finish()

    yield from _gathered(pieces())


def _gathered(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """``pieces`` joined into pieces of about :data:`PIECE_BYTES` (none empty)."""
    pending: list[bytes] = []
    size = 0
    for piece in pieces:
        if not piece:
            continue
        pending.append(piece)
        size += len(piece)
        if size >= PIECE_BYTES:
            yield b"".join(pending)
            pending, size = [], 0
    if pending:
        yield b"".join(pending)


def _count_bands(
    params: JSON, outputs: Iterable[ChunkOutput], scratch: BinaryIO
) -> Iterator[npt.NDArray[np.unsignedinteger[Any]]]:
    """The count image in bands of a tile's rows (the last may be shorter), top first,
    each of shape (rows, width) in :func:`count_dtype`."""
    dtype = count_dtype(params)
    width, height = int(params["width"]), int(params["height"])
    side = tile_side(params)
    cols, rows = _tile_grid(params)
    slot_bytes = side * side * dtype.itemsize
    band_bytes = cols * slot_bytes
    scratch.truncate(0)
    scratch.truncate(rows * band_bytes)  # a file of holes: unwritten slots read as zeros
    slot = np.zeros((side, side), dtype=dtype)
    for chunk in outputs:
        flat = decode_counts(params, chunk.start, chunk.stop, chunk.output)
        offset = 0
        for col0, row0, w, h in _tiles(params, chunk.start, chunk.stop):
            slot[:h, :w] = flat[offset : offset + w * h].reshape(h, w)
            offset += w * h
            scratch.seek((row0 // side * cols + col0 // side) * slot_bytes)
            scratch.write(slot.data)
        del flat
    for band_row in range(rows):
        scratch.seek(band_row * band_bytes)
        raw = scratch.read(band_bytes)
        slots = np.frombuffer(raw, dtype=dtype).reshape(cols, side, side)
        band = slots.transpose(1, 0, 2).reshape(side, cols * side)
        band_height = min(side, height - band_row * side)
        yield np.ascontiguousarray(band[:band_height, :width])
