"""The wasm kind's π kernel in the sandbox against the native π kernels, on one core.

    .venv/bin/python bench/bench_wasm.py [--reps N] [--samples S] [--cpu K] [--json]

In one run, pinned to one CPU, counts the same ``--samples`` of the same seed with:

- ``gcc -O3`` — ``examples/wasm/pi.c`` built natively with ``gcc -O3`` (the reference);
- ``C → wasm (sandbox)`` — the same file built by clang for ``wasm32-wasi`` (``-O3``) and
  run by the wasm kind's sandbox exactly as a worker runs a chunk: fuel metered, memory
  and output capped, a fresh instance;
- ``WAT → wasm (sandbox)`` — ``examples/wasm/pi.wat``, the hand-written module, likewise;
- ``gcc -O3 -march=native`` — ``bench/c/pi.c`` as bench_kernels.py builds it (this CPU's
  vector instructions, which WebAssembly cannot use);
- ``numba`` — the built-in ``pi`` kind's kernel;

checks that all count the same hits, and reports the best of ``--reps`` timings with each
rate as a share of the first's. Then a worker's start-up cost for a module: compiling it
from its bytes (a module the worker has not seen), loading it compiled from the worker's
disk cache (another process, or a later run), and finding it in memory, each followed by one
chunk of one block (2**20 samples).

With ``--e2e-samples S``, instead: a wasm job of S samples through a real coordinator with
``--workers`` worker processes (one core each, ``--accept-wasm``, at normal priority like
the plain processes: at the default idle priority a shared machine's other load would
starve them, and this measures coordination, not priority), from submission to the
answer in the client's hands, against the same module run by as many plain processes that
split the units evenly and talk to no one; alternating, ``--repeat`` rounds, best kept.

    .venv/bin/python bench/bench_wasm.py --e2e-samples 2e9 [--workers 2] [--repeat 2]
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import hashlib
import json
import math
import multiprocessing
import shlex
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import wasmtime

from bench_e2e import wait_for_workers
from bench_kernels import (
    BUILD_DIR,
    _c_count_hits,
    _shown_path,
    best_seconds,
    build,
    machine,
    pin_to_one_cpu,
)
from hydracompute.demo import start_coordinator, start_worker, stop
from hydracompute.kinds.pi import BLOCK_SAMPLES
from hydracompute.kinds.pi_kernel import count_hits
from hydracompute.kinds.wasm import sandbox

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "wasm" / "pi.wat"
C_EXAMPLE = EXAMPLE.with_suffix(".c")
#: As the tests build the C examples (tests/wasm_support.py).
CLANG_WASM = ["clang", "--target=wasm32-wasi", "-O3", "-nostartfiles", "-Wl,--no-entry"]
SEED = 20240601


def wasm_count_hits(module: wasmtime.Module, samples: int) -> int:
    """Hits among the first ``samples`` samples, as one sandboxed chunk."""
    units = -(-samples // BLOCK_SAMPLES)
    limits = sandbox.Limits(fuel=1 << 62, memory_bytes=1 << 20, output_bytes=16)
    args = {"seed": SEED, "samples": samples}
    out = sandbox.run_chunk(module, args, sandbox.InputFile(None), 0, units, limits, b"")
    return int.from_bytes(out[:8], "little", signed=True)


def c_example_builds() -> tuple[ctypes.CDLL, bytes]:
    """``examples/wasm/pi.c`` built natively with ``gcc -O3``, and for WebAssembly."""
    BUILD_DIR.mkdir(exist_ok=True)
    native, wasm = BUILD_DIR / "pi-example.so", BUILD_DIR / "pi-example.wasm"
    subprocess.run(
        ["gcc", "-O3", "-shared", "-fPIC", "-o", str(native), str(C_EXAMPLE)], check=True
    )
    subprocess.run([*CLANG_WASM, "-o", str(wasm), str(C_EXAMPLE)], check=True)
    return ctypes.CDLL(str(native)), wasm.read_bytes()


def kernels(samples: int, reps: int) -> list[dict[str, Any]]:
    wat_module = sandbox.compile_module(bytes(wasmtime.wat2wasm(EXAMPLE.read_text())))
    native, c_wasm = c_example_builds()
    same_c = _c_count_hits(native)
    c_module = sandbox.compile_module(c_wasm)
    gcc_native = _c_count_hits(build("pi.c", wide=False))
    runs = {
        "gcc -O3": functools.partial(same_c, SEED, 0, samples),
        "C → wasm (sandbox)": functools.partial(wasm_count_hits, c_module, samples),
        "WAT → wasm (sandbox)": functools.partial(wasm_count_hits, wat_module, samples),
        "gcc -O3 -march=native": functools.partial(gcc_native, SEED, 0, samples),
        "numba": functools.partial(count_hits, SEED, 0, samples),
    }
    hits = {name: run() for name, run in runs.items()}
    if len(set(hits.values())) != 1:
        raise SystemExit(f"the π kernels disagree: {hits}")
    seconds = {name: best_seconds(run, reps) for name, run in runs.items()}
    reference = samples / seconds["gcc -O3"]
    return [
        {
            "kernel": name,
            "samples_per_s": samples / s,
            "seconds": s,
            "of_gcc": samples / s / reference,
        }
        for name, s in seconds.items()
    ]


def first_chunk(reps: int) -> list[dict[str, Any]]:
    """Milliseconds to have a module ready (and then to run one chunk of one block)."""
    wasm = bytes(wasmtime.wat2wasm(EXAMPLE.read_text()))
    digest = hashlib.sha256(wasm).hexdigest()
    limits = sandbox.Limits(fuel=1 << 40, memory_bytes=1 << 20, output_bytes=16)
    args = {"seed": SEED, "samples": BLOCK_SAMPLES}
    load: dict[str, float] = {}
    chunk: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "module.wasm"
        source.write_bytes(wasm)
        for rep in range(reps):
            cache = Path(folder) / f"compiled-{rep}"
            modules = sandbox.CompiledModules(cache)
            for case in ("compiled from its bytes", "loaded from the disk cache", "in memory"):
                if case == "loaded from the disk cache":
                    modules = sandbox.CompiledModules(cache)  # another process, a later run
                began = time.perf_counter()
                module = modules.load(digest, source)
                loaded = time.perf_counter()
                sandbox.run_chunk(module, args, sandbox.InputFile(None), 0, 1, limits, b"")
                ran = time.perf_counter()
                load[case] = min(load.get(case, float("inf")), loaded - began)
                chunk[case] = min(chunk.get(case, float("inf")), ran - loaded)
    return [{"case": c, "load_ms": load[c] * 1000, "chunk_ms": chunk[c] * 1000} for c in load]


def _plain_part(args: tuple[int, int, int]) -> int:
    samples, start, stop = args
    module = sandbox.compile_module(bytes(wasmtime.wat2wasm(EXAMPLE.read_text())))
    limits = sandbox.Limits(fuel=1 << 62, memory_bytes=1 << 20, output_bytes=16)
    args_ = {"seed": SEED, "samples": samples}
    out = sandbox.run_chunk(module, args_, sandbox.InputFile(None), start, stop, limits, b"")
    return int.from_bytes(out[:8], "little", signed=True)


def plain_processes(workers: int, samples: int) -> tuple[float, int]:
    """Seconds for the job's units split evenly over ``workers`` processes; its hits."""
    units = -(-samples // BLOCK_SAMPLES)
    edges = [units * k // workers for k in range(workers + 1)]
    with multiprocessing.get_context("spawn").Pool(workers) as procs:
        procs.map(_plain_part, [(samples, 0, 0)] * workers)  # start-up, compiled once
        began = time.perf_counter()
        hits = procs.map(_plain_part, [(samples, edges[k], edges[k + 1]) for k in range(workers)])
        return time.perf_counter() - began, sum(hits)


def through_coordinator(workers: int, samples: int) -> tuple[float, int]:
    """Seconds from submission to answer of the wasm job through a real pool; its hits."""
    units = -(-samples // BLOCK_SAMPLES)
    wasm = bytes(wasmtime.wat2wasm(EXAMPLE.read_text()))
    with tempfile.TemporaryDirectory() as tmp:
        coordinator = start_coordinator(Path(tmp), 0)
        procs = [
            start_worker(coordinator, 1, f"bench-{k}", ["--accept-wasm", "--priority", "normal"])
            for k in range(workers)
        ]
        try:
            with coordinator.client() as client:
                wait_for_workers(client, workers)
                client.upload(wasm)  # uploaded before the clock starts, as a submitter would
                began = time.perf_counter()
                args = {"seed": SEED, "samples": samples}
                info = client.submit_wasm(wasm, units, merge="sum", args=args).wait()
                seconds = time.perf_counter() - began
                if info.state != "done":
                    raise RuntimeError(f"the wasm job ended {info.state}: {info.error}")
                return seconds, int(info.answer["values"][0])
        finally:
            for proc in procs:
                stop(proc)
            stop(coordinator.process)


def end_to_end(workers: int, samples: int, repeat: int) -> dict[str, Any]:
    plain = pooled = math.inf
    answers = set()
    for _ in range(repeat):  # alternating: the machine is shared
        seconds, hits = plain_processes(workers, samples)
        plain, answers = min(plain, seconds), answers | {hits}
        seconds, hits = through_coordinator(workers, samples)
        pooled, answers = min(pooled, seconds), answers | {hits}
    if answers != {count_hits(SEED, 0, samples)}:
        raise SystemExit(f"the answers disagree: {answers}")
    return {"plain_s": plain, "coordinated_s": pooled, "ratio": plain / pooled}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="timings per kernel")
    parser.add_argument("--samples", type=int, default=1 << 28)
    parser.add_argument("--cpu", type=int, help="CPU to pin to (default: the last allowed)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--e2e-samples", type=float, default=0, help="run the pool comparison")
    parser.add_argument("--workers", type=int, default=2, help="with --e2e-samples")
    parser.add_argument("--repeat", type=int, default=2, help="with --e2e-samples: rounds")
    options = parser.parse_args()
    if options.e2e_samples:
        samples = int(options.e2e_samples)
        row = end_to_end(options.workers, samples, options.repeat)
        if options.json:
            print(json.dumps({"workers": options.workers, "samples": samples, **row}))
        else:
            print(f"{shlex.join([_shown_path(sys.executable), *sys.argv])}")
            print(
                f"wasm π, {samples:.3g} samples, {options.workers} worker processes vs "
                f"{options.workers} plain processes, best of {options.repeat} alternating: "
                f"plain {row['plain_s']:.2f} s, through the pool {row['coordinated_s']:.2f} s, "
                f"throughput ratio {row['ratio']:.1%}"
            )
        return
    cpu = pin_to_one_cpu(options.cpu)
    rows = kernels(options.samples, options.reps)
    latency = first_chunk(options.reps)
    info = {
        "command": shlex.join([_shown_path(sys.executable), *sys.argv]),
        "machine": machine(),
        "cpu": cpu,
        "samples": options.samples,
        "wasmtime": version("wasmtime"),
    }
    if options.json:
        print(json.dumps({**info, "kernels": rows, "first_chunk": latency}))
        return
    print(f"{info['command']}\n{info['machine']}, cpu {cpu}, wasmtime {info['wasmtime']}")
    print(f"\nπ, {options.samples} samples, best of {options.reps}, one core")
    print(f"{'kernel':<24}{'samples/s':>14}{'seconds':>10}{'of gcc':>9}")
    for row in rows:
        print(
            f"{row['kernel']:<24}{row['samples_per_s']:>14.4g}{row['seconds']:>10.3f}"
            f"{row['of_gcc']:>8.0%}"
        )
    print(f"\nA module made ready, then one chunk of 2**20 samples, best of {options.reps}")
    print(f"{'module':<30}{'ready':>10}{'chunk':>10}")
    for row in latency:
        print(f"{row['case']:<30}{row['load_ms']:>7.2f} ms{row['chunk_ms']:>7.2f} ms")


if __name__ == "__main__":
    main()
