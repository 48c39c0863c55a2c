"""Mandelbrot rendering: escape-time counts of a width×height view of the complex plane.

Work units are square tiles of the job's tile side (parameter ``tile``: 64, 32 or 16 pixels;
the right and bottom tiles may be narrower); a chunk is a run of consecutive units. The side
is chosen per job when it is submitted (:meth:`MandelbrotKind.plan`): 64 unless a tile of
that side would be dear enough to hold up the end of a job on a slow worker (see
:data:`MAX_TILE_ITERATIONS`); a job whose parameters lack ``tile`` has tiles of 64. A tile is
computed pixel by pixel, each pixel alone, so the counts do not depend on the tiling.

Unit ``u`` is tile ``u·s mod n`` of the ``n`` tiles numbered row-major, where the stride
``s`` is the number coprime with ``n`` nearest to ``round(n/φ)`` (see :func:`tile_stride`):
any run of units is spread over the whole picture, so every chunk costs about the same per
pixel. In row-major order a band through the set costs dozens of times a band above it, and
a worker's speed measured on one chunk would misjudge the next. The pixel convention is
fixed and documented in :func:`hydracompute.kinds.mandelbrot_kernel.render_tile`.

A chunk's output carries its counts tile after tile (each tile row-major) as little-endian
``uint16`` (``uint32`` when ``max_iter`` exceeds 65,535), in one zstd frame that records its
size, base64-encoded.
"""

from __future__ import annotations

import base64
import functools
import io
import math
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt
import zstandard

from hydracompute.errors import InvalidResult
from hydracompute.kinds.base import (
    JSON,
    Answer,
    Artefact,
    ArtefactStream,
    ChunkOutput,
    JobKind,
    ParamField,
    Preview,
    PreviewPiece,
)
from hydracompute.kinds.costs import UnitCosts
from hydracompute.kinds.mandelbrot_colour import COLOUR_MAPS, colourise, encode_png
from hydracompute.kinds.mandelbrot_cost import TYPICAL_PIXEL_ITERATIONS, unit_costs
from hydracompute.kinds.params import ParamReader

#: The largest tile side, and the side of a job whose parameters do not name one.
TILE = 64
#: The tile sides a job may have, largest first.
TILE_SIDES = (64, 32, 16)
#: The first version whose workers know the ``tile`` parameter (older ones refuse it).
TILE_SINCE = "0.2.0"
#: At submission the tile side is halved (down to 16) while the view's dearest tile, as
#: estimated (:mod:`hydracompute.kinds.mandelbrot_cost`), would cost more iterations than
#: this: 0.05 s of a core of 1 G iterations/s, 0.25 s of one five times slower. A 64² tile
#: inside the set at max_iter 100,000 costs 4.1·10⁸ iterations, 2.1 s on such a core: held
#: by a slow worker when the others run dry, it set the end of a 6-second job
#: (docs/benchmarks.md, "Tiles sized per job"). The default view (max_iter 1000) keeps 64.
MAX_TILE_ITERATIONS = 5e7
MAX_SIDE = 32768
MAX_PIXELS = 1 << 28
MAX_ITER = 10**6
#: The files of a finished job, with their media types.
ARTEFACTS = {"image.png": "image/png", "counts.npy": "application/octet-stream"}
#: Coordinates beyond this are pointless for escape-time rendering (everything escapes).
MAX_COORD = 1e6
#: zstd's fastest level: a 4-megapixel chunk of 16-bit counts compresses in about 6 ms,
#: against about 40 ms for zlib's fastest level on the same counts as 32-bit values.
COMPRESSION_LEVEL = 1
GOLDEN_RATIO = (1 + math.sqrt(5)) / 2
DEFAULT_REGION = {"x_min": -2.0, "x_max": 0.5, "y_min": -1.25, "y_max": 1.25}


