"""The compute kernels against pure-Python statements of their public contracts."""

from __future__ import annotations

import functools
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hydracompute.kinds.mandelbrot_kernel import render_tile, render_tiles
from hydracompute.kinds.pi import BLOCK_SAMPLES
from hydracompute.kinds.pi_kernel import count_hits

MASK64 = (1 << 64) - 1
MAX_SEED = 2**63 - 1
MAX_INDEX = 10**15


# --- Monte-Carlo π ------------------------------------------------------------------------


def splitmix64_output(seed: int, i: int) -> int:
    """Output ``i`` (0-based) of Vigna's splitmix64.c started from state ``seed``."""
    z = (seed + (i + 1) * 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def reference_hits(seed: int, start: int, stop: int) -> int:
    """The documented generator and accept test, one sample at a time."""
    hits = 0
    for i in range(start, stop):
        z = splitmix64_output(seed, i)
        x, y = z >> 33, z & ((1 << 31) - 1)
        hits += x * x + y * y < 1 << 62
    return hits


def test_reference_generator_is_splitmix64() -> None:
    # Published first outputs of splitmix64 seeded with 1234567; pins the helper above.
    assert [splitmix64_output(1234567, i) for i in range(3)] == [
        6457827717110365317,
        3203168211198807973,
        9817491932198370423,
    ]


@pytest.mark.parametrize(
    ("seed", "start"),
    [
        (0, 0),
        (1, 0),
        (1234567, 17),
        (MAX_SEED, 0),
        (2**40 + 3, BLOCK_SAMPLES - 150),  # crosses a block boundary
        (987654321, MAX_INDEX - 300),
    ],
)
def test_count_hits_matches_the_documented_generator(seed: int, start: int) -> None:
    stop = start + 300
    expected = reference_hits(seed, start, stop)
    assert count_hits(seed, start, stop) == expected
    # Sample by sample, so a compensating pair of errors cannot hide.
    singles = [count_hits(seed, i, i + 1) for i in range(start, start + 40)]
    assert singles == [reference_hits(seed, i, i + 1) for i in range(start, start + 40)]


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, MAX_SEED),
    origin=st.integers(0, MAX_INDEX - 3 * 10**5),
    first=st.integers(0, 10**5),
    second=st.integers(0, 10**5),
    third=st.integers(0, 10**5),
)
def test_count_hits_is_additive(
    seed: int, origin: int, first: int, second: int, third: int
) -> None:
    a = origin
    b = a + first
    c = b + second
    d = c + third
    whole = count_hits(seed, a, d)
    assert count_hits(seed, a, b) + count_hits(seed, b, c) + count_hits(seed, c, d) == whole


def test_count_hits_is_additive_over_blocks() -> None:
    seed, blocks = 42, 5
    per_block = [
        count_hits(seed, k * BLOCK_SAMPLES, (k + 1) * BLOCK_SAMPLES) for k in range(blocks)
    ]
    assert sum(per_block) == count_hits(seed, 0, blocks * BLOCK_SAMPLES)


def test_count_hits_is_deterministic() -> None:
    assert count_hits(7, 1000, 2_001_000) == count_hits(7, 1000, 2_001_000)


def test_empty_range_has_no_hits() -> None:
    assert count_hits(3, 0, 0) == 0
    assert count_hits(3, MAX_INDEX, MAX_INDEX) == 0


def test_seeds_give_different_streams() -> None:
    counts = {count_hits(seed, 0, 10**6) for seed in range(6)}
    assert len(counts) == 6
    patterns = {tuple(count_hits(seed, i, i + 1) for i in range(64)) for seed in range(6)}
    assert len(patterns) == 6


@pytest.mark.parametrize("seed", [0, 1, 2**31 + 7, MAX_SEED])
def test_estimate_is_statistically_sane(seed: int) -> None:
    n = 5 * 10**7
    start = seed % 10**12
    estimate = 4 * count_hits(seed, start, start + n) / n
    stderr = 4 * math.sqrt((math.pi / 4) * (1 - math.pi / 4) / n)
    assert abs(estimate - math.pi) < 6 * stderr


@pytest.mark.parametrize(
    ("seed", "start", "stop"),
    [
        (-1, 0, 10),
        (2**63, 0, 10),
        (0, -1, 10),
        (0, 10, 9),
        (0, 0, MAX_INDEX + 1),
        (0, MAX_INDEX + 1, MAX_INDEX + 2),
    ],
)
def test_count_hits_rejects_out_of_range_arguments(seed: int, start: int, stop: int) -> None:
    with pytest.raises(ValueError):
        count_hits(seed, start, stop)


