"""A WASI preview 1 that grants nothing and answers the same everywhere.

Submitted modules are compiled by ordinary toolchains (C with wasi-libc, Rust's
``wasm32-wasip1``), whose start-up code imports ``wasi_snapshot_preview1`` functions even
when the program never uses them. The sandbox defines every such import itself, rather than
wasmtime's WASI, so that nothing the module can call reaches the machine or differs between
two machines:

- no preopened directories (``fd_prestat_get`` says there are none), so no path can be
  opened; ``path_*`` calls fail with ``ENOTCAPABLE``;
- no sockets (``sock_*`` fail with ``ENOTSUP``), no arguments, no environment;
- clocks stand still at 0 (resolution 1 ns), and ``random_get`` gives a stream determined by
  the chunk (see :class:`DeterministicBytes`), so two honest workers compute identical bytes;
- standard output and error are discarded, except the last bytes of standard error, kept
  to explain a failure;
- ``proc_exit`` ends the chunk (a failure unless the code is 0 and the output was given);
- anything else returns ``ENOSYS``.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from typing import Any

import wasmtime

MODULE = "wasi_snapshot_preview1"

ESUCCESS = 0
EBADF = 8
ENOSYS = 52
ENOTSUP = 58
ENOTCAPABLE = 76
#: The stderr tail kept for error messages.
STDERR_TAIL_BYTES = 512


class ModuleExit(Exception):
    """The module called ``proc_exit(code)``."""

    def __init__(self, code: int) -> None:
        super().__init__(f"the module exited with code {code}")
        self.code = code


class DeterministicBytes:
    """SHA-256 in counter mode over ``key``: the bytes ``random_get`` hands out."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._counter = 0
        self._buffer = b""

    def take(self, n: int) -> bytes:
        while len(self._buffer) < n:
            block = hashlib.sha256(self._key + self._counter.to_bytes(8, "little")).digest()
            self._buffer += block
            self._counter += 1
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out


#: Fuel a host function costs per call, per access to guest memory, and per 8 bytes it
#: moves: work done in Python for the module is paid for like its own instructions (about
#: what the same time would run), so that no host call loops the CPU free of charge.
HOST_CALL_FUEL = 2000
MEMORY_ACCESS_FUEL = 1000
BYTES_PER_FUEL = 8


class HostOutOfFuel(Exception):
    """A host function's work would take more fuel than the chunk has left."""


def charge(caller: wasmtime.Caller, fuel: int) -> None:
    """Take ``fuel`` from the calling store.

    Raises:
        HostOutOfFuel: less is left.
    """
    # Store's fuel methods only need a context, which a Caller gives.
    store: Any = caller
    left = int(wasmtime.Store.get_fuel(store))
    if fuel > left:
        wasmtime.Store.set_fuel(store, 0)
        raise HostOutOfFuel
    wasmtime.Store.set_fuel(store, left - fuel)