class MandelbrotKind(JobKind):
    """Render the Mandelbrot set; answers are raw counts (``counts.npy``) and ``image.png``."""

    name = "mandelbrot"
    unit_name = "tile"
    # 16 tiles spread over the picture (see the unit order): a few milliseconds of work
    # whose speed holds for the next chunk; one tile (a corner, say) misjudged it tenfold.
    probe_units = 16
    # 4 Mpixel, 16 MiB of raw counts at most per chunk, for tiles of 64 (see max_units).
    max_chunk_units = 1024
    # Work is counted in iterations; a unit of cost 1.0 is a 64² tile of the classic view's
    # average cost, whatever the job's tile side (see unit_costs): speeds learnt on one job
    # hold for the next.
    work_per_unit = TILE * TILE * TYPICAL_PIXEL_ITERATIONS

    def validate(self, params: Mapping[str, Any]) -> JSON:
        reader = ParamReader(params)
        width = reader.int("width", 1, MAX_SIDE)
        height = reader.int("height", 1, MAX_SIDE)
        max_iter = reader.int("max_iter", 1, MAX_ITER, default=1000)
        colour_map = reader.choice("colour_map", list(COLOUR_MAPS), default="classic")
        region = _read_region(reader, width, height)
        tile = reader.int("tile", min(TILE_SIDES), TILE) if reader.present("tile") else None
        if tile is not None and tile not in TILE_SIDES:
            reader.fail("tile", f"must be one of {', '.join(map(str, TILE_SIDES))}")
        if width * height > MAX_PIXELS:
            reader.fail("width", f"width × height must be at most {MAX_PIXELS} pixels")
        reader.finish()
        canonical: JSON = {
            "width": width,
            "height": height,
            **region,
            "max_iter": max_iter,
            "colour_map": colour_map,
        }
        if tile is not None:
            canonical["tile"] = tile
        return canonical

    def plan(self, params: JSON) -> JSON:
        """The parameters with the job's tile side when they name none: the largest of
        :data:`TILE_SIDES` whose dearest tile is estimated at most
        :data:`MAX_TILE_ITERATIONS` (a view's dearest 64² tile, scaled by area). Named only
        when it is not 64, so a cheap view's parameters are what they always were."""
        if "tile" in params:
            return params
        # The estimate of 64² tiles, cached: a job that keeps them is sized from it.
        dearest = self.unit_costs(params).dearest() * self.work_per_unit
        side = TILE
        while side > TILE_SIDES[-1] and dearest * (side / TILE) ** 2 > MAX_TILE_ITERATIONS:
            side //= 2
        return params if side == TILE else {**params, "tile": side}

    def min_worker_version(self, params: JSON) -> str:
        return TILE_SINCE if "tile" in params else ""

    def max_units(self, params: JSON) -> int:
        """:attr:`max_chunk_units` tiles of 64, in tiles of the job's side: 4 Mpixel."""
        return self.max_chunk_units * (TILE // tile_side(params)) ** 2

    def total_units(self, params: JSON) -> int:
        cols, rows = _tile_grid(params)
        return cols * rows

    def compute(self, params: JSON, start: int, stop: int) -> JSON:
        # Imported here: only compute processes need numba (see PiKind.compute).
        from hydracompute.kinds.mandelbrot_kernel import render_tiles

        col0s, row0s = _tile_corners(params, start, stop)
        side = tile_side(params)
        counts = render_tiles(
            params["x_min"],
            params["x_max"],
            params["y_min"],
            params["y_max"],
            params["width"],
            params["height"],
            params["max_iter"],
            col0s,
            row0s,
            np.minimum(side, int(params["width"]) - col0s),
            np.minimum(side, int(params["height"]) - row0s),
        )
        wire = np.ascontiguousarray(counts, dtype=count_dtype(params))
        packed = _compressor().compress(wire.data)
        return {
            "counts": base64.b64encode(packed).decode("ascii"),
            "iterations": int(counts.sum(dtype=np.uint64)),
            "inside": int(np.count_nonzero(counts == params["max_iter"])),
        }

    def check(self, params: JSON, start: int, stop: int, output: JSON) -> None:
        if set(output) != {"counts", "iterations", "inside"}:
            raise InvalidResult(
                "a mandelbrot output has exactly the fields counts, iterations and inside"
            )
        if type(output["iterations"]) is not int or type(output["inside"]) is not int:
            raise InvalidResult("iterations and inside must be integers")
        counts = decode_counts(params, start, stop, output)
        if counts.min() < 1 or counts.max() > params["max_iter"]:
            raise InvalidResult(f"every count must be between 1 and {params['max_iter']}")
        if output["iterations"] != int(counts.sum(dtype=np.uint64)):
            raise InvalidResult("iterations does not equal the sum of the counts")
        if output["inside"] != int(np.count_nonzero(counts == params["max_iter"])):
            raise InvalidResult("inside does not equal the number of counts at max_iter")

    def same_output(self, params: JSON, a: JSON, b: JSON) -> bool:
        """Exact counts agree, however each worker's zstd compressed them (outputs passed
        :meth:`check`, so each is one frame of the chunk's recorded size)."""
        if a == b:
            return True
        if (a["iterations"], a["inside"]) != (b["iterations"], b["inside"]):
            return False
        inflate = zstandard.ZstdDecompressor().decompress
        return bool(
            inflate(base64.b64decode(a["counts"])) == inflate(base64.b64decode(b["counts"]))
        )

    def merge(self, params: JSON, outputs: Iterable[ChunkOutput]) -> Answer:
        # Sums of figures every output carries (checked against its counts): no decoding.
        live: JSON = {}
        for chunk in outputs:
            live = self.fold_live(params, live, chunk.output)
        return self.answer_from_live(params, live)

    def answer_from_live(self, params: JSON, live: JSON) -> Answer:
        # The image and the raw counts are rendered on first download (see render):
        # building them here would delay the answer by about a second for a 4096² image.
        summary = {
            "width": params["width"],
            "height": params["height"],
            "max_iter": params["max_iter"],
            "iterations": int(live["iterations"]),
            "inside_pixels": int(live["inside_pixels"]),
            "artefacts": list(ARTEFACTS),
        }
        return Answer(summary=summary)

    def render(self, params: JSON, outputs: Iterable[ChunkOutput], name: str) -> Artefact | None:
        if name not in ARTEFACTS:
            return None
        counts = assemble(params, outputs)
        if name == "image.png":
            rgb = colourise(counts, params["max_iter"], params["colour_map"])
            return Artefact(ARTEFACTS[name], encode_png(rgb))
        raw = io.BytesIO()
        np.save(raw, counts, allow_pickle=False)
        return Artefact(ARTEFACTS[name], raw.getvalue())

    def render_stream(
        self, params: JSON, outputs: Iterable[ChunkOutput], name: str, scratch: BinaryIO
    ) -> ArtefactStream | None:
        """The same artefacts as :meth:`render` (``counts.npy`` byte for byte, ``image.png``
        pixel for pixel) in a few megabytes of memory whatever the image's size (see
        :mod:`hydracompute.kinds.mandelbrot_stream`)."""
        # Imported here: that module builds on this one.
        from hydracompute.kinds.mandelbrot_stream import stream_counts_npy, stream_image_png

        if name == "image.png":
            return ArtefactStream(ARTEFACTS[name], stream_image_png(params, outputs, scratch))
        if name == "counts.npy":
            return ArtefactStream(ARTEFACTS[name], stream_counts_npy(params, outputs, scratch))
        return None

    def fold_live(self, params: JSON, live: JSON, output: JSON) -> JSON:
        return {
            "iterations": int(live.get("iterations", 0)) + int(output["iterations"]),
            "inside_pixels": int(live.get("inside_pixels", 0)) + int(output["inside"]),
        }

    def fold_live_chunk(
        self, params: JSON, live: JSON, start: int, stop: int, output: JSON
    ) -> JSON:
        """Also the estimated iterations of the accepted tiles (whole numbers, so the sum
        does not depend on the order of acceptance): progress learns from them how far the
        estimate is from the truth (see :meth:`work_estimated`)."""
        folded = self.fold_live(params, live, output)
        estimated = round(self.units_of_work(params, start, stop))
        folded["estimated_iterations"] = int(live.get("estimated_iterations", 0)) + estimated
        return folded

    def param_fields(self) -> list[ParamField]:
        def side(name: str, label: str) -> ParamField:
            return ParamField(name, "integer", label, True, 1024, 1, MAX_SIDE)

        def coordinate(name: str) -> ParamField:
            label = name.replace("_", " ")
            return ParamField(
                name, "number", label, False, DEFAULT_REGION[name], -MAX_COORD, MAX_COORD
            )

        return [
            side("width", "Width"),
            side("height", "Height"),
            *(coordinate(name) for name in DEFAULT_REGION),
            ParamField(
                "max_iter", "integer", "Max iterations", default=1000, minimum=1, maximum=MAX_ITER
            ),
            ParamField(
                "colour_map", "choice", "Colours", default="classic", choices=tuple(COLOUR_MAPS)
            ),
        ]

    def preview(self, params: JSON, start: int, stop: int, output: JSON) -> Preview:
        """The chunk's tiles side by side in a square-ish grid of tile slots (one piece
        each), coloured as in the final picture."""
        tiles = list(_tiles(params, start, stop))
        side = tile_side(params)
        slots = math.isqrt(len(tiles) - 1) + 1  # slots per row of the sheet
        sheet = np.zeros((-(-len(tiles) // slots) * side, slots * side), dtype=np.uint32)
        flat = decode_counts(params, start, stop, output)
        pieces: list[PreviewPiece] = []
        offset = 0
        for position, (col0, row0, w, h) in enumerate(tiles):
            x, y = (position % slots) * side, (position // slots) * side
            sheet[y : y + h, x : x + w] = flat[offset : offset + w * h].reshape(h, w)
            pieces.append((x, y, w, h, col0, row0))
            offset += w * h
        rgb = colourise(sheet, params["max_iter"], params["colour_map"])
        return Preview(encode_png(rgb), tuple(pieces))

    def warm_up(self) -> None:
        from hydracompute.kinds.mandelbrot_kernel import render_tiles

        corner = np.zeros(1, dtype=np.int64)
        side = np.full(1, 8, dtype=np.int64)
        render_tiles(-2.0, 0.5, -1.25, 1.25, 8, 8, 10, corner, corner, side, side)

    def unit_costs(self, params: JSON) -> UnitCosts:
        """Each tile's iterations estimated from a low-resolution render of the view (see
        :mod:`hydracompute.kinds.mandelbrot_cost`), in typical units."""
        total = self.total_units(params)
        return unit_costs(params, tile_side(params), tile_stride(total), TILE * TILE)

    def work_done(self, params: JSON, live: JSON) -> float:
        """Iterations of the accepted tiles, as their outputs count them."""
        return float(live.get("iterations", 0))

    def work_estimated(self, params: JSON, live: JSON) -> float | None:
        """Estimated iterations of the accepted tiles (``None`` for a summary folded
        before they were kept)."""
        estimated = live.get("estimated_iterations")
        return None if estimated is None else float(estimated)

    def work_name(self) -> str:
        return "iterations"


def _read_region(reader: ParamReader, width: int, height: int) -> dict[str, float]:
    """Either ``x_min x_max y_min y_max`` or ``center_re center_im span`` (span = x extent,
    the y extent follows the aspect ratio); the classic view when neither is given."""
    corners = [k for k in DEFAULT_REGION if reader.present(k)]
    centred = [k for k in ("center_re", "center_im", "span") if reader.present(k)]
    if corners and centred:
        reader.fail("region", "give either x_min/x_max/y_min/y_max or center_re/center_im/span")
        return dict(DEFAULT_REGION)
    if centred:
        cx = reader.float("center_re", -MAX_COORD, MAX_COORD)
        cy = reader.float("center_im", -MAX_COORD, MAX_COORD)
        span = reader.float("span", 1e-300, MAX_COORD)
        half_x = span / 2
        half_y = span * height / width / 2
        region = {
            "x_min": cx - half_x,
            "x_max": cx + half_x,
            "y_min": cy - half_y,
            "y_max": cy + half_y,
        }
    elif corners:
        region = {k: reader.float(k, -MAX_COORD, MAX_COORD) for k in DEFAULT_REGION}
    else:
        return dict(DEFAULT_REGION)
    if not region["x_min"] < region["x_max"]:
        reader.fail("x_max", "must be greater than x_min")
    if not region["y_min"] < region["y_max"]:
        reader.fail("y_max", "must be greater than y_min")
    return region


_local = threading.local()


def _compressor() -> zstandard.ZstdCompressor:
    """This thread's compressor (one may not be shared between threads): making one per
    chunk cost 15 µs, a quarter of compressing a one-tile chunk."""
    compressor = getattr(_local, "compressor", None)
    if compressor is None:
        compressor = _local.compressor = zstandard.ZstdCompressor(level=COMPRESSION_LEVEL)
    return compressor


def tile_side(params: JSON) -> int:
    """The side of a job's tiles, in pixels (64 when its parameters name none)."""
    return int(params.get("tile", TILE))


def _tile_grid(params: JSON) -> tuple[int, int]:
    side = tile_side(params)
    return -(-int(params["width"]) // side), -(-int(params["height"]) // side)


def _tile_corners(
    params: JSON, start: int, stop: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The first pixel column and row of the tiles of units ``[start, stop)``, in unit
    order (unit ``u`` is tile ``u·stride mod n``, numbered row-major)."""
    cols, rows = _tile_grid(params)
    total = cols * rows
    index = np.arange(start, stop, dtype=np.int64) * tile_stride(total) % total
    row, col = np.divmod(index, cols)
    side = tile_side(params)
    return col * side, row * side


def _tiles(params: JSON, start: int, stop: int) -> Iterator[tuple[int, int, int, int]]:
    """(col0, row0, tile_w, tile_h) of the tiles of units ``[start, stop)``, in unit order."""
    width, height = int(params["width"]), int(params["height"])
    side = tile_side(params)
    col0s, row0s = _tile_corners(params, start, stop)
    for col0, row0 in zip(col0s.tolist(), row0s.tolist(), strict=True):
        yield col0, row0, min(side, width - col0), min(side, height - row0)


def _pixels(params: JSON, start: int, stop: int) -> int:
    """How many pixels the tiles of units ``[start, stop)`` hold (edge tiles are cut)."""
    width, height = int(params["width"]), int(params["height"])
    side = tile_side(params)
    if width % side == 0 and height % side == 0:
        return (stop - start) * side * side
    col0, row0 = _tile_corners(params, start, stop)
    tile_w = np.minimum(side, width - col0)
    tile_h = np.minimum(side, height - row0)
    return int((tile_w * tile_h).sum())


@functools.cache
def tile_stride(total: int) -> int:
    """The step between the tiles of consecutive units: the first of ``m, m−1, m+1, m−2,
    m+2, …`` in ``[1, total]`` that is coprime with ``total``, where ``m = round(total/φ)``
    (at least 1). So the units visit every tile once and any run of them is spread evenly
    over the picture (as the golden-ratio sequence is). This is the rule docs/protocol.md
    states (nearest to ``m``, not to ``total/φ``: for 256 tiles, 157 rather than 159); a
    chunk's counts come in this order, so changing it changes the protocol."""
    nearest = max(1, round(total / GOLDEN_RATIO))
    for offset in range(total):
        for candidate in (nearest - offset, nearest + offset):
            if 1 <= candidate <= total and math.gcd(candidate, total) == 1:
                return candidate
    return 1


def count_dtype(params: JSON) -> np.dtype[Any]:
    """How counts travel: 16 bits when every count fits in them, else 32 (little-endian)."""
    return np.dtype("<u2" if int(params["max_iter"]) <= 0xFFFF else "<u4")


def decode_counts(
    params: JSON, start: int, stop: int, output: JSON
) -> npt.NDArray[np.unsignedinteger[Any]]:
    """The flat counts of a chunk's output (read-only, in their :func:`count_dtype`),
    checked for size without trusting the sender.

    Raises:
        InvalidResult: not base64, not one zstd frame recording its size, or not exactly
            the chunk's pixel count.
    """
    dtype = count_dtype(params)
    pixels = _pixels(params, start, stop)
    expected = pixels * dtype.itemsize
    encoded = output.get("counts")
    if not isinstance(encoded, str):
        raise InvalidResult("counts must be a base64 string")
    try:
        compressed = base64.b64decode(encoded, validate=True)
        # The frame's recorded size is read before anything is inflated: a frame claiming
        # more (a decompression bomb) or recording nothing is refused at once.
        recorded = zstandard.frame_content_size(compressed)
        if recorded != expected:
            raise InvalidResult(
                f"counts must hold exactly {pixels} {dtype.name} values in one zstd frame "
                "that records its size"
            )
        raw = zstandard.ZstdDecompressor().decompress(
            compressed, max_output_size=expected, allow_extra_data=False
        )
    except (ValueError, zstandard.ZstdError) as exc:
        raise InvalidResult(f"counts are not valid base64 zstd data: {exc}") from exc
    if len(raw) != expected:
        raise InvalidResult(f"counts must hold exactly {pixels} {dtype.name} values")
    return np.frombuffer(raw, dtype=dtype)


def assemble(params: JSON, outputs: Iterable[ChunkOutput]) -> npt.NDArray[np.uint32]:
    """The full height×width count image from chunk outputs."""
    image = np.zeros((int(params["height"]), int(params["width"])), dtype=np.uint32)
    for chunk in outputs:
        flat = decode_counts(params, chunk.start, chunk.stop, chunk.output)
        offset = 0
        for col0, row0, w, h in _tiles(params, chunk.start, chunk.stop):
            image[row0 : row0 + h, col0 : col0 + w] = flat[offset : offset + w * h].reshape(h, w)
            offset += w * h
    return image