@pytest.mark.parametrize(("seed", "start", "stop"), [(1.0, 0, 10), (0, True, 10), (0, 0, "9")])
def test_count_hits_rejects_non_integers(seed: object, start: object, stop: object) -> None:
    with pytest.raises(TypeError):
        count_hits(seed, start, stop)  # type: ignore[arg-type]


def test_count_hits_accepts_numpy_integers() -> None:
    hits = count_hits(np.int64(5), np.uint64(10), np.int32(400))  # type: ignore[arg-type]
    assert hits == reference_hits(5, 10, 400)


# --- Mandelbrot ---------------------------------------------------------------------------

Region = tuple[float, float, float, float]

FULL_VIEW: Region = (-2.0, 0.5, -1.25, 1.25)
SEAHORSE_VALLEY: Region = (-0.8, -0.7, 0.05, 0.15)  # crosses the set's boundary
INSIDE: Region = (-0.3, 0.1, -0.2, 0.2)  # main cardioid: every pixel reaches max_iter
OUTSIDE: Region = (2.0, 3.5, -3.0, -1.0)  # everything escapes within a few iterations
REGIONS = [FULL_VIEW, SEAHORSE_VALLEY, INSIDE, OUTSIDE]
WIDTH, HEIGHT = 37, 23


def reference_count(cr: float, ci: float, max_iter: int) -> int:
    zr = zi = 0.0
    n = 0
    while n < max_iter:
        zr2 = zr * zr
        zi2 = zi * zi
        if not zr2 + zi2 <= 4.0:
            break
        zi = 2.0 * zr * zi + ci
        zr = zr2 - zi2 + cr
        n += 1
    return n


@functools.cache
def reference_image(
    region: Region, width: int, height: int, max_iter: int
) -> npt.NDArray[np.uint32]:
    """The documented pixel convention, in plain Python floats (IEEE doubles, no FMA)."""
    x_min, x_max, y_min, y_max = region
    out = np.empty((height, width), np.uint32)
    for j in range(height):
        ci = y_max - (j + 0.5) * ((y_max - y_min) / height)
        for i in range(width):
            cr = x_min + (i + 0.5) * ((x_max - x_min) / width)
            out[j, i] = reference_count(cr, ci, max_iter)
    return out


@pytest.mark.parametrize("max_iter", [1, 7, 50, 500])
@pytest.mark.parametrize("region", REGIONS)
def test_whole_image_matches_reference(region: Region, max_iter: int) -> None:
    counts = render_tile(*region, WIDTH, HEIGHT, max_iter, 0, 0, WIDTH, HEIGHT)
    assert counts.dtype == np.uint32
    assert counts.shape == (HEIGHT, WIDTH)
    assert counts.flags.c_contiguous
    np.testing.assert_array_equal(counts, reference_image(region, WIDTH, HEIGHT, max_iter))


def test_regions_exercise_what_they_claim() -> None:
    assert (reference_image(INSIDE, WIDTH, HEIGHT, 500) == 500).all()
    assert (reference_image(OUTSIDE, WIDTH, HEIGHT, 500) < 10).all()
    boundary = reference_image(SEAHORSE_VALLEY, WIDTH, HEIGHT, 500)
    assert (boundary == 500).any()
    assert len(np.unique(boundary)) > 50


@pytest.mark.parametrize(("tile_w", "tile_h"), [(1, 1), (5, 7), (11, 3), (17, 23), (37, 1)])
@pytest.mark.parametrize("region", [FULL_VIEW, SEAHORSE_VALLEY])
def test_stitched_tiles_equal_the_whole_image(region: Region, tile_w: int, tile_h: int) -> None:
    max_iter = 50
    whole = render_tile(*region, WIDTH, HEIGHT, max_iter, 0, 0, WIDTH, HEIGHT)
    stitched = np.zeros_like(whole)
    for row0 in range(0, HEIGHT, tile_h):
        for col0 in range(0, WIDTH, tile_w):
            w, h = min(tile_w, WIDTH - col0), min(tile_h, HEIGHT - row0)
            tile = render_tile(*region, WIDTH, HEIGHT, max_iter, col0, row0, w, h)
            assert tile.shape == (h, w)
            stitched[row0 : row0 + h, col0 : col0 + w] = tile
    np.testing.assert_array_equal(stitched, whole)
    np.testing.assert_array_equal(whole, reference_image(region, WIDTH, HEIGHT, max_iter))


