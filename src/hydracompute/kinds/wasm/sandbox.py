"""Runs one chunk of a submitted WebAssembly module, in a sandbox that bounds everything.

A chunk runs in a fresh instance (nothing carries over from one chunk to the next) with:

- **no capabilities**: the module may import only the ABI's ``hydra`` functions and WASI
  preview 1, which :mod:`.wasi` implements with no files, sockets, environment or clock;
- **bounded CPU**: fuel (one unit per WebAssembly instruction, roughly), so that a module
  that runs too long stops at the same instruction on every machine, deterministically;
- **bounded memory**: the store's limits (``memory.grow`` fails past them; a module that
  declares more at start cannot be instantiated);
- **bounded output**: ``hydra.output`` traps once the chunk's output would exceed its cap;
- **deterministic floating point**: NaNs are canonicalised, relaxed SIMD and threads are
  off, so two honest workers compute identical bytes.

Compiled modules are cached (see :class:`CompiledModules`). The ABI is in docs/wasm.md.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import platform
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import wasmtime

from hydracompute.kinds.wasm import wasi

#: The import module of the ABI's host functions.
HYDRA = "hydra"
#: Fuel for instantiation and ``_initialize`` (a C runtime's start-up), on top of a chunk's.
START_FUEL = 50_000_000
_PAGE = 65536
#: Compiled modules kept in memory per process.
MODULES_IN_MEMORY = 8
_I64 = (-(1 << 63), (1 << 63) - 1)

#: The ABI's host functions: name -> (parameter types, result types).
HOST_FUNCTIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "param_i64": (("i32", "i32", "i64"), ("i64",)),
    "args_size": ((), ("i32",)),
    "args_read": (("i32",), ("i32",)),
    "input_size": ((), ("i64",)),
    "input_read": (("i32", "i64", "i32"), ("i32",)),
    "output": (("i32", "i32"), ()),
}
#: The export every module has: ``hydra_run(start, stop) -> status`` (0: success).
RUN_EXPORT = "hydra_run"
RUN_TYPE = (("i64", "i64"), ("i32",))


class SandboxError(Exception):
    """A module was refused, or a chunk was stopped; the message says why."""


class OutputTooLarge(SandboxError):
    pass


@dataclass(frozen=True)
class Limits:
    """What one chunk may use."""

    fuel: int
    memory_bytes: int
    output_bytes: int


def _config() -> wasmtime.Config:
    config = wasmtime.Config()
    config.consume_fuel = True
    config.cranelift_nan_canonicalization = True
    config.wasm_relaxed_simd = False
    config.wasm_threads = False
    config.parallel_compilation = False  # one chunk per core already
    return config


#: Settings a compiled module depends on: part of its cache key with wasmtime's version.
ENGINE_SETTINGS = "fuel,nan-canonical,no-relaxed-simd,no-threads"
_engine: wasmtime.Engine | None = None


def engine() -> wasmtime.Engine:
    """This process's engine (one per process: compiled modules belong to it)."""
    global _engine
    if _engine is None:
        _engine = wasmtime.Engine(_config())
    return _engine


def engine_fingerprint() -> str:
    """What a serialized module must have been compiled with to be loaded here."""
    from importlib.metadata import version

    text = f"wasmtime {version('wasmtime')} {platform.machine()} {ENGINE_SETTINGS}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _signature(ty: wasmtime.FuncType) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return tuple(str(p) for p in ty.params), tuple(str(r) for r in ty.results)


def check_module(module: wasmtime.Module) -> None:
    """Refuse a module that does not follow the ABI (docs/wasm.md).

    Raises:
        SandboxError: it imports something other than the ``hydra`` functions and WASI
            preview 1 functions, or a ``hydra`` function with the wrong type, or does not
            export ``memory`` and ``hydra_run(i64, i64) -> i32``.
    """
    for imported in module.imports:
        where = f"{imported.module}.{imported.name}"
        if not isinstance(imported.type, wasmtime.FuncType):
            raise SandboxError(f"the module imports {where}, which is not a function")
        if imported.module == HYDRA:
            wanted = HOST_FUNCTIONS.get(imported.name or "")
            if wanted is None:
                raise SandboxError(f"the module imports {where}, which the ABI does not have")
            if _signature(imported.type) != wanted:
                raise SandboxError(f"the module imports {where} with the wrong type")
        elif imported.module != wasi.MODULE:
            raise SandboxError(f"the module imports {where}: only hydra and WASI are provided")
    exports = {e.name: e.type for e in module.exports}
    if not isinstance(exports.get("memory"), wasmtime.MemoryType):
        raise SandboxError("the module must export its memory as 'memory'")
    run = exports.get(RUN_EXPORT)
    if not isinstance(run, wasmtime.FuncType) or _signature(run) != RUN_TYPE:
        raise SandboxError(f"the module must export {RUN_EXPORT}(i64, i64) -> i32")


