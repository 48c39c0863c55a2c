"""``wasm``: jobs whose kernel is a WebAssembly module sent by the submitter.

The module and the job's input travel as content-addressed blobs (SHA-256); workers that
opted in run each chunk in the sandbox of :mod:`.sandbox` and send back its output bytes;
the coordinator merges them with a built-in strategy (:mod:`.merge`) and never runs the
module. The ABI a module follows, its limits and the security model are in docs/wasm.md.

Parameters (canonical form):

- ``module``: the module's SHA-256 (64 lower-case hex digits), uploaded beforehand;
- ``input``: the input's SHA-256, or ``""`` for none;
- ``units``: how many work units the job has; chunks are ranges ``[start, stop)`` of them;
- ``merge``: ``sum``, ``sum-f64`` or ``concat``;
- ``args``: the module's own parameters, names to integers, numbers or strings;
- ``fuel_per_unit``: the fuel one unit may burn (about one per instruction);
- ``memory_mib``: the most linear memory an instance may have;
- ``output_bytes``: the most bytes one chunk may output.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from hydracompute.errors import InvalidParams
from hydracompute.kinds.base import (
    JSON,
    Answer,
    Artefact,
    ArtefactStream,
    ChunkOutput,
    JobKind,
    ParamField,
)
from hydracompute.kinds.params import ParamReader
from hydracompute.kinds.wasm import merge

if TYPE_CHECKING:  # the sandbox (and wasmtime) load only where chunks run or are checked
    from hydracompute.kinds.wasm.sandbox import CompiledModules

SHA256 = re.compile(r"^[0-9a-f]{64}$")
ARG_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,31}$")
MAX_UNITS = 10**12
MAX_ARGS = 32
MAX_ARG_CHARS = 256
MAX_FUEL_PER_UNIT = 10**12
DEFAULT_FUEL_PER_UNIT = 10**9
#: A chunk's whole fuel budget is capped here whatever its size.
MAX_CHUNK_FUEL = 1 << 62
MAX_MEMORY_MIB = 4096
DEFAULT_MEMORY_MIB = 64
MAX_OUTPUT_BYTES = 1 << 20
#: The largest module (inputs may be larger, up to the pool's blob limit).
MAX_MODULE_BYTES = 64 << 20
DEFAULT_OUTPUT_BYTES = 4096
_I64 = (-(1 << 63), (1 << 63) - 1)


class WasmKind(JobKind):
    """Run a submitted WebAssembly module over ``units`` work units."""

    name = "wasm"
    unit_name = "unit"
    probe_units = 1
    max_chunk_units = 1 << 20
    runs_submitted_code = True
    checked_blobs = ("module",)

    def validate(self, params: Mapping[str, Any]) -> JSON:
        reader = ParamReader(params)
        module = self._digest(reader, "module", required=True)
        input_digest = self._digest(reader, "input", required=False)
        units = reader.int("units", 1, MAX_UNITS)
        strategy = reader.choice("merge", merge.STRATEGIES, default="sum")
        fuel = reader.int("fuel_per_unit", 1, MAX_FUEL_PER_UNIT, default=DEFAULT_FUEL_PER_UNIT)
        memory = reader.int("memory_mib", 1, MAX_MEMORY_MIB, default=DEFAULT_MEMORY_MIB)
        limit = MAX_OUTPUT_BYTES if strategy == "concat" else merge.MAX_SUMMED_BYTES
        output = reader.int("output_bytes", 1, limit, default=min(DEFAULT_OUTPUT_BYTES, limit))
        args = self._args(reader)
        reader.finish()
        return {
            "module": module,
            "input": input_digest,
            "units": units,
            "merge": strategy,
            "args": args,
            "fuel_per_unit": fuel,
            "memory_mib": memory,
            "output_bytes": output,
        }

    @staticmethod
    def _digest(reader: ParamReader, name: str, required: bool) -> str:
        value = reader.raw(name) if required else reader.raw(name, "")
        if value is None:
            return ""
        if not isinstance(value, str) or not (
            SHA256.match(value) or (value == "" and not required)
        ):
            reader.fail(name, "must be a SHA-256 in 64 lower-case hex digits")
            return ""
        return value

    @staticmethod
    def _args(reader: ParamReader) -> dict[str, int | float | str]:
        raw = reader.raw("args", {})
        if not isinstance(raw, dict) or len(raw) > MAX_ARGS:
            reader.fail("args", f"must be an object of at most {MAX_ARGS} parameters")
            return {}
        args: dict[str, int | float | str] = {}
        for key, value in sorted(raw.items()):
            if not isinstance(key, str) or not ARG_NAME.match(key):
                reader.fail("args", f"parameter names match {ARG_NAME.pattern}: {key!r}")
            elif (
                (type(value) is int and _I64[0] <= value <= _I64[1])
                or (type(value) is float and math.isfinite(value))
                or (isinstance(value, str) and len(value) <= MAX_ARG_CHARS)
            ):
                args[key] = value
            else:
                reader.fail(
                    "args",
                    f"{key}: a value is a 64-bit integer, a finite number or a string of at "
                    f"most {MAX_ARG_CHARS} characters",
                )
        return args

    def total_units(self, params: JSON) -> int:
        return int(params["units"])

    def blobs(self, params: JSON) -> dict[str, str]:
        files = {"module": str(params["module"])}
        if params["input"]:
            files["input"] = str(params["input"])
        return files

    def check_blob(self, params: JSON, role: str, data: bytes) -> None:
        # Compiling reads the module and runs none of it (docs/wasm.md).
        from hydracompute.kinds.wasm import sandbox

        if len(data) > MAX_MODULE_BYTES:
            raise InvalidParams({role: f"a module is limited to {MAX_MODULE_BYTES} bytes"})
        try:
            sandbox.compile_module(data)
        except sandbox.SandboxError as exc:
            raise InvalidParams({role: str(exc)}) from None

    def compute(self, params: JSON, start: int, stop: int) -> JSON:
        raise ValueError("a wasm chunk runs with its module file (compute_files)")

    def compute_files(
        self,
        params: JSON,
        start: int,
        stop: int,
        files: Mapping[str, Path],
        cache_dir: Path | None,
    ) -> JSON:
        from hydracompute.kinds.wasm import sandbox

        module = compiled_modules(cache_dir).load(str(params["module"]), files["module"])
        fuel = min(int(params["fuel_per_unit"]) * (stop - start), MAX_CHUNK_FUEL)
        limits = sandbox.Limits(
            fuel=fuel,
            memory_bytes=int(params["memory_mib"]) << 20,
            output_bytes=int(params["output_bytes"]),
        )
        input_file = sandbox.InputFile(files.get("input"))
        try:
            data = sandbox.run_chunk(
                module,
                params["args"],
                input_file,
                start,
                stop,
                limits,
                random_key(params, start, stop),
            )
        finally:
            input_file.close()
        return merge.encode(data)

    def check(self, params: JSON, start: int, stop: int, output: JSON) -> None:
        data = merge.decode(output, int(params["output_bytes"]))
        merge.check(str(params["merge"]), data)

    def merge(self, params: JSON, outputs: Iterable[ChunkOutput]) -> Answer:
        strategy = str(params["merge"])
        limit = int(params["output_bytes"])
        pieces = (merge.decode(chunk.output, limit) for chunk in outputs)
        if strategy == "concat":
            summary = merge.concat_summary(pieces)
            return Answer(summary={"merge": strategy, **summary, "artefacts": [merge.ARTEFACT]})
        values = merge.merge_sum(strategy, pieces)
        return Answer(summary={"merge": strategy, "values": values})

    def render_stream(
        self, params: JSON, outputs: Iterable[ChunkOutput], name: str, scratch: BinaryIO
    ) -> ArtefactStream | None:
        if name != merge.ARTEFACT or params["merge"] != "concat":
            return None
        limit = int(params["output_bytes"])
        pieces = (merge.decode(chunk.output, limit) for chunk in outputs)
        return ArtefactStream("application/octet-stream", merge.concat_pieces(pieces))

    def render(self, params: JSON, outputs: Iterable[ChunkOutput], name: str) -> Artefact | None:
        if name != merge.ARTEFACT or params["merge"] != "concat":
            return None
        limit = int(params["output_bytes"])
        data = b"".join(merge.decode(chunk.output, limit) for chunk in outputs)
        return Artefact("application/octet-stream", data)

    def fold_live(self, params: JSON, live: JSON, output: JSON) -> JSON:
        data = merge.decode(output, int(params["output_bytes"]))
        folded: JSON = {"chunks": int(live.get("chunks", 0)) + 1}
        folded["bytes"] = int(live.get("bytes", 0)) + len(data)
        if params["merge"] == "sum":
            folded["values"] = merge.add_ints(list(live.get("values", [])), data)
        return folded

    def param_fields(self) -> list[ParamField]:
        return [
            ParamField(
                "module",
                "blob",
                "Module (.wasm)",
                required=True,
                help="A WASI module following the ABI of docs/wasm.md.",
            ),
            ParamField("input", "blob", "Input", help="Optional file the module may read."),
            ParamField(
                "units",
                "integer",
                "Units",
                required=True,
                default=1,
                minimum=1,
                maximum=MAX_UNITS,
                help="Work units of the job.",
            ),
            ParamField("merge", "choice", "Merge", default="sum", choices=merge.STRATEGIES),
            ParamField(
                "args",
                "json",
                "Module parameters",
                default={},
                help='An object, e.g. {"seed": 7}.',
            ),
            ParamField(
                "fuel_per_unit",
                "integer",
                "Fuel per unit",
                default=DEFAULT_FUEL_PER_UNIT,
                minimum=1,
                maximum=MAX_FUEL_PER_UNIT,
            ),
            ParamField(
                "memory_mib",
                "integer",
                "Memory (MiB)",
                default=DEFAULT_MEMORY_MIB,
                minimum=1,
                maximum=MAX_MEMORY_MIB,
            ),
            ParamField(
                "output_bytes",
                "integer",
                "Output bytes per chunk",
                default=DEFAULT_OUTPUT_BYTES,
                minimum=1,
                maximum=MAX_OUTPUT_BYTES,
            ),
        ]


def random_key(params: JSON, start: int, stop: int) -> bytes:
    """What seeds ``random_get`` for a chunk: the module, its arguments and the chunk's
    range, so that every worker computing the chunk draws the same bytes."""
    text = json.dumps([params["module"], params["args"], start, stop], sort_keys=True)
    return hashlib.sha256(text.encode()).digest()


_compiled: dict[Path | None, CompiledModules] = {}


def compiled_modules(cache_dir: Path | None) -> CompiledModules:
    """This process's cache of compiled modules, serialized under ``cache_dir``."""
    from hydracompute.kinds.wasm import sandbox

    if not _compiled:
        # Compiled modules hold the engine's code: let them go before the interpreter
        # tears down the library that frees them.
        atexit.register(_compiled.clear)
    if cache_dir not in _compiled:
        _compiled[cache_dir] = sandbox.CompiledModules(cache_dir)
    return _compiled[cache_dir]


__all__ = ["WasmKind"]
