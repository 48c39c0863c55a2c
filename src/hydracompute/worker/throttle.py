"""Suspends, resumes and duty-cycles the compute processes (SIGSTOP and SIGCONT).

A suspended process keeps its chunk where it was: resuming continues the same computation,
and nothing is lost or recomputed. The duty cycle runs the processes for ``duty × period``
then stops them for the rest of each period, so on average they take that share of a core's
time however hungry the kernel is. :class:`Throttle` is the only code that sends these
signals, so a pause and the duty cycle never fight over a process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable

import psutil

log = logging.getLogger("hydracompute.worker")

#: While paused, processes started meanwhile are suspended within this long.
PAUSED_RECHECK_S = 0.2


class Throttle:
    """Owns the running state of the processes that ``pids`` names (read at every step).

    Call :meth:`pause`, :meth:`resume` and :meth:`set_duty` from the event loop, and run
    :meth:`run` as a task for the duty cycle. Call :meth:`release` before stopping the
    processes: a suspended process cannot exit until it is continued.
    """

    def __init__(self, pids: Callable[[], Iterable[int]]) -> None:
        self._pids = pids
        self._processes: dict[int, psutil.Process] = {}
        self._suspended: set[int] = set()
        self._paused = False
        self._duty = 1.0
        self._period_s = 0.5
        self._changed = asyncio.Event()

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def suspended(self) -> frozenset[int]:
        """Processes stopped right now (by a pause or the resting part of a duty cycle)."""
        return frozenset(self._suspended)

    def _current(self) -> list[psutil.Process]:
        # psutil.Process checks the process's start time before signalling it, so a pid
        # reused by another program is never stopped by mistake.
        current = {}
        for pid in self._pids():
            process = self._processes.get(pid)
            if process is None:
                try:
                    process = psutil.Process(pid)
                except psutil.Error:
                    continue
            current[pid] = process
        self._processes = current
        self._suspended &= current.keys()
        return list(current.values())

    def _signal(self, stop: bool) -> None:
        for process in self._current():
            if (process.pid in self._suspended) == stop:
                continue
            try:
                process.suspend() if stop else process.resume()
            except psutil.NoSuchProcess:
                continue  # it died: the executor reports its chunk
            except psutil.Error as exc:  # e.g. another user's process after a pid reuse
                log.warning(
                    "cannot %s process %d: %s", "stop" if stop else "continue", process.pid, exc
                )
                continue
            if stop:
                self._suspended.add(process.pid)
            else:
                self._suspended.discard(process.pid)

    def pause(self) -> None:
        """Stop every compute process now, until :meth:`resume`."""
        self._paused = True
        self._signal(stop=True)
        self._changed.set()

    def resume(self) -> None:
        """Let the processes run again (at the duty cycle set)."""
        self._paused = False
        self._signal(stop=False)
        self._changed.set()

    def set_duty(self, duty: float, period_s: float) -> None:
        """Run the processes ``duty`` (0 to 1] of each ``period_s``."""
        duty = min(1.0, max(0.0, duty))
        if (duty, period_s) != (self._duty, self._period_s):
            self._duty, self._period_s = duty, period_s
            self._changed.set()

    def release(self) -> None:
        """Continue every process and stop throttling (before shutting the processes down)."""
        self._paused, self._duty = False, 1.0
        self._signal(stop=False)
        self._changed.set()

    async def _quiet_for(self, seconds: float) -> bool:
        """Sleep ``seconds``; True if a change came first."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), seconds)
            return True
        return False

    async def run(self) -> None:
        """The duty cycle, forever (cancel it to stop; then call :meth:`release`)."""
        while True:
            self._changed.clear()
            if self._paused:
                self._signal(stop=True)  # processes started since the pause, too
                await self._quiet_for(PAUSED_RECHECK_S)
            elif self._duty >= 1.0:
                self._signal(stop=False)
                await self._changed.wait()
            else:
                running_s = self._duty * self._period_s
                self._signal(stop=False)
                if await self._quiet_for(running_s):
                    continue
                self._signal(stop=True)
                await self._quiet_for(self._period_s - running_s)
