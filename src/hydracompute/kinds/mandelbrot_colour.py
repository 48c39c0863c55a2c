"""Colour maps for Mandelbrot counts: smooth gradients over a logarithmic count scale."""

from __future__ import annotations

import io

import numpy as np
import numpy.typing as npt
from PIL import Image

#: Gradient control points (position in [0, 1], RGB). Points inside the set are black.
COLOUR_MAPS: dict[str, list[tuple[float, tuple[int, int, int]]]] = {
    "classic": [
        (0.0, (0, 7, 100)),
        (0.16, (32, 107, 203)),
        (0.42, (237, 255, 255)),
        (0.6425, (255, 170, 0)),
        (0.8575, (0, 2, 0)),
        (1.0, (0, 7, 100)),
    ],
    "fire": [(0.0, (0, 0, 0)), (0.35, (180, 20, 0)), (0.7, (255, 180, 0)), (1.0, (255, 255, 220))],
    "grey": [(0.0, (0, 0, 0)), (1.0, (255, 255, 255))],
}


def colourise(
    counts: npt.NDArray[np.uint32], max_iter: int, colour_map: str
) -> npt.NDArray[np.uint8]:
    """RGB image (H, W, 3) of ``counts``; ``max_iter`` (never escaped) is black."""
    # One colour per possible count, then one look-up per pixel: the gradient is evaluated
    # max_iter + 1 times instead of once per pixel (16 M times for a 4096² image).
    return palette(max_iter, colour_map)[np.minimum(counts, max_iter)]


def palette(max_iter: int, colour_map: str) -> npt.NDArray[np.uint8]:
    """The colour of every count from 0 to ``max_iter``, shape (max_iter + 1, 3)."""
    stops = COLOUR_MAPS[colour_map]
    positions = np.array([p for p, _ in stops])
    scale = np.log1p(float(max_iter)) if max_iter > 1 else 1.0
    t = np.log1p(np.arange(max_iter + 1, dtype=np.float64)) / scale
    colours = np.empty((max_iter + 1, 3), dtype=np.uint8)
    for channel in range(3):
        values = np.array([c[channel] for _, c in stops], dtype=np.float64)
        colours[:, channel] = np.interp(t, positions, values).round().astype(np.uint8)
    colours[max_iter] = 0
    return colours


def encode_png(rgb: npt.NDArray[np.uint8]) -> bytes:
    out = io.BytesIO()
    # Level 1 rather than the default 6: measured on a 4096² image, 0.33 s instead of 0.39 s
    # and 2.4 MB instead of 2.0 MB (docs/benchmarks.md).
    Image.fromarray(rgb).save(out, format="PNG", optimize=False, compress_level=1)
    return out.getvalue()
