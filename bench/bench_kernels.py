"""Benchmark the numba kernels against C references of the same algorithms, on one core.

    .venv/bin/python bench/bench_kernels.py [--reps N] [--cpu K] [--clock wall|cpu] [--json]

Builds ``bench/c/*.c`` with ``gcc -O3 -march=native -ffp-contract=off`` into
``bench/.build/``, checks that every implementation returns identical results, then reports
the best of ``--reps`` timings of each, the implementations taking turns. The process is
pinned to one CPU so that every figure is a single-core figure; ``--clock cpu`` times with
the process's CPU time instead of the wall clock, for a machine shared with other work
(time that other processes take from the pinned CPU is then not counted; their effect on
caches and clock speed is).

Extra rows show the C code built with 512-bit vectors preferred (gcc and LLVM default to
256-bit vectors on some AVX-512 CPUs, such as the Intel Xeons; on the AMD EPYC machines
both builds use 512-bit vectors) and a plain scalar Mandelbrot loop, for context; ratios are
numba over the reference C build. The "tiles" row renders the image as its 64×64 tiles in
one ``render_tiles`` call, as a worker renders a chunk.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numba
import numpy as np
import numpy.typing as npt

BENCH_DIR = Path(__file__).resolve().parent
BUILD_DIR = BENCH_DIR / ".build"
C_FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-shared", "-fPIC"]
WIDE_FLAGS = ["-mprefer-vector-width=512"]

try:
    import hydracompute  # noqa: F401
except ModuleNotFoundError:  # run from a checkout that is not pip-installed
    sys.path.insert(0, str(BENCH_DIR.parent / "src"))

from hydracompute.kinds.mandelbrot_kernel import render_tile, render_tiles  # noqa: E402
from hydracompute.kinds.pi_kernel import count_hits  # noqa: E402

PI_SEED = 20240601
PI_SAMPLES = 1 << 28
VIEW = (-2.0, 0.5, -1.25, 1.25)
SIDE = 1024
MAX_ITER = 1000
TILE = 64

U32Array = npt.NDArray[np.uint32]
_I64 = ctypes.c_int64
_F64 = ctypes.c_double
_TILE_ARGS = [_F64] * 4 + [_I64] * 7 + [np.ctypeslib.ndpointer(np.uint32, flags="C_CONTIGUOUS")]


@dataclass
class Row:
    kernel: str
    implementation: str
    rate: float  # work units per second: samples (π) or iterations (Mandelbrot)
    seconds: float
    ratio: float | None  # numba rate / reference C rate, on numba rows


@functools.cache
def build(source: str, wide: bool) -> ctypes.CDLL:
    """Compile ``bench/c/<source>`` (with 512-bit vectors preferred if ``wide``) and load it."""
    BUILD_DIR.mkdir(exist_ok=True)
    target = BUILD_DIR / f"{Path(source).stem}{'-512' if wide else ''}.so"
    flags = [*C_FLAGS, *(WIDE_FLAGS if wide else [])]
    subprocess.run(["gcc", *flags, "-o", str(target), str(BENCH_DIR / "c" / source)], check=True)
    return ctypes.CDLL(str(target))


CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def best_seconds(
    run: Callable[[], object], reps: int, clock: Callable[[], float] = time.perf_counter
) -> float:
    best = float("inf")
    for _ in range(reps):
        began = clock()
        run()
        best = min(best, clock() - began)
    return best


def best_seconds_each(
    runs: Mapping[str, Callable[[], object]], reps: int, clock: Callable[[], float]
) -> dict[str, float]:
    """:func:`best_seconds` of each of ``runs``, taking turns (one timing of each, ``reps``
    times over) so that a change of load or clock speed during the benchmark touches every
    implementation alike instead of the ones that happened to run then."""
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(reps):
        for name, run in runs.items():
            best[name] = min(best[name], best_seconds(run, 1, clock))
    return best


def _c_count_hits(library: ctypes.CDLL) -> Callable[[int, int, int], int]:
    function = library.pi_count_hits
    function.argtypes = [ctypes.c_uint64, ctypes.c_uint64, _I64]
    function.restype = _I64

    def run(seed: int, start: int, stop: int) -> int:
        return int(function(seed, start, stop - start))

    return run


def bench_pi(reps: int, clock: Callable[[], float]) -> list[Row]:
    implementations: dict[str, Callable[[int, int, int], int]] = {
        "numba": count_hits,
        "gcc": _c_count_hits(build("pi.c", wide=False)),
        "gcc, 512-bit vectors": _c_count_hits(build("pi.c", wide=True)),
    }
    hits = {name: run(PI_SEED, 0, PI_SAMPLES) for name, run in implementations.items()}
    if len(set(hits.values())) != 1:
        raise SystemExit(f"π implementations disagree: {hits}")
    runs = {
        name: functools.partial(run, PI_SEED, 0, PI_SAMPLES)
        for name, run in implementations.items()
    }
    seconds = best_seconds_each(runs, reps, clock)
    return _rows("π", "gcc", {name: PI_SAMPLES / s for name, s in seconds.items()}, seconds)


def _c_render(function: Any) -> Callable[[], U32Array]:
    function.argtypes = _TILE_ARGS
    function.restype = None

    def run() -> U32Array:
        out = np.empty((SIDE, SIDE), np.uint32)
        function(*VIEW, SIDE, SIDE, MAX_ITER, 0, 0, SIDE, SIDE, out)
        return out

    return run


def _tile_corners() -> list[npt.NDArray[np.int64]]:
    """The image's TILE×TILE tiles, row by row, as render_tiles' four arrays."""
    starts = np.arange(0, SIDE, TILE, dtype=np.int64)
    row0s, col0s = (a.ravel() for a in np.meshgrid(starts, starts, indexing="ij"))
    sides = np.full(col0s.size, TILE, dtype=np.int64)
    return [col0s, row0s, sides, sides.copy()]


def _tiles_as_image(flat: U32Array) -> U32Array:
    per_side = SIDE // TILE
    tiles = flat.reshape(per_side, per_side, TILE, TILE)
    return np.ascontiguousarray(tiles.transpose(0, 2, 1, 3).reshape(SIDE, SIDE))


def bench_mandelbrot(reps: int, clock: Callable[[], float]) -> tuple[list[Row], int]:
    args = (*VIEW, SIDE, SIDE, MAX_ITER, 0, 0, SIDE, SIDE)
    corners = _tile_corners()

    implementations: dict[str, Callable[[], U32Array]] = {
        "numba": lambda: render_tile(*args),
        # What a worker runs: a chunk's tiles in one call, their counts one after the other.
        f"numba, {TILE}×{TILE} tiles": lambda: render_tiles(*VIEW, SIDE, SIDE, MAX_ITER, *corners),
    }
    as_image = {f"numba, {TILE}×{TILE} tiles": _tiles_as_image}
    variants = [
        ("gcc", "mandelbrot_lockstep", False),
        ("gcc, 512-bit vectors", "mandelbrot_lockstep", True),
        ("gcc, scalar loop", "mandelbrot_scalar", False),
    ]
    for label, symbol, wide in variants:
        implementations[label] = _c_render(getattr(build("mandelbrot.c", wide), symbol))

    reference = implementations["numba"]()
    for name, run in implementations.items():
        if not np.array_equal(as_image.get(name, np.asarray)(run()), reference):
            raise SystemExit(f"Mandelbrot implementation {name!r} disagrees with numba")
    iterations = int(reference.sum(dtype=np.uint64))
    seconds = best_seconds_each(implementations, reps, clock)
    rates = {name: iterations / s for name, s in seconds.items()}
    return _rows("Mandelbrot", "gcc", rates, seconds), iterations


def _rows(
    kernel: str, reference: str, rates: dict[str, float], seconds: dict[str, float]
) -> list[Row]:
    return [
        Row(
            kernel,
            name,
            rate,
            seconds[name],
            rate / rates[reference] if name.startswith("numba") else None,
        )
        for name, rate in rates.items()
    ]


def machine() -> dict[str, Any]:
    model = platform.processor()
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    gcc = subprocess.run(["gcc", "--version"], capture_output=True, text=True, check=True)
    return {
        "cpu": model,
        "logical_cpus": os.cpu_count(),
        "gcc": gcc.stdout.splitlines()[0],
        "numba": numba.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def print_table(rows: list[Row], iterations: int, info: dict[str, Any]) -> None:
    print(f"$ {info['command']}")
    print(
        f"{info['machine']['cpu']}; pinned to CPU {info['cpu']}; best of {info['reps']} "
        f"({info['clock']} clock)"
    )
    print(f"π: {PI_SAMPLES} samples, seed {PI_SEED}")
    print(
        f"Mandelbrot: {SIDE}×{SIDE}, x∈[{VIEW[0]}, {VIEW[1]}], y∈[{VIEW[2]}, {VIEW[3]}], "
        f"max_iter {MAX_ITER}, {iterations} iterations"
    )
    print()
    header = f"{'kernel':<11} {'implementation':<24} {'rate':>16} {'time':>9} {'numba/C':>8}"
    print(header)
    print("-" * len(header))
    for row in rows:
        unit = "samples/s" if row.kernel == "π" else "iter/s"
        ratio = f"{row.ratio:.2f}" if row.ratio is not None else ""
        rate = f"{row.rate / 1e9:.3f} G{unit}"
        print(
            f"{row.kernel:<11} {row.implementation:<24} {rate:>16} "
            f"{row.seconds * 1e3:>7.1f}ms {ratio:>8}"
        )


def _shown_path(path: str) -> str:
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


def pin_to_one_cpu(cpu: int | None) -> int:
    """Pin this process to ``cpu`` (default: the last allowed) and load the π kernel (numba
    compiles it, or loads its cache) before any timing; the CPU pinned to."""
    chosen = cpu if cpu is not None else max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {chosen})
    count_hits(0, 0, 1000)
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="timings per implementation")
    parser.add_argument("--cpu", type=int, help="CPU to pin to (default: the last allowed)")
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="time with the wall clock (default) or the process's CPU time",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    options = parser.parse_args()

    cpu = pin_to_one_cpu(options.cpu)
    render_tile(*VIEW, 16, 16, 10, 0, 0, 16, 16)

    clock = CLOCKS[options.clock]
    pi_rows = bench_pi(options.reps, clock)
    mandelbrot_rows, iterations = bench_mandelbrot(options.reps, clock)
    rows = pi_rows + mandelbrot_rows
    info = {
        "command": shlex.join([_shown_path(sys.executable), *sys.argv]),
        "machine": machine(),
        "cpu": cpu,
        "reps": options.reps,
        "clock": options.clock,
    }
    if options.json:
        workload = {
            "pi": {"samples": PI_SAMPLES, "seed": PI_SEED},
            "mandelbrot": {
                "view": VIEW,
                "width": SIDE,
                "height": SIDE,
                "max_iter": MAX_ITER,
                "iterations": iterations,
            },
        }
        print(json.dumps({**info, "workload": workload, "rows": [asdict(r) for r in rows]}))
    else:
        print_table(rows, iterations, info)


if __name__ == "__main__":
    main()
