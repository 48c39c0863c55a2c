"""The sandbox of submitted WebAssembly: what a module can compute, and everything it cannot
do — run forever, take memory, flood its output, reach files, sockets, the environment, the
clock or real randomness, or be swapped for another module."""

from __future__ import annotations

import base64
import struct
from pathlib import Path
from typing import Any

import pytest

from hydracompute.errors import InvalidParams, InvalidResult
from hydracompute.kinds import ChunkOutput
from hydracompute.kinds.pi import BLOCK_SAMPLES
from hydracompute.kinds.pi_kernel import count_hits
from hydracompute.kinds.wasm import WasmKind, sandbox, wasi
from tests.wasm_support import (
    ALLOCATE_WITHOUT_BOUND,
    COUNT_PAGES_GRANTED,
    LARGE_MEMORY_AT_START,
    LOOP_FOREVER,
    LOOP_ON_HOST_WORK,
    OUTPUT_WITHOUT_BOUND,
    PROBE_THE_WORLD,
    UNKNOWN_IMPORT,
    example,
    sha256,
    wasm,
)

KIND = WasmKind()


def job(tmp_path: Path, module: bytes, units: int, inputs: bytes | None = None, **params: Any):
    """Canonical parameters and local files of a wasm job over ``module``."""
    files = {"module": tmp_path / sha256(module)}
    files["module"].write_bytes(module)
    raw: dict[str, Any] = {"module": sha256(module), "units": units, **params}
    if inputs is not None:
        files["input"] = tmp_path / sha256(inputs)
        files["input"].write_bytes(inputs)
        raw["input"] = sha256(inputs)
    return KIND.validate(raw), files


def run(tmp_path: Path, canonical: dict[str, Any], files: dict[str, Path], start: int, stop: int):
    output = KIND.compute_files(canonical, start, stop, files, tmp_path / "compiled")
    KIND.check(canonical, start, stop, output)
    return base64.b64decode(output["data"])


def test_the_pi_example_is_bit_identical_to_the_built_in_pi_kind(tmp_path: Path) -> None:
    samples, seed = 5 * BLOCK_SAMPLES + 12345, 2026
    canonical, files = job(
        tmp_path, example("pi"), units=6, args={"seed": seed, "samples": samples}
    )
    chunks = [(0, 1), (1, 4), (4, 6)]
    outputs = [
        ChunkOutput(a, b, KIND.compute_files(canonical, a, b, files, None)) for a, b in chunks
    ]
    answer = KIND.merge(canonical, outputs).summary
    assert answer["values"] == [count_hits(seed, 0, samples), samples]
    # Each chunk alone too: the chunking does not matter.
    first = struct.unpack("<qq", base64.b64decode(outputs[1].output["data"]))
    assert first == (count_hits(seed, BLOCK_SAMPLES, 4 * BLOCK_SAMPLES), 3 * BLOCK_SAMPLES)


