"""Mandelbrot escape-time kernel: iteration counts for a rectangular tile of an image.

The counts are a public contract — bit-identical on every machine and to any plain IEEE-754
double-precision implementation that follows :func:`render_tile`'s convention with the same
operation order (no fused multiply-add, no fast-math). The kernel is compiled by numba
without ``fastmath``, and LLVM does not contract separate multiplies and adds into FMAs
unless told to, so the vectorised code computes exactly what the scalar convention says.

Pixels are evaluated in groups (of 32, or 16 on CPUs without AVX-512) in lock-step so LLVM
vectorises across pixels: every lane runs the same iterations, and a per-lane mask freezes a
lane's count once its pixel escapes (its ``z`` keeps being updated, possibly to
``inf``/``nan``, but no longer affects the count). Each pixel's count is therefore exactly
the scalar loop's.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
from llvmlite import binding as llvm
from llvmlite import ir
from numba import njit, types
from numba.core import config as numba_config
from numba.extending import intrinsic
from numba.np.numpy_support import carray

__all__ = ["render_tile", "render_tiles"]

# Counts are ``uint32``, so ``max_iter`` may not exceed this.
_MAX_ITER = 2**32 - 1


def _target_has_avx512() -> bool:
    """Whether numba compiles for a CPU with AVX-512 (its CPU features, as numba reads them:
    ``NUMBA_CPU_FEATURES`` if set, else the host's)."""
    features = getattr(numba_config, "CPU_FEATURES", None) or llvm.get_host_cpu_features().flatten()
    return "+avx512f" in str(features).split(",")


# The kernel has two forms, chosen for the CPU numba compiles for (and cached per CPU):
#
# * With AVX-512, the lane masks are booleans, which LLVM keeps in mask registers: the escape
#   test clears a lane's bit in a masked compare and the count is one masked add, against
#   three vector instructions with 0/-1 integer masks (9% faster). Groups are 32 pixels,
#   four 512-bit vectors: each iteration is a chain of three dependent operations (about 9
#   cycles) and 16 lanes left the floating-point units idle part of the time. On the AMD
#   EPYC (Zen 4) machines 32 lanes × 2 iterations per pass ran 12% faster than 16 × 4 (3.70
#   against 3.28 G iter/s on the benchmark's view, gcc alike) although they waste more
#   iterations on lanes that escaped before the rest of their group (about 14% of
#   lane-iterations on that view, against 8%); 24, 40 and 48 lanes, and 3 or 4 iterations
#   a pass, were no faster.
# * Without (AVX2: 16 vector registers, no mask registers), booleans cost a conversion each
#   iteration and 32 lanes do not fit in the registers: 0/-1 integer masks and groups of 16
#   pixels, 4 iterations a pass, as before (measured with AVX-512 switched off in numba on
#   the same machine: 2.86 G iter/s, against 2.04 for integer masks and 32 lanes and 1.55
#   for the AVX-512 form).
#
# An escaped group may run up to _BATCH - 1 iterations too many (masked, so harmless).
_MASK_REGISTERS = _target_has_avx512()
_LANES = 32 if _MASK_REGISTERS else 16
_BATCH = 2 if _MASK_REGISTERS else 4
_MASK = np.bool_ if _MASK_REGISTERS else np.int64


def _type_lane_buffer(typingctx: object, dtype: Any) -> tuple[Any, Callable[..., Any]]:
    """A pointer to ``_LANES`` elements of ``dtype`` in the calling function's stack frame.

    The group's state lives there rather than in ``np.empty`` arrays: LLVM cannot tell
    numba's heap arrays apart (it checked for overlap at run time) nor keep them in
    registers, so every batch loaded and stored the whole state (0.88× gcc). A stack buffer
    is private to the call, so the state stays in vector registers across batches.
    """
    item = dtype.instance_type

    def codegen(context: Any, builder: Any, signature: object, args: object) -> Any:
        element = context.get_data_type(item)
        with builder.goto_entry_block():  # allocated once per call, not once per group
            buffer = builder.alloca(ir.ArrayType(element, _LANES))
        return builder.bitcast(buffer, element.as_pointer())

    return types.CPointer(item)(dtype), codegen  # type: ignore[no-untyped-call]


_lane_buffer: Any = intrinsic(_type_lane_buffer)


@njit(cache=True, nogil=True)
def _render(
    x_min: float,
    x_max: float,
    y_min: float,
    y_max: float,
    width: int,
    height: int,
    max_iter: int,
    col0: int,
    row0: int,
    tile_w: int,
    tile_h: int,
    one: int,
) -> npt.NDArray[np.uint32]:
    out = np.empty(tile_w * tile_h, np.uint32)
    _render_into(
        out, x_min, x_max, y_min, y_max, width, height, max_iter, col0, row0, tile_w, tile_h, one
    )
    return out


@njit(cache=True, nogil=True)
def _render_into(
    out: npt.NDArray[np.uint32],
    x_min: float,
    x_max: float,
    y_min: float,
    y_max: float,
    width: int,
    height: int,
    max_iter: int,
    col0: int,
    row0: int,
    tile_w: int,
    tile_h: int,
    one: int,
) -> None:
    """Write the tile's ``tile_w * tile_h`` counts, row-major, into ``out``.

    ``one`` must be 1: the count's increment comes as an argument, not a literal, because
    LLVM rewrites ``n + 1 if live else n`` as ``n - sext(live)`` (two vector instructions an
    iteration: the mask widened to a vector, then a subtract) but keeps ``n + one if live
    else n`` as one masked add, the mask straight from the compare. That is 9% faster.
    """
    dx = (x_max - x_min) / width
    dy = (y_max - y_min) / height
    n_pixels = tile_w * tile_h
    zr = carray(_lane_buffer(np.float64), _LANES)
    zi = carray(_lane_buffer(np.float64), _LANES)
    cr = carray(_lane_buffer(np.float64), _LANES)
    ci = carray(_lane_buffer(np.float64), _LANES)
    # Live lanes hold True or -1 (all bits set), so that `&=` freezes and `count -= alive`
    # counts; dead ones False or 0.
    alive = carray(_lane_buffer(_MASK), _LANES)
    count = carray(_lane_buffer(np.int64), _LANES)
    n_batches = max_iter // _BATCH
    # Tile column and row of the group's first pixel, stepped rather than divided out.
    col = 0
    row = 0
    for first in range(0, n_pixels, _LANES):
        if first + _LANES <= n_pixels and col + _LANES <= tile_w:
            # The whole group lies in one row (the usual case): a loop LLVM vectorises.
            c_im = y_max - (row0 + row + 0.5) * dy
            for k in range(_LANES):
                cr[k] = x_min + (col0 + col + k + 0.5) * dx
                ci[k] = c_im
                alive[k] = -1
            col += _LANES
            if col == tile_w:
                col = 0
                row += 1
        else:
            for k in range(_LANES):
                # Lanes past the end of the tile repeat the last pixel, born dead.
                cr[k] = x_min + (col0 + col + 0.5) * dx
                ci[k] = y_max - (row0 + row + 0.5) * dy
                alive[k] = -1 if first + k < n_pixels else 0
                if first + k < n_pixels - 1:
                    col += 1
                    if col == tile_w:
                        col = 0
                        row += 1
        for k in range(_LANES):
            zr[k] = 0.0
            zi[k] = 0.0
            count[k] = 0
        any_alive = True
        for _ in range(n_batches):
            any_alive = False
            for k in range(_LANES):
                a = zr[k]
                b = zi[k]
                c_re = cr[k]
                c_im = ci[k]
                n = count[k]
                if _MASK_REGISTERS:  # a constant: numba compiles one branch or the other
                    bit = alive[k] != 0
                    for _ in range(_BATCH):
                        a2 = a * a
                        b2 = b * b
                        bit = bit & (a2 + b2 <= 4.0)
                        n = n + one if bit else n
                        b = 2.0 * a * b + c_im
                        a = a2 - b2 + c_re
                    alive[k] = bit
                    any_alive |= bit
                else:
                    live = alive[k]
                    for _ in range(_BATCH):
                        a2 = a * a
                        b2 = b * b
                        live &= -np.int64(a2 + b2 <= 4.0)
                        n -= live
                        b = 2.0 * a * b + c_im
                        a = a2 - b2 + c_re
                    alive[k] = live
                    any_alive |= live != 0
                zr[k] = a
                zi[k] = b
                count[k] = n
            if not any_alive:
                break
        if any_alive:
            for _ in range(max_iter - n_batches * _BATCH):
                for k in range(_LANES):
                    a = zr[k]
                    b = zi[k]
                    a2 = a * a
                    b2 = b * b
                    live = (alive[k] != 0) & (a2 + b2 <= 4.0)
                    alive[k] = -np.int64(live)
                    count[k] += live
                    zi[k] = 2.0 * a * b + ci[k]
                    zr[k] = a2 - b2 + cr[k]
        for k in range(min(_LANES, n_pixels - first)):
            # An unsigned index: numba wraps negative signed ones, which made LLVM turn this
            # loop into a vector scatter.
            out[np.uint64(first + k)] = count[k]


@njit(cache=True, nogil=True)
def _render_many(
    x_min: float,
    x_max: float,
    y_min: float,
    y_max: float,
    width: int,
    height: int,
    max_iter: int,
    col0s: npt.NDArray[np.int64],
    row0s: npt.NDArray[np.int64],
    tile_ws: npt.NDArray[np.int64],
    tile_hs: npt.NDArray[np.int64],
    one: int,
) -> npt.NDArray[np.uint32]:
    out = np.empty(int((tile_ws * tile_hs).sum()), np.uint32)
    offset = 0
    for t in range(col0s.size):
        n = tile_ws[t] * tile_hs[t]
        _render_into(
            out[offset : offset + n],
            x_min,
            x_max,
            y_min,
            y_max,
            width,
            height,
            max_iter,
            col0s[t],
            row0s[t],
            tile_ws[t],
            tile_hs[t],
            one,
        )
        offset += n
    return out


def _check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, not {type(value).__name__}")
    number = int(value)
    if number < low or (high is not None and number > high):
        bound = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {bound}, got {number}")
    return number


def _check_float(name: str, value: object) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{name} must be a real number, not {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {number}")
    return number


def render_tile(
    x_min: float,
    x_max: float,
    y_min: float,
    y_max: float,
    width: int,
    height: int,
    max_iter: int,
    col0: int,
    row0: int,
    tile_w: int,
    tile_h: int,
) -> npt.NDArray[np.uint32]:
    """Escape-time counts of columns ``col0 … col0+tile_w-1``, rows ``row0 … row0+tile_h-1``
    of the ``width``×``height`` image of ``[x_min, x_max] × [y_min, y_max]``.

    Pixel convention (public, fixed; all arithmetic in IEEE-754 float64, in exactly this
    order, each operation rounded, no fused multiply-add):

    * column ``i`` (left to right), row ``j`` (top to bottom) samples the point ``c`` with
      real part ``cr = x_min + (i + 0.5) * ((x_max - x_min) / width)`` and imaginary part
      ``ci = y_max - (j + 0.5) * ((y_max - y_min) / height)``;
    * from ``zr = zi = 0.0``, ``n = 0``, repeat while ``n < max_iter``::

          zr2 = zr * zr
          zi2 = zi * zi
          if not (zr2 + zi2 <= 4.0): stop
          zi = (2.0 * zr) * zi + ci
          zr = (zr2 - zi2) + cr
          n += 1

    * the pixel's count is ``n``: ``max_iter`` if it never escaped, at least 1 (``z0 = 0``
      always passes the test).

    Tiles compose: any tiling of the image gives the same counts as one whole-image tile.
    Releases the GIL while computing.

    Returns:
        a new C-contiguous ``uint32`` array of shape ``(tile_h, tile_w)``.

    Raises:
        TypeError: a size is not an integer, or a coordinate not a real number.
        ValueError: a coordinate or ``x_max - x_min`` / ``y_max - y_min`` is not finite,
            ``x_min >= x_max`` or ``y_min >= y_max``, ``width``/``height``/``tile_w``/
            ``tile_h`` < 1, ``max_iter`` outside ``[1, 2**32 - 1]``, ``col0``/``row0`` < 0,
            or the tile reaches outside the image.
    """
    x_lo, x_hi = _check_float("x_min", x_min), _check_float("x_max", x_max)
    y_lo, y_hi = _check_float("y_min", y_min), _check_float("y_max", y_max)
    if not (x_lo < x_hi and y_lo < y_hi):
        raise ValueError("need x_min < x_max and y_min < y_max")
    if not (math.isfinite(x_hi - x_lo) and math.isfinite(y_hi - y_lo)):
        raise ValueError("the region's width and height must be finite floats")
    w = _check_int("width", width, 1)
    h = _check_int("height", height, 1)
    iterations = _check_int("max_iter", max_iter, 1, _MAX_ITER)
    c0 = _check_int("col0", col0, 0)
    r0 = _check_int("row0", row0, 0)
    tw = _check_int("tile_w", tile_w, 1)
    th = _check_int("tile_h", tile_h, 1)
    if c0 + tw > w or r0 + th > h:
        raise ValueError(
            f"tile columns {c0}..{c0 + tw - 1}, rows {r0}..{r0 + th - 1} "
            f"lie outside the {w}×{h} image"
        )
    counts = _render(x_lo, x_hi, y_lo, y_hi, w, h, iterations, c0, r0, tw, th, 1)
    return counts.reshape(th, tw)


def render_tiles(
    x_min: float,
    x_max: float,
    y_min: float,
    y_max: float,
    width: int,
    height: int,
    max_iter: int,
    col0s: npt.NDArray[np.int64],
    row0s: npt.NDArray[np.int64],
    tile_ws: npt.NDArray[np.int64],
    tile_hs: npt.NDArray[np.int64],
) -> npt.NDArray[np.uint32]:
    """:func:`render_tile` for several tiles of one image in one call, their counts one
    after the other (each tile row-major) in one flat array: the same counts, without a
    Python call per tile (on 16² tiles of a cheap view the calls cost a quarter of the
    time).

    Raises:
        TypeError, ValueError: as :func:`render_tile`, for the image or any tile; the
            four arrays must have one entry a tile.
    """
    x_lo, x_hi = _check_float("x_min", x_min), _check_float("x_max", x_max)
    y_lo, y_hi = _check_float("y_min", y_min), _check_float("y_max", y_max)
    if not (x_lo < x_hi and y_lo < y_hi):
        raise ValueError("need x_min < x_max and y_min < y_max")
    if not (math.isfinite(x_hi - x_lo) and math.isfinite(y_hi - y_lo)):
        raise ValueError("the region's width and height must be finite floats")
    w = _check_int("width", width, 1)
    h = _check_int("height", height, 1)
    iterations = _check_int("max_iter", max_iter, 1, _MAX_ITER)
    corners = [np.ascontiguousarray(a, dtype=np.int64) for a in (col0s, row0s, tile_ws, tile_hs)]
    c0, r0, tw, th = corners
    if not c0.ndim == 1 or any(a.shape != c0.shape for a in corners):
        raise ValueError("col0s, row0s, tile_ws and tile_hs must be 1-D, one entry a tile")
    if c0.size and (
        c0.min() < 0 or r0.min() < 0 or tw.min() < 1 or th.min() < 1
        or (c0 + tw).max() > w or (r0 + th).max() > h
    ):  # fmt: skip
        raise ValueError(f"every tile must lie inside the {w}×{h} image")
    return _render_many(x_lo, x_hi, y_lo, y_hi, w, h, iterations, c0, r0, tw, th, 1)