# Wider than the kernel's lock-step groups (16 or 32 pixels), so that groups within one row
# (the kernel's vectorised set-up) and groups spanning rows both occur, at tile offsets.
WIDE_WIDTH, WIDE_HEIGHT = 100, 7


@pytest.mark.parametrize(
    ("col0", "row0", "tile_w", "tile_h"),
    [
        (0, 0, WIDE_WIDTH, WIDE_HEIGHT),  # three whole groups a row, then one across rows
        (3, 1, 64, 5),  # two whole groups a row, from an odd column
        (5, 2, 65, 4),  # the third group of each row takes pixels of the next
        (0, 0, 32, WIDE_HEIGHT),  # one group a row, exactly
        (10, 0, 33, 3),
        (67, 6, 33, 1),  # one row, its last group one pixel long
    ],
)
def test_tiles_wider_than_a_lane_group_match_the_reference(
    col0: int, row0: int, tile_w: int, tile_h: int
) -> None:
    reference = reference_image(SEAHORSE_VALLEY, WIDE_WIDTH, WIDE_HEIGHT, 301)
    tile = render_tile(*SEAHORSE_VALLEY, WIDE_WIDTH, WIDE_HEIGHT, 301, col0, row0, tile_w, tile_h)
    np.testing.assert_array_equal(tile, reference[row0 : row0 + tile_h, col0 : col0 + tile_w])


def test_the_form_for_cpus_without_avx512_gives_the_same_counts(tmp_path: Path) -> None:
    """The kernel has a second form (integer masks, 16 lanes) for CPUs without AVX-512; run
    it here by telling numba, in a child process, that the CPU has none."""
    import llvmlite.binding as llvm

    features = ",".join(
        ("+" if on and not name.startswith("avx512") else "-") + name
        for name, on in llvm.get_host_cpu_features().items()
    )
    script = (
        "import sys, numpy as np\n"
        "from hydracompute.kinds import mandelbrot_kernel as k\n"
        "assert not k._MASK_REGISTERS and k._LANES == 16\n"
        f"whole = k.render_tile(*{SEAHORSE_VALLEY}, {WIDE_WIDTH}, {WIDE_HEIGHT}, 301, "
        f"0, 0, {WIDE_WIDTH}, {WIDE_HEIGHT})\n"
        "sys.stdout.buffer.write(whole.tobytes())\n"
    )
    env = {**os.environ, "NUMBA_CPU_FEATURES": features, "NUMBA_CACHE_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, check=True, timeout=240
    )
    counts = np.frombuffer(done.stdout, np.uint32).reshape(WIDE_HEIGHT, WIDE_WIDTH)
    np.testing.assert_array_equal(
        counts, reference_image(SEAHORSE_VALLEY, WIDE_WIDTH, WIDE_HEIGHT, 301)
    )


@pytest.mark.parametrize(("tile_w", "tile_h"), [(1, 1), (5, 7), (16, 16), (37, 23)])
def test_tiles_rendered_in_one_call_are_each_tiles_counts(tile_w: int, tile_h: int) -> None:
    """render_tiles gives each tile's counts, one after the other, in any order."""
    reference = reference_image(SEAHORSE_VALLEY, WIDTH, HEIGHT, 500)
    tiles = [
        (col0, row0, min(tile_w, WIDTH - col0), min(tile_h, HEIGHT - row0))
        for row0 in range(0, HEIGHT, tile_h)
        for col0 in range(0, WIDTH, tile_w)
    ][::-1]
    c0, r0, w, h = (np.array(column, dtype=np.int64) for column in zip(*tiles, strict=True))
    flat = render_tiles(*SEAHORSE_VALLEY, WIDTH, HEIGHT, 500, c0, r0, w, h)
    expected = [reference[y : y + th, x : x + tw].ravel() for x, y, tw, th in tiles]
    np.testing.assert_array_equal(flat, np.concatenate(expected))


@pytest.mark.parametrize(
    ("col0", "row0", "tile_w", "tile_h"),
    [(-1, 0, 4, 4), (0, -1, 4, 4), (0, 0, 0, 4), (34, 0, 4, 4), (0, 20, 4, 4)],
)
def test_render_tiles_refuses_a_tile_outside_the_image(
    col0: int, row0: int, tile_w: int, tile_h: int
) -> None:
    one = [np.array([v], dtype=np.int64) for v in (0, 0, 2, 2)]
    bad = [np.array([v], dtype=np.int64) for v in (col0, row0, tile_w, tile_h)]
    arrays = [np.concatenate(pair) for pair in zip(one, bad, strict=True)]
    with pytest.raises(ValueError, match="inside"):
        render_tiles(*FULL_VIEW, WIDTH, HEIGHT, 50, *arrays)