def compile_module(wasm: bytes) -> wasmtime.Module:
    """Compile and check a module's bytes (compiling runs none of its code).

    Raises:
        SandboxError: not a valid WebAssembly module, or not following the ABI.
    """
    compiler = engine()
    try:
        module = wasmtime.Module(compiler, wasm)
    except wasmtime.WasmtimeError as exc:
        raise SandboxError(f"not a valid WebAssembly module: {_first_line(exc)}") from None
    check_module(module)
    return module


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while piece := file.read(1 << 20):
            digest.update(piece)
    return digest.hexdigest()


class CompiledModules:
    """Modules compiled once per worker: kept in memory by this process, and serialized in
    ``folder`` (if given) under their SHA-256 and the engine's fingerprint, so that other
    processes and later runs load them without compiling.

    A module is compiled only from bytes whose SHA-256 is the one asked for; a serialized
    module is native code, so ``folder`` must be private to the worker (it is under the
    worker's own data folder).
    """

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder
        self._loaded: OrderedDict[str, wasmtime.Module] = OrderedDict()
        #: How the last :meth:`load` was served: "memory", "disk" or "compiled".
        self.last_source = ""

    def load(self, digest: str, wasm_path: Path) -> wasmtime.Module:
        """The compiled module whose bytes have SHA-256 ``digest``, read from ``wasm_path``
        if it must be compiled.

        Raises:
            SandboxError: the file's hash is not ``digest``, or the module is refused.
        """
        module = self._loaded.get(digest)
        if module is not None:
            self._loaded.move_to_end(digest)
            self.last_source = "memory"
            return module
        cached = self.folder / f"{digest}-{engine_fingerprint()}.cwasm" if self.folder else None
        if cached is not None and cached.exists():
            try:
                module = wasmtime.Module.deserialize_file(engine(), str(cached))
                self.last_source = "disk"
            except wasmtime.WasmtimeError:  # another wasmtime wrote it: compile again
                module = None
        if module is None:
            wasm = wasm_path.read_bytes()
            if hashlib.sha256(wasm).hexdigest() != digest:
                raise SandboxError(
                    f"refusing to run the module: its SHA-256 is not the job's {digest}"
                )
            module = compile_module(wasm)
            self.last_source = "compiled"
            if cached is not None:
                _write_atomically(cached, bytes(module.serialize()))
        self._loaded[digest] = module
        while len(self._loaded) > MODULES_IN_MEMORY:
            self._loaded.popitem(last=False)
        return module


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


class InputFile:
    """A job's input, read-only, mapped from its file (none: an empty input)."""

    def __init__(self, path: Path | None) -> None:
        self._file = path.open("rb") if path is not None else None
        size = os.fstat(self._file.fileno()).st_size if self._file else 0
        self.size = size
        self._map = (
            mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
            if self._file and size
            else None
        )

    def read(self, offset: int, length: int) -> bytes:
        if self._map is None or offset >= self.size or offset < 0:
            return b""
        return self._map[offset : offset + length]

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
        if self._file is not None:
            self._file.close()


class _Host:
    """The state behind one instance's ``hydra`` imports."""

    def __init__(self, args: Mapping[str, Any], input_file: InputFile, output_cap: int) -> None:
        self.args = args
        self.args_json = json.dumps(args, sort_keys=True, separators=(",", ":")).encode()
        self.input = input_file
        self.output_cap = output_cap
        self.output = bytearray()

    def functions(self) -> dict[str, Callable[..., Any]]:
        return {
            "param_i64": self.param_i64,
            "args_size": lambda caller: len(self.args_json),
            "args_read": self.args_read,
            "input_size": lambda caller: self.input.size,
            "input_read": self.input_read,
            "output": self.write_output,
        }

    def param_i64(self, caller: wasmtime.Caller, ptr: int, length: int, default: int) -> int:
        name = wasi.GuestMemory(caller).read(ptr, length).decode("utf-8", "replace")
        value = self.args.get(name)
        return value if type(value) is int and _I64[0] <= value <= _I64[1] else default

    def args_read(self, caller: wasmtime.Caller, ptr: int) -> int:
        wasi.GuestMemory(caller).write(ptr, self.args_json)
        return len(self.args_json)

    def input_read(self, caller: wasmtime.Caller, ptr: int, offset: int, length: int) -> int:
        memory = wasi.GuestMemory(caller)
        length &= 0xFFFFFFFF
        memory.span(ptr, length)
        data = self.input.read(offset, length)
        memory.write(ptr, data)
        return len(data)

    def write_output(self, caller: wasmtime.Caller, ptr: int, length: int) -> None:
        data = wasi.GuestMemory(caller).read(ptr, length & 0xFFFFFFFF)
        if len(self.output) + len(data) > self.output_cap:
            raise OutputTooLarge(f"the chunk's output exceeds its limit of {self.output_cap} bytes")
        self.output += data