def test_the_line_count_example_reads_its_input(tmp_path: Path) -> None:
    text = b"".join(b"line %d of the input\n" % i for i in range(20_000))  # 2 blocks+
    units = -(-len(text) // 65536) + 1  # one unit past the end counts nothing
    canonical, files = job(tmp_path, example("linecount"), units=units, inputs=text)
    outputs = [
        ChunkOutput(u, u + 1, KIND.compute_files(canonical, u, u + 1, files, None))
        for u in range(units)
    ]
    assert KIND.merge(canonical, outputs).summary["values"] == [len(text), 20_000, sum(text)]


def test_a_module_that_loops_forever_runs_out_of_fuel(tmp_path: Path) -> None:
    canonical, files = job(tmp_path, wasm(LOOP_FOREVER), units=10, fuel_per_unit=1000)
    with pytest.raises(
        sandbox.SandboxError, match="out of fuel: the chunk needed more than its 3000"
    ):
        run(tmp_path, canonical, files, 2, 5)


def test_work_a_module_makes_the_host_do_is_paid_in_fuel(tmp_path: Path) -> None:
    canonical, files = job(tmp_path, wasm(LOOP_ON_HOST_WORK), units=1, fuel_per_unit=10**7)
    with pytest.raises(sandbox.SandboxError, match="out of fuel: the chunk needed more than"):
        run(tmp_path, canonical, files, 0, 1)


def test_a_module_that_allocates_without_bound_stops_at_its_memory_cap(tmp_path: Path) -> None:
    canonical, files = job(tmp_path, wasm(ALLOCATE_WITHOUT_BOUND), units=1, memory_mib=2)
    with pytest.raises(
        sandbox.SandboxError,
        match="reached its memory limit of 2097152 bytes and then trapped: "
        "wasm `unreachable` instruction executed",
    ):
        run(tmp_path, canonical, files, 0, 1)
    # Growing fails exactly at the cap: 2 MiB is 32 pages of 64 KiB.
    counting, files = job(tmp_path, wasm(COUNT_PAGES_GRANTED), units=1, memory_mib=2)
    assert struct.unpack("<q", run(tmp_path, counting, files, 0, 1)) == (32,)


def test_a_module_declaring_more_memory_than_allowed_is_not_instantiated(tmp_path: Path) -> None:
    canonical, files = job(tmp_path, wasm(LARGE_MEMORY_AT_START), units=1, memory_mib=64)
    with pytest.raises(sandbox.SandboxError, match="more memory than its limit of 67108864"):
        run(tmp_path, canonical, files, 0, 1)
    allowed, files = job(tmp_path, wasm(LARGE_MEMORY_AT_START), units=1, memory_mib=256)
    assert run(tmp_path, allowed, files, 0, 1) == b""


def test_output_over_its_cap_stops_the_chunk(tmp_path: Path) -> None:
    canonical, files = job(
        tmp_path, wasm(OUTPUT_WITHOUT_BOUND), units=1, merge="concat", output_bytes=200_000
    )
    with pytest.raises(sandbox.OutputTooLarge, match="exceeds its limit of 200000 bytes"):
        run(tmp_path, canonical, files, 0, 1)


def test_files_sockets_environment_clock_and_randomness_are_not_the_machines(
    tmp_path: Path,
) -> None:
    canonical, files = job(tmp_path, wasm(PROBE_THE_WORLD), units=2, merge="sum", output_bytes=96)
    first = struct.unpack("<12q", run(tmp_path, canonical, files, 0, 1))
    assert first[0] == wasi.EBADF  # no preopened folder at descriptor 3 (or any)
    assert first[1] == wasi.ENOTCAPABLE  # path_open refused
    assert first[2] == wasi.ENOTSUP  # no sockets
    assert first[3:5] == (0, 0)  # an empty environment
    assert first[5:7] == (0, 0)  # the clock reads 0
    assert first[7] == 0 and first[8:10] != (0, 0)  # random bytes were given...
    assert first[10] == 0 and first[11] == wasi.EBADF  # stdout takes writes, fd 7 does not
    # ...the same ones on every run of the chunk (another worker), other ones elsewhere.
    again = struct.unpack("<12q", run(tmp_path, canonical, files, 0, 1))
    other_chunk = struct.unpack("<12q", run(tmp_path, canonical, files, 1, 2))
    assert again == first
    assert other_chunk[8:10] != first[8:10]


def test_a_module_importing_anything_else_is_refused() -> None:
    with pytest.raises(sandbox.SandboxError, match=r"imports env\.system: only hydra and WASI"):
        sandbox.compile_module(wasm(UNKNOWN_IMPORT))
    with pytest.raises(sandbox.SandboxError, match="must export hydra_run"):
        sandbox.compile_module(wasm('(module (memory (export "memory") 1))'))
    with pytest.raises(sandbox.SandboxError, match="not a valid WebAssembly module"):
        sandbox.compile_module(b"\0asm\x01\0\0\0garbage")


def test_a_module_whose_hash_does_not_match_is_never_compiled(tmp_path: Path) -> None:
    honest = example("pi")
    path = tmp_path / "module.wasm"
    path.write_bytes(honest[:-1] + bytes([honest[-1] ^ 1]))  # tampered after download
    cache = sandbox.CompiledModules(tmp_path / "compiled")
    with pytest.raises(sandbox.SandboxError, match="its SHA-256 is not the job's"):
        cache.load(sha256(honest), path)
    assert not (tmp_path / "compiled").exists()


def test_compiled_modules_are_cached_by_hash_and_engine(tmp_path: Path) -> None:
    module = example("pi")
    path = tmp_path / "module.wasm"
    path.write_bytes(module)
    first = sandbox.CompiledModules(tmp_path / "compiled")
    first.load(sha256(module), path)
    assert first.last_source == "compiled"
    first.load(sha256(module), path)
    assert first.last_source == "memory"
    [serialized] = (tmp_path / "compiled").iterdir()
    assert serialized.name == f"{sha256(module)}-{sandbox.engine_fingerprint()}.cwasm"
    path.unlink()  # another process of the worker loads it without the source
    other = sandbox.CompiledModules(tmp_path / "compiled")
    loaded = other.load(sha256(module), path)
    assert other.last_source == "disk"
    out = sandbox.run_chunk(
        loaded,
        {"seed": 1, "samples": 1000},
        sandbox.InputFile(None),
        0,
        1,
        sandbox.Limits(10**9, 1 << 20, 16),
        b"",
    )
    assert struct.unpack("<qq", out) == (count_hits(1, 0, 1000), 1000)


def test_parameters_are_validated_with_limits() -> None:
    with pytest.raises(InvalidParams) as refused:
        KIND.validate(
            {
                "module": "ABC",
                "units": 0,
                "merge": "python",
                "args": {"bad name": 1},
                "fuel_per_unit": 10**13,
                "surprise": 1,
            }
        )
    assert set(refused.value.errors) == {
        "module",
        "units",
        "merge",
        "args",
        "fuel_per_unit",
        "surprise",
    }
    with pytest.raises(InvalidParams, match="output_bytes"):
        KIND.validate({"module": "0" * 64, "units": 1, "output_bytes": 8192})  # a sum's cap
    assert KIND.validate({"module": "0" * 64, "units": 3})["input"] == ""


def test_outputs_a_merge_cannot_take_are_refused() -> None:
    canonical = KIND.validate({"module": "0" * 64, "units": 1, "output_bytes": 16})
    for bad in (
        {"data": "not base64!"},
        {"data": base64.b64encode(b"x" * 17).decode()},
        {"data": base64.b64encode(b"seven b").decode()},
        {"data": 5},
        {},
    ):
        with pytest.raises(InvalidResult):
            KIND.check(canonical, 0, 1, bad)
    floats = KIND.validate({"module": "0" * 64, "units": 1, "merge": "sum-f64"})
    nan = base64.b64encode(struct.pack("<d", float("nan"))).decode()
    with pytest.raises(InvalidResult, match="NaN"):
        KIND.check(floats, 0, 1, {"data": nan})


def test_merges_are_exact_and_independent_of_arrival_order() -> None:
    floats = KIND.validate({"module": "0" * 64, "units": 3, "merge": "sum-f64"})
    pieces = [struct.pack("<dd", 1e16, 1.0), struct.pack("<d", 1.0), struct.pack("<dd", -1e16, 3.0)]
    outputs = [
        ChunkOutput(i, i + 1, {"data": base64.b64encode(p).decode()}) for i, p in enumerate(pieces)
    ]
    assert KIND.merge(floats, outputs).summary["values"] == [1.0, 4.0]
    assert KIND.merge(floats, outputs[::-1]).summary["values"] == [1.0, 4.0]
    concat = KIND.validate({"module": "0" * 64, "units": 3, "merge": "concat"})
    answer = KIND.merge(concat, outputs)
    assert answer.summary["bytes"] == 40 and answer.summary["artefacts"] == ["output.bin"]
    rendered = KIND.render(concat, outputs, "output.bin")
    assert rendered is not None and rendered.data == b"".join(pieces)
