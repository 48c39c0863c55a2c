"""Benchmark the numba kernels against C references of the same algorithms, on one core.

    .venv/bin/python bench/bench_kernels.py [--reps N] [--cpu K] [--json]

Builds ``bench/c/*.c`` with ``gcc -O3 -march=native -ffp-contract=off`` into
``bench/.build/``, checks that every implementation returns identical results, then reports
the best of ``--reps`` timings of each. The process is pinned to one CPU so that every
figure is a single-core figure. Extra rows show the C code built with 512-bit vectors
preferred (gcc, like LLVM, defaults to 256-bit vectors on this CPU family) and a plain
scalar Mandelbrot loop, for context; ratios are numba over the reference C build.
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
from collections.abc import Callable
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

from hydracompute.kinds.mandelbrot_kernel import render_tile  # noqa: E402
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


def best_seconds(run: Callable[[], object], reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        began = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - began)
    return best


def _c_count_hits(library: ctypes.CDLL) -> Callable[[int, int, int], int]:
    function = library.pi_count_hits
    function.argtypes = [ctypes.c_uint64, ctypes.c_uint64, _I64]
    function.restype = _I64

    def run(seed: int, start: int, stop: int) -> int:
        return int(function(seed, start, stop - start))

    return run


def bench_pi(reps: int) -> list[Row]:
    implementations: dict[str, Callable[[int, int, int], int]] = {
        "numba": count_hits,
        "gcc": _c_count_hits(build("pi.c", wide=False)),
        "gcc, 512-bit vectors": _c_count_hits(build("pi.c", wide=True)),
    }
    hits = {name: run(PI_SEED, 0, PI_SAMPLES) for name, run in implementations.items()}
    if len(set(hits.values())) != 1:
        raise SystemExit(f"π implementations disagree: {hits}")
    seconds = {
        name: best_seconds(functools.partial(run, PI_SEED, 0, PI_SAMPLES), reps)
        for name, run in implementations.items()
    }
    return _rows("π", "gcc", {name: PI_SAMPLES / s for name, s in seconds.items()}, seconds)


def _c_render(function: Any) -> Callable[[], U32Array]:
    function.argtypes = _TILE_ARGS
    function.restype = None

    def run() -> U32Array:
        out = np.empty((SIDE, SIDE), np.uint32)
        function(*VIEW, SIDE, SIDE, MAX_ITER, 0, 0, SIDE, SIDE, out)
        return out

    return run


def bench_mandelbrot(reps: int) -> tuple[list[Row], int]:
    args = (*VIEW, SIDE, SIDE, MAX_ITER, 0, 0, SIDE, SIDE)

    def numba_tiles() -> U32Array:
        out = np.empty((SIDE, SIDE), np.uint32)
        for row0 in range(0, SIDE, TILE):
            for col0 in range(0, SIDE, TILE):
                tile = render_tile(*VIEW, SIDE, SIDE, MAX_ITER, col0, row0, TILE, TILE)
                out[row0 : row0 + TILE, col0 : col0 + TILE] = tile
        return out

    implementations: dict[str, Callable[[], U32Array]] = {
        "numba": lambda: render_tile(*args),
        f"numba, {TILE}×{TILE} tiles": numba_tiles,
    }
    variants = [
        ("gcc", "mandelbrot_lockstep", False),
        ("gcc, 512-bit vectors", "mandelbrot_lockstep", True),
        ("gcc, scalar loop", "mandelbrot_scalar", False),
    ]
    for label, symbol, wide in variants:
        implementations[label] = _c_render(getattr(build("mandelbrot.c", wide), symbol))

    reference = implementations["numba"]()
    for name, run in implementations.items():
        if not np.array_equal(run(), reference):
            raise SystemExit(f"Mandelbrot implementation {name!r} disagrees with numba")
    iterations = int(reference.sum(dtype=np.uint64))
    seconds = {name: best_seconds(run, reps) for name, run in implementations.items()}
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
    print(f"{info['machine']['cpu']}; pinned to CPU {info['cpu']}; best of {info['reps']}")
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
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    options = parser.parse_args()

    cpu = pin_to_one_cpu(options.cpu)
    render_tile(*VIEW, 16, 16, 10, 0, 0, 16, 16)

    pi_rows = bench_pi(options.reps)
    mandelbrot_rows, iterations = bench_mandelbrot(options.reps)
    rows = pi_rows + mandelbrot_rows
    info = {
        "command": shlex.join([_shown_path(sys.executable), *sys.argv]),
        "machine": machine(),
        "cpu": cpu,
        "reps": options.reps,
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
