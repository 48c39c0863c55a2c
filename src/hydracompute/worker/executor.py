"""Runs chunks on the worker's cores: one compute process per core.

Processes rather than threads, so that a kernel that crashes cannot take the agent with it
(the pool is rebuilt and the chunks it was running are reported as failed), and so that the
owner's rules can later suspend computing without touching the agent.
Each process checks a lease's parameters again with the locally installed kind before
running it: the coordinator sends parameters, never code.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from hydracompute.kinds import default_registry
from hydracompute.kinds.base import JSON


@dataclass(frozen=True)
class ChunkRun:
    """The outcome of one chunk: an output with its compute time, or an error."""

    output: JSON | None
    compute_s: float
    error: str | None = None


def _init_process(warm_up: bool) -> None:
    # Ctrl-C goes to the whole process group; only the agent decides how to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if warm_up:
        for kind in default_registry():
            kind.warm_up()


def run_chunk(kind_name: str, params: JSON, start: int, stop: int) -> ChunkRun:
    """Validate and compute one chunk in this process; never raises for kind errors."""
    try:
        kind = default_registry().get(kind_name)
        canonical = kind.validate(params)
        if canonical != params:
            raise ValueError("parameters are not in the kind's canonical form")
        if not 0 <= start < stop <= kind.total_units(canonical):
            raise ValueError(f"chunk [{start}, {stop}) is outside the job")
        if stop - start > kind.max_chunk_units:
            raise ValueError(f"chunk of {stop - start} units exceeds {kind.max_chunk_units}")
        began = time.perf_counter()
        output = kind.compute(canonical, start, stop)
        return ChunkRun(output, time.perf_counter() - began)
    except Exception as exc:  # reported to the coordinator as this chunk's failure
        return ChunkRun(None, 0.0, f"{type(exc).__name__}: {exc}")


def _ping() -> int:
    return os.getpid()


class ChunkExecutor:
    """A pool of ``cores`` compute processes."""

    def __init__(self, cores: int, warm_up: bool = True) -> None:
        self.cores = cores
        self._warm_up = warm_up
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.cores,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_process,
            initargs=(self._warm_up,),
        )

    def start(self) -> None:
        """Start every process now (loading kernels) rather than at the first chunk."""
        for future in [self._pool.submit(_ping) for _ in range(self.cores)]:
            future.result()

    def submit(self, kind: str, params: JSON, start: int, stop: int) -> Future[ChunkRun]:
        """Run a chunk on a free process; a pool broken by a dead process is rebuilt."""
        try:
            return self._pool.submit(run_chunk, kind, params, start, stop)
        except BrokenProcessPool:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = self._new_pool()
            return self._pool.submit(run_chunk, kind, params, start, stop)

    def shutdown(self, kill: bool = False) -> None:
        """Stop the processes; with ``kill``, without waiting for running chunks."""
        if kill:
            processes: dict[Any, Any] = getattr(self._pool, "_processes", None) or {}
            for process in list(processes.values()):
                process.terminate()
        self._pool.shutdown(wait=True, cancel_futures=True)
