"""WebAssembly modules for the tests, compiled as the tests run: the repository's examples
(from text with wasmtime, from C with Debian's clang and wasi-libc), and modules that
misbehave on purpose."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import wasmtime

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "wasm"

_RUN = '(func (export "hydra_run") (param $start i64) (param $stop i64) (result i32)'

#: Loops forever: only fuel stops it.
LOOP_FOREVER = f"""(module (memory (export "memory") 1)
  {_RUN} (loop $again (br $again)) (i32.const 0)))"""

#: Grows its memory a page at a time until growing fails, then traps.
ALLOCATE_WITHOUT_BOUND = f"""(module (memory (export "memory") 1)
  {_RUN}
    (block $failed (loop $more
      (br_if $failed (i32.eq (memory.grow (i32.const 1)) (i32.const -1)))
      (br $more)))
    unreachable))"""

#: Grows its memory until growing fails, and outputs the pages it then has (an i64).
COUNT_PAGES_GRANTED = f"""(module
  (import "hydra" "output" (func $output (param i32 i32)))
  (memory (export "memory") 1)
  {_RUN}
    (block $failed (loop $more
      (br_if $failed (i32.eq (memory.grow (i32.const 1)) (i32.const -1)))
      (br $more)))
    (i64.store (i32.const 0) (i64.extend_i32_u (memory.size)))
    (call $output (i32.const 0) (i32.const 8))
    (i32.const 0)))"""

#: Declares 128 MiB of memory at start.
LARGE_MEMORY_AT_START = f"""(module (memory (export "memory") 2048)
  {_RUN} (i32.const 0)))"""

#: Outputs 64 KiB at a time, forever.
OUTPUT_WITHOUT_BOUND = f"""(module
  (import "hydra" "output" (func $output (param i32 i32)))
  (memory (export "memory") 1)
  {_RUN} (loop $again (call $output (i32.const 0) (i32.const 65536)) (br $again))
    (i32.const 0)))"""

#: Tries the world through WASI: opens a file under the descriptors a C runtime would
#: look for preopened folders at, opens a socket, reads the environment, the clock and
#: random bytes, writes to stdout; its output is what each call gave.
PROBE_THE_WORLD = """(module
  (import "wasi_snapshot_preview1" "fd_prestat_get" (func $prestat (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_accept" (func $accept (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $env (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "hydra" "output" (func $output (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 512) "/etc/passwd")
  (data (i32.const 600) "\\00\\02\\00\\00\\05\\00\\00\\00hello")
  (func $keep (param $slot i32) (param $value i32)
    (i64.store (i32.add (i32.const 1024) (i32.shl (local.get $slot) (i32.const 3)))
               (i64.extend_i32_u (local.get $value))))
  (func (export "hydra_run") (param $start i64) (param $stop i64) (result i32)
    (call $keep (i32.const 0) (call $prestat (i32.const 3) (i32.const 0)))
    (call $keep (i32.const 1) (call $open (i32.const 3) (i32.const 0) (i32.const 512)
      (i32.const 11) (i32.const 0) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 0)))
    (call $keep (i32.const 2) (call $accept (i32.const 3) (i32.const 0) (i32.const 0)))
    (call $keep (i32.const 3) (call $env (i32.const 0) (i32.const 4)))
    (call $keep (i32.const 4) (i32.load (i32.const 0)))
    (call $keep (i32.const 5) (call $clock (i32.const 0) (i64.const 1) (i32.const 8)))
    (i64.store (i32.const 1072) (i64.load (i32.const 8)))
    (call $keep (i32.const 7) (call $random (i32.const 1088) (i32.const 16)))
    (call $keep (i32.const 10)
      (call $write (i32.const 1) (i32.const 600) (i32.const 1) (i32.const 16)))
    (call $keep (i32.const 11)
      (call $write (i32.const 7) (i32.const 600) (i32.const 1) (i32.const 16)))
    (call $output (i32.const 1024) (i32.const 96))
    (i32.const 0)))"""

#: Loops on a WASI call that makes the host walk 8,000 (empty) buffers each time: host work
#: the module's own instructions would not pay for.
LOOP_ON_HOST_WORK = f"""(module
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  {_RUN}
    (loop $again
      (drop (call $write (i32.const 2) (i32.const 0) (i32.const 8000) (i32.const 65532)))
      (br $again))
    (i32.const 0)))"""

#: Imports a function of the ABI's module that does not exist.
UNKNOWN_IMPORT = f"""(module
  (import "env" "system" (func $system (param i32) (result i32)))
  (memory (export "memory") 1) {_RUN} (i32.const 0)))"""


def wasm(text: str) -> bytes:
    """WebAssembly text compiled to a binary module."""
    return bytes(wasmtime.wat2wasm(text))


def example(name: str) -> bytes:
    """An example module of the repository (``examples/wasm/NAME.wat``), compiled."""
    return wasm((EXAMPLES / f"{name}.wat").read_text())


#: How the C examples are built (`make wasm-toolchain` installs the tools): a WASI reactor
#: without C start-up files, exporting what its source marks with ``export_name``.
CLANG_WASM = ["clang", "--target=wasm32-wasi", "-O3", "-nostartfiles", "-Wl,--no-entry"]


def example_c(name: str, folder: Path) -> bytes:
    """An example module of the repository in C (``examples/wasm/NAME.c``), built with
    clang into ``folder``."""
    if shutil.which("clang") is None:
        raise RuntimeError("clang is missing: `make wasm-toolchain` installs it")
    target = folder / f"{name}.wasm"
    command = [*CLANG_WASM, "-o", str(target), str(EXAMPLES / f"{name}.c")]
    subprocess.run(command, check=True, capture_output=True, text=True)
    return target.read_bytes()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