class GuestMemory:
    """Bounds-checked access to the calling instance's exported ``memory``, each access
    paid for in fuel."""

    def __init__(self, caller: wasmtime.Caller) -> None:
        memory = caller.get("memory")
        if not isinstance(memory, wasmtime.Memory):
            raise wasmtime.WasmtimeError("the module exports no memory")
        self.memory, self.caller = memory, caller

    def span(self, ptr: int, length: int) -> tuple[int, int]:
        charge(self.caller, MEMORY_ACCESS_FUEL + max(length, 0) // BYTES_PER_FUEL)
        # i32 arguments arrive signed: a pointer past 2 GiB is negative here.
        ptr &= 0xFFFFFFFF
        if length < 0 or ptr + length > self.memory.data_len(self.caller):
            raise wasmtime.WasmtimeError(f"out-of-bounds access: {length} bytes at {ptr}")
        return ptr, ptr + length

    def read(self, ptr: int, length: int) -> bytes:
        start, stop = self.span(ptr, length)
        return bytes(self.memory.read(self.caller, start, stop))

    def write(self, ptr: int, data: bytes) -> None:
        start, _ = self.span(ptr, len(data))
        if data:
            self.memory.write(self.caller, data, start)


class Wasi:
    """The state behind one instance's WASI imports."""

    def __init__(self, random_key: bytes) -> None:
        self.random = DeterministicBytes(random_key)
        self.stderr_tail = b""

    def functions(self) -> dict[str, Callable[..., Any]]:
        """Implementations by import name; each takes the caller first."""
        return {
            "args_sizes_get": self._two_zeros,
            "environ_sizes_get": self._two_zeros,
            "args_get": _succeed,
            "environ_get": _succeed,
            "clock_time_get": self._clock_time_get,
            "clock_res_get": self._clock_res_get,
            "random_get": self._random_get,
            "fd_write": self._fd_write,
            "fd_fdstat_get": self._fd_fdstat_get,
            "fd_prestat_get": _bad_descriptor,
            "fd_prestat_dir_name": _bad_descriptor,
            "fd_read": _bad_descriptor,
            "fd_pread": _bad_descriptor,
            "fd_pwrite": _bad_descriptor,
            "fd_seek": _bad_descriptor,
            "fd_close": _bad_descriptor,
            "fd_filestat_get": _bad_descriptor,
            "fd_readdir": _bad_descriptor,
            "proc_exit": _proc_exit,
            "sched_yield": _succeed,
        }

    def _two_zeros(self, caller: wasmtime.Caller, count_ptr: int, size_ptr: int) -> int:
        memory = GuestMemory(caller)
        memory.write(count_ptr, b"\0" * 4)
        memory.write(size_ptr, b"\0" * 4)
        return ESUCCESS

    def _clock_time_get(self, caller: wasmtime.Caller, _id: int, _prec: int, ptr: int) -> int:
        GuestMemory(caller).write(ptr, b"\0" * 8)
        return ESUCCESS

    def _clock_res_get(self, caller: wasmtime.Caller, _id: int, ptr: int) -> int:
        GuestMemory(caller).write(ptr, struct.pack("<Q", 1))
        return ESUCCESS

    def _random_get(self, caller: wasmtime.Caller, ptr: int, length: int) -> int:
        memory = GuestMemory(caller)
        memory.span(ptr, length & 0xFFFFFFFF)
        memory.write(ptr, self.random.take(length & 0xFFFFFFFF))
        return ESUCCESS

    def _fd_write(
        self, caller: wasmtime.Caller, fd: int, iovs: int, count: int, written_ptr: int
    ) -> int:
        if fd not in (1, 2):
            return EBADF
        memory = GuestMemory(caller)
        total = 0
        for i in range(count & 0xFFFFFFFF):
            base, length = struct.unpack("<II", memory.read(iovs + 8 * i, 8))
            data = memory.read(base, length)
            total += length
            if fd == 2:
                self.stderr_tail = (self.stderr_tail + data)[-STDERR_TAIL_BYTES:]
        memory.write(written_ptr, struct.pack("<I", total & 0xFFFFFFFF))
        return ESUCCESS

    def _fd_fdstat_get(self, caller: wasmtime.Caller, fd: int, ptr: int) -> int:
        if fd not in (1, 2):
            return EBADF
        # A character device one may only write to (filetype 2, rights fd_write = 1 << 6).
        GuestMemory(caller).write(ptr, struct.pack("<BxHxxxxQQ", 2, 0, 1 << 6, 0))
        return ESUCCESS


def _succeed(caller: wasmtime.Caller, *_: int) -> int:
    return ESUCCESS


def _bad_descriptor(caller: wasmtime.Caller, *_: int) -> int:
    return EBADF


def _proc_exit(caller: wasmtime.Caller, code: int) -> None:
    raise ModuleExit(code)


def refusal(name: str) -> int:
    """The error code for a WASI call the sandbox does not implement."""
    if name.startswith("path_"):
        return ENOTCAPABLE
    if name.startswith("sock_"):
        return ENOTSUP
    return ENOSYS