@settings(max_examples=40, deadline=None)
@given(
    col0=st.integers(0, WIDTH - 1),
    row0=st.integers(0, HEIGHT - 1),
    tile_w=st.integers(1, WIDTH),
    tile_h=st.integers(1, HEIGHT),
)
def test_any_tile_is_a_slice_of_the_reference(
    col0: int, row0: int, tile_w: int, tile_h: int
) -> None:
    tile_w, tile_h = min(tile_w, WIDTH - col0), min(tile_h, HEIGHT - row0)
    tile = render_tile(*SEAHORSE_VALLEY, WIDTH, HEIGHT, 50, col0, row0, tile_w, tile_h)
    expected = reference_image(SEAHORSE_VALLEY, WIDTH, HEIGHT, 50)
    np.testing.assert_array_equal(tile, expected[row0 : row0 + tile_h, col0 : col0 + tile_w])


@pytest.mark.parametrize(
    ("c", "expected"),
    [
        (0.0, 1000),  # the orbit stays at 0
        (-2.0, 1000),  # the orbit sits on |z|² = 4 for ever: the test is ≤, not <
        (1.0, 3),  # 0 → 1 → 2 → 5
        (2.0, 2),  # 0 → 2 → 6
        (10.0, 1),  # z0 = 0 always counts once
    ],
)
def test_known_points(c: float, expected: int) -> None:
    # A 1×1 image of [c-1, c+1] × [-1, 1] samples exactly c + 0i.
    counts = render_tile(c - 1.0, c + 1.0, -1.0, 1.0, 1, 1, 1000, 0, 0, 1, 1)
    assert counts.tolist() == [[expected]]


def test_max_iter_one_counts_one_everywhere() -> None:
    assert (render_tile(*FULL_VIEW, 40, 30, 1, 0, 0, 40, 30) == 1).all()


def test_tiles_are_fresh_arrays() -> None:
    first = render_tile(*FULL_VIEW, 8, 8, 20, 0, 0, 8, 8)
    second = render_tile(*FULL_VIEW, 8, 8, 20, 0, 0, 8, 8)
    assert not np.shares_memory(first, second)


@pytest.mark.parametrize(
    "args",
    [
        (0.5, -2.0, -1.0, 1.0, 10, 10, 10, 0, 0, 10, 10),  # x_min > x_max
        (-2.0, 0.5, 1.0, 1.0, 10, 10, 10, 0, 0, 10, 10),  # empty y range
        (-2.0, math.inf, -1.0, 1.0, 10, 10, 10, 0, 0, 10, 10),
        (-2.0, 0.5, math.nan, 1.0, 10, 10, 10, 0, 0, 10, 10),
        (-1e308, 1e308, -1.0, 1.0, 10, 10, 10, 0, 0, 10, 10),  # width overflows
        (-2.0, 0.5, -1.0, 1.0, 0, 10, 10, 0, 0, 1, 10),
        (-2.0, 0.5, -1.0, 1.0, 10, 10, 0, 0, 0, 10, 10),
        (-2.0, 0.5, -1.0, 1.0, 10, 10, 2**32, 0, 0, 10, 10),
        (-2.0, 0.5, -1.0, 1.0, 10, 10, 10, -1, 0, 10, 10),
        (-2.0, 0.5, -1.0, 1.0, 10, 10, 10, 0, 0, 0, 10),
        (-2.0, 0.5, -1.0, 1.0, 10, 10, 10, 1, 0, 10, 10),  # reaches past the right edge
        (-2.0, 0.5, -1.0, 1.0, 10, 10, 10, 0, 5, 10, 6),  # reaches past the bottom
    ],
)
def test_render_tile_rejects_bad_arguments(args: tuple[float | int, ...]) -> None:
    with pytest.raises(ValueError):
        render_tile(*args)  # type: ignore[arg-type]


def test_render_tile_rejects_non_integer_sizes() -> None:
    with pytest.raises(TypeError):
        render_tile(-2.0, 0.5, -1.0, 1.0, 10.0, 10, 10, 0, 0, 10, 10)  # type: ignore[arg-type]
