"""Suspending, resuming and duty-cycling real processes, measured by their CPU time."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import psutil
import pytest

from hydracompute.worker.executor import ChunkExecutor
from hydracompute.worker.throttle import Throttle
from tests.worker_support import check_duty_share, core_time

SPIN = "while True: pass"


@pytest.fixture
def spinner() -> Iterator[psutil.Process]:
    """A process that wants a whole core, as a kernel does."""
    process = subprocess.Popen([sys.executable, "-c", SPIN])
    try:
        yield psutil.Process(process.pid)
    finally:
        process.kill()  # SIGKILL ends it even if a failed test left it stopped
        process.wait()


def cpu_s(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


async def until(condition: Callable[[], bool], timeout_s: float) -> float:
    """Seconds until ``condition`` holds (polled); fails after ``timeout_s``."""
    began = time.perf_counter()
    while not condition():
        if time.perf_counter() - began > timeout_s:
            raise AssertionError(f"not within {timeout_s} s")
        await asyncio.sleep(0.005)
    return time.perf_counter() - began


def test_pause_stops_the_process_at_once_and_resume_continues_it(
    spinner: psutil.Process,
) -> None:
    async def scenario() -> None:
        throttle = Throttle(lambda: [spinner.pid])
        cycle = asyncio.ensure_future(throttle.run())
        try:
            await until(lambda: cpu_s(spinner) > 0.05, 10)
            throttle.pause()
            latency = await until(lambda: spinner.status() == psutil.STATUS_STOPPED, 1.0)
            assert spinner.pid in throttle.suspended
            frozen = cpu_s(spinner)
            await asyncio.sleep(0.3)  # a window in which it must not run at all
            assert cpu_s(spinner) - frozen < 0.02
            throttle.resume()
            await until(lambda: cpu_s(spinner) > frozen + 0.05, 5)
            assert spinner.status() != psutil.STATUS_STOPPED
            print(f"pause latency {latency * 1000:.1f} ms")
        finally:
            cycle.cancel()
            throttle.release()

    asyncio.run(scenario())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/schedstat")
@pytest.mark.parametrize("duty", [0.5, 0.25])
def test_a_duty_cycle_gives_that_share_of_a_core(spinner: psutil.Process, duty: float) -> None:
    window_s = 2.0

    async def scenario() -> str:
        throttle = Throttle(lambda: [spinner.pid])
        cycle = asyncio.ensure_future(throttle.run())
        try:
            await until(lambda: cpu_s(spinner) > 0.05, 10)
            throttle.set_duty(duty, period_s=0.2)
            await asyncio.sleep(0.2)  # let one whole period pass before measuring
            began, before = time.perf_counter(), core_time(spinner.pid)
            await asyncio.sleep(window_s)  # the measured window
            after, elapsed = core_time(spinner.pid), time.perf_counter() - began
            return check_duty_share(before, after, elapsed, duty)
        finally:
            cycle.cancel()
            throttle.release()

    print(f"duty {duty:.0%}: {asyncio.run(scenario())}")


def test_release_continues_everything_and_stopped_processes_can_be_killed(
    spinner: psutil.Process,
) -> None:
    async def scenario() -> None:
        throttle = Throttle(lambda: [spinner.pid])
        throttle.pause()
        await until(lambda: spinner.status() == psutil.STATUS_STOPPED, 1.0)
        throttle.release()
        await until(lambda: spinner.status() != psutil.STATUS_STOPPED, 1.0)
        assert not throttle.paused and not throttle.suspended

    asyncio.run(scenario())


def test_a_process_that_is_gone_is_skipped(spinner: psutil.Process) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    throttle = Throttle(lambda: [gone.pid, spinner.pid])
    throttle.pause()
    try:
        assert throttle.suspended == {spinner.pid}
    finally:
        throttle.release()


@pytest.mark.skipif(not hasattr(os, "sched_getscheduler"), reason="Linux scheduling classes")
def test_compute_processes_run_at_the_chosen_priority() -> None:
    for priority, nice, policy in (
        ("idle", 19, os.SCHED_IDLE),
        ("low", 19, os.SCHED_OTHER),
        ("normal", psutil.Process().nice(), os.SCHED_OTHER),
    ):
        executor = ChunkExecutor(1, warm_up=False, priority=priority)
        try:
            executor.start()
            (pid,) = executor.pids()
            assert psutil.Process(pid).nice() == nice
            assert os.sched_getscheduler(pid) == policy
        finally:
            executor.shutdown()


def test_restart_kills_even_suspended_processes_and_starts_afresh() -> None:
    executor = ChunkExecutor(2, warm_up=False)
    try:
        executor.start()
        before = executor.pids()
        throttle = Throttle(executor.pids)
        throttle.pause()
        assert throttle.suspended == set(before)
        executor.restart()
        assert not any(_is_child(pid) for pid in before)  # killed and reaped
        assert executor.pids() == []  # processes start again with the next chunk
        run = executor.submit("pi", {"samples": 2**20, "seed": 1}, 0, 1).result(timeout=60)
        assert run.error is None
        assert set(executor.pids()).isdisjoint(before)
    finally:
        executor.shutdown()


def _is_child(pid: int) -> bool:
    try:
        return psutil.Process(pid).ppid() == os.getpid()
    except psutil.Error:
        return False
