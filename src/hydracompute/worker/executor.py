"""Runs chunks on the worker's cores: one compute process per core.

Processes rather than threads, so that a kernel that crashes cannot take the agent with it
(the pool is rebuilt and the chunks it was running are reported as failed), and so that the
owner's rules can later suspend computing without touching the agent.
Each process checks a lease's parameters again with the locally installed kind before
running it: the coordinator sends parameters, never code.

The processes run at the owner's chosen priority (idle by default: on Linux they get only
CPU time nothing else wants), and on Linux they die with the agent, so that processes the
agent had suspended are never left behind stopped if it is killed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import multiprocessing
import os
import signal
import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from hydracompute.jsonvalues import nonfinite_path
from hydracompute.kinds import default_registry
from hydracompute.kinds.base import JSON

log = logging.getLogger("hydracompute.worker")

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class ChunkRun:
    """The outcome of one chunk: an output with its compute time, or an error."""

    output: JSON | None
    compute_s: float
    error: str | None = None


def _set_priority(priority: str) -> None:
    """``idle``: Linux's SCHED_IDLE and nice 19 (nice 19 elsewhere, Windows' idle class);
    ``low``: nice 19 (Windows: below normal); ``normal``: unchanged."""
    if priority == "normal":
        return
    me = psutil.Process()
    try:
        if sys.platform == "win32":
            idle = priority == "idle"
            me.nice(psutil.IDLE_PRIORITY_CLASS if idle else psutil.BELOW_NORMAL_PRIORITY_CLASS)
            return
        me.nice(19)
        if priority == "idle" and hasattr(os, "sched_setscheduler"):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (OSError, psutil.Error) as exc:  # not allowed here (some containers): go on
        log.warning("cannot lower the compute processes' priority: %s", exc)


def _die_with_parent(parent: int) -> None:
    """Linux: be killed when the agent dies, even while suspended (SIGKILL works on a
    stopped process; nothing else would end it)."""
    if not sys.platform.startswith("linux"):
        return
    libc_name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the agent died before the request took effect
        os._exit(1)


def _init_process(warm_up: bool, priority: str = "normal", parent: int = 0) -> None:
    # Ctrl-C goes to the whole process group; only the agent decides how to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if parent:
        _die_with_parent(parent)
    _set_priority(priority)
    if warm_up:
        for kind in default_registry():
            kind.warm_up()


def run_chunk(
    kind_name: str,
    params: JSON,
    start: int,
    stop: int,
    files: dict[str, str] | None = None,
    cache_dir: str | None = None,
) -> ChunkRun:
    """Validate and compute one chunk in this process; never raises for kind errors.

    ``files`` are the local paths of the blobs the kind names (:meth:`JobKind.blobs`), by
    role, already fetched and checked; ``cache_dir`` a folder the kind may cache in.
    """
    try:
        kind = default_registry().get(kind_name)
        canonical = kind.validate(params)
        if canonical != params:
            raise ValueError("parameters are not in the kind's canonical form")
        if not 0 <= start < stop <= kind.total_units(canonical):
            raise ValueError(f"chunk [{start}, {stop}) is outside the job")
        if stop - start > kind.max_units(canonical):
            raise ValueError(f"chunk of {stop - start} units exceeds {kind.max_units(canonical)}")
        needed = kind.blobs(canonical)
        if set(files or {}) != set(needed):
            raise ValueError(
                f"the chunk needs the files {sorted(needed)}, not {sorted(files or {})}"
            )
        began = time.perf_counter()
        if needed:
            paths = {role: Path(path) for role, path in (files or {}).items()}
            cache = Path(cache_dir) if cache_dir else None
            output = kind.compute_files(canonical, start, stop, paths, cache)
        else:
            output = kind.compute(canonical, start, stop)
        compute_s = time.perf_counter() - began
        # Reported as this chunk's failure here; found only when the exchange is encoded,
        # it would fail every exchange, retried forever.
        where = nonfinite_path(output, "output")
        if where is not None:
            raise ValueError(f"{where} is NaN or infinite, which JSON cannot carry")
        return ChunkRun(output, compute_s)
    except Exception as exc:  # reported to the coordinator as this chunk's failure
        return ChunkRun(None, 0.0, f"{type(exc).__name__}: {exc}")


def _ping() -> int:
    return os.getpid()


class ChunkExecutor:
    """A pool of ``cores`` compute processes at ``priority`` (``idle``, ``low``, ``normal``)."""

    def __init__(
        self,
        cores: int,
        warm_up: bool = True,
        priority: str = "normal",
        cache_dir: Path | None = None,
    ) -> None:
        self.cores = cores
        #: Where kinds keep caches (compiled modules), passed to every chunk.
        self.cache_dir = cache_dir
        self._warm_up = warm_up
        self._priority = priority
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.cores,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_process,
            initargs=(self._warm_up, self._priority, os.getpid()),
        )

    def start(self) -> None:
        """Start every process now (loading kernels) rather than at the first chunk."""
        for future in [self._pool.submit(_ping) for _ in range(self.cores)]:
            future.result()

    def pids(self) -> list[int]:
        """Process ids of the compute processes running now (none before the first chunk
        after :meth:`restart`)."""
        processes: dict[int, Any] = getattr(self._pool, "_processes", None) or {}
        for _ in range(10):
            try:
                return list(processes)
            except RuntimeError:  # the pool's own thread changed it meanwhile: read again
                continue
        return []

    def submit(
        self,
        kind: str,
        params: JSON,
        start: int,
        stop: int,
        files: dict[str, str] | None = None,
    ) -> Future[ChunkRun]:
        """Run a chunk on a free process (with the local ``files`` its kind needs); a pool
        broken by a dead process is rebuilt."""
        cache = str(self.cache_dir) if self.cache_dir else None
        arguments = (kind, params, start, stop, files, cache)
        try:
            return self._pool.submit(run_chunk, *arguments)
        except BrokenProcessPool:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()
            return self._pool.submit(run_chunk, *arguments)

    def _kill_all(self) -> None:
        processes: dict[Any, Any] = getattr(self._pool, "_processes", None) or {}
        for process in list(processes.values()):
            process.kill()  # SIGKILL: also ends a suspended process

    def restart(self) -> None:
        """Kill every process (suspended ones included) and start afresh: the chunks they
        were computing fail with ``BrokenProcessPool``. Processes start again lazily."""
        self._kill_all()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pool = self._new_pool()

    def shutdown(self, kill: bool = False) -> None:
        """Stop the processes; with ``kill``, without waiting for running chunks."""
        if kill:
            processes: dict[Any, Any] = getattr(self._pool, "_processes", None) or {}
            for process in list(processes.values()):
                process.terminate()
        self._pool.shutdown(wait=True, cancel_futures=True)