def run_chunk(
    module: wasmtime.Module,
    args: Mapping[str, Any],
    input_file: InputFile,
    start: int,
    stop: int,
    limits: Limits,
    random_key: bytes,
) -> bytes:
    """Run ``hydra_run(start, stop)`` in a fresh instance; its output.

    Raises:
        SandboxError: the chunk was stopped (fuel, memory, output, a trap, an exit, an
            error status); the message says which, in the same words on every machine.
    """
    store = wasmtime.Store(engine())
    store.set_fuel(limits.fuel + START_FUEL)
    store.set_limits(
        memory_size=limits.memory_bytes, table_elements=1 << 20, instances=1, tables=4, memories=1
    )
    host = _Host(args, input_file, limits.output_bytes)
    state = wasi.Wasi(random_key)
    memory: wasmtime.Memory | None = None
    linker = wasmtime.Linker(engine())
    hydra_functions, wasi_functions = host.functions(), state.functions()
    for imported in module.imports:
        assert isinstance(imported.type, wasmtime.FuncType)  # check_module saw to it
        name = imported.name or ""
        if imported.module == HYDRA:
            function = hydra_functions[name]
        else:
            function = wasi_functions.get(name) or _refuse(name, imported.type)
        linker.define_func(
            imported.module, name, imported.type, _metered(function), access_caller=True
        )
    try:
        instance = linker.instantiate(store, module)
        exports = instance.exports(store)
        exported = exports.get("memory")
        memory = exported if isinstance(exported, wasmtime.Memory) else None
        initialize = exports.get("_initialize")
        if isinstance(initialize, wasmtime.Func):
            initialize(store)
        run = exports[RUN_EXPORT]
        assert isinstance(run, wasmtime.Func)
        status = run(store, start, stop)
    except wasi.HostOutOfFuel:
        raise SandboxError(_out_of_fuel(limits)) from None
    except wasmtime.Trap as trap:
        if trap.trap_code is wasmtime.TrapCode.OUT_OF_FUEL:
            raise SandboxError(_out_of_fuel(limits)) from None
        reason = _cause(trap)
        if memory is not None and memory.data_len(store) + _PAGE > limits.memory_bytes:
            # memory.grow failed at the cap, and the module gave up: say why.
            raise SandboxError(
                f"the module reached its memory limit of {limits.memory_bytes} bytes "
                f"and then trapped: {reason}"
            ) from None
        raise SandboxError(f"the module trapped: {reason}{_tail(state)}") from None
    except wasi.ModuleExit as exit_:
        raise SandboxError(f"{exit_}{_tail(state)}") from None
    except wasmtime.WasmtimeError as exc:
        message = _first_line(exc)
        if "memory" in message and ("limit" in message or "minimum" in message):
            raise SandboxError(
                f"the module needs more memory than its limit of {limits.memory_bytes} "
                f"bytes: {message}"
            ) from None
        raise SandboxError(f"the module failed: {message}{_tail(state)}") from None
    if status != 0:
        raise SandboxError(f"{RUN_EXPORT} returned error status {status}{_tail(state)}")
    return bytes(host.output)


def _out_of_fuel(limits: Limits) -> str:
    return f"out of fuel: the chunk needed more than its {limits.fuel} (fuel_per_unit × units)"


def _metered(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function``, charging the calling store the fuel of one host call first."""

    def metered(caller: wasmtime.Caller, *args: Any) -> Any:
        wasi.charge(caller, wasi.HOST_CALL_FUEL)
        return function(caller, *args)

    return metered


def _refuse(name: str, ty: wasmtime.FuncType) -> Callable[..., Any]:
    """A WASI function the sandbox does not grant: it returns an error code (functions of
    another shape trap)."""
    code = wasi.refusal(name)
    results = [str(r) for r in ty.results]

    def refused(caller: wasmtime.Caller, *_: Any) -> int:
        if results != ["i32"]:
            raise SandboxError(f"the module called {wasi.MODULE}.{name}, which is not provided")
        return code

    return refused


def _cause(trap: wasmtime.Trap) -> str:
    """A trap's reason without its backtrace (the last line wasmtime gives)."""
    lines = [line.strip() for line in str(trap).strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "trap").removeprefix("wasm trap: ")[:300]


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def _tail(state: wasi.Wasi) -> str:
    text = state.stderr_tail.decode("utf-8", "replace").strip()
    return f" (stderr: {text[-200:]})" if text else ""
