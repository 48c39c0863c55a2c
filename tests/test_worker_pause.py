"""The agent applying the owner's rules, against the real coordinator app in process
(``httpx.ASGITransport``) and with real compute processes; the machine's readings are
scripted, so each pause and resume happens exactly when the test says."""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil

from hydracompute.coordinator.app import create_app
from hydracompute.coordinator.service import Coordinator
from hydracompute.core.config import SchedulerConfig
from hydracompute.core.models import CredentialKind, Job, JobState, LeaseState
from hydracompute.kinds import default_registry
from hydracompute.kinds.pi_kernel import count_hits
from hydracompute.store import MemoryBackend, Store
from hydracompute.worker.agent import WorkerAgent
from hydracompute.worker.rules import Readings, rules_from_values
from tests.test_api import UNLIMITED

T = TypeVar("T")
CONFIG = SchedulerConfig(target_chunk_s=1.5, heartbeat_s=0.5)
SEED = 424242
#: Enough work that the job is still running when the test looks at it.
SAMPLES = 400 * 2**20


class ScriptedMonitor:
    """The machine as the test says it is."""

    def __init__(self) -> None:
        self.readings = Readings()

    def read(self) -> Readings:
        return self.readings


async def until(condition: Callable[[], Any], timeout_s: float = 60.0, what: str = "") -> Any:
    """Poll ``condition`` (plain or async) until it is truthy; fail after ``timeout_s``."""
    began = time.monotonic()
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() - began > timeout_s:
            raise AssertionError(f"timed out waiting for {what or condition}")
        await asyncio.sleep(0.01)


@dataclass
class Setup:
    agent: WorkerAgent
    monitor: ScriptedMonitor
    coordinator: Coordinator
    store: Store
    status_file: Path

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        return await self.coordinator.call(fn, *args)

    def running_lease(self) -> tuple[str, int] | None:
        """A lease the agent is computing that is past the probe chunk: (id, units)."""
        for lease_id, running in self.agent._running.items():
            chunk = running.lease["chunk"]
            if not running.abandoned and chunk["stop"] - chunk["start"] > 1:
                return lease_id, chunk["stop"] - chunk["start"]
        return None

    def compute_pids(self) -> list[int]:
        """This process's compute processes (spawned children), alive and not reaped yet."""
        found = []
        for child in psutil.Process().children():
            try:
                if "spawn_main" in " ".join(child.cmdline()):
                    found.append(child.pid)
            except psutil.Error:  # gone, or a zombie about to be reaped
                continue
        return found

    async def lease_state(self, lease_id: str) -> LeaseState:
        def read() -> LeaseState:
            with self.store.backend.transaction():
                lease = self.store.backend.get_lease(lease_id)
            assert lease is not None
            return lease.state

        return await self.call(read)

    async def worker_view(self) -> dict[str, Any]:
        (worker,) = await self.call(self.store.list_workers)
        held = await self.call(self.store.leases_in_hand)
        return {
            "state": worker.state,
            "reason": worker.state_reason,
            "leases": held[worker.worker_id],
        }


async def paused_on_coordinator(s: Setup) -> bool:
    return (await s.worker_view())["state"] == "paused"


async def finished(s: Setup, job_id: str) -> Job | None:
    job = await s.call(s.store.get_job, job_id)
    return job if job.state.finished else None


@asynccontextmanager
async def running_agent(tmp_path: Path, **rules: Any) -> AsyncIterator[Setup]:
    store = Store(MemoryBackend(), default_registry(), CONFIG)
    _, token = store.credentials.issue(CredentialKind.JOIN_TOKEN, "test", time.time())
    app = create_app(store, security=UNLIMITED)
    monitor = ScriptedMonitor()
    status_file = tmp_path / "worker.status.json"
    agent = WorkerAgent(
        "http://pool",
        1,
        token,
        transport=httpx.ASGITransport(app=app),
        rules=rules_from_values({"priority": "normal", **rules}, default_cores=1),
        monitor=monitor,
        status_file=status_file,
        poll_s=0.05,
    )
    task = asyncio.ensure_future(agent.run())
    setup = Setup(agent, monitor, app.state.coordinator, store, status_file)
    try:
        await until(lambda: agent.worker_id or task.done(), what="enrolment")
        yield setup
    finally:
        agent.stop()
        await asyncio.wait_for(task, 60)
        await app.state.coordinator.stop()


def test_a_short_pause_suspends_the_chunk_keeps_its_lease_and_resumes_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with running_agent(tmp_path, on_battery=False, return_after_s=3600) as s:
            await s.call(s.store.submit_job, "pi", {"samples": SAMPLES, "seed": SEED}, time.time())
            lease_id, _ = await until(s.running_lease, what="a full-size chunk")
            pids = s.compute_pids()
            s.monitor.readings = Readings(on_battery=True)
            # Suspended within a second of the decision.
            await until(
                lambda: all(psutil.Process(p).status() == psutil.STATUS_STOPPED for p in pids),
                timeout_s=1.0,
                what="the compute process to stop",
            )
            seen = await until(
                lambda: (
                    json.loads(s.status_file.read_text())["state"] == "paused"
                    and json.loads(s.status_file.read_text())
                ),
                what="the status file",
            )
            assert seen["reason"] == "on battery" and seen["suspended_processes"] == 1
            assert [lease["lease_id"] for lease in seen["leases"]] == [lease_id]
            await until(
                lambda: paused_on_coordinator(s), timeout_s=5, what="the coordinator to know"
            )
            # Paused for two lease lifetimes: the lease is renewed, never expired.
            paused_at = time.monotonic()
            while time.monotonic() - paused_at < 2 * CONFIG.lease_ttl_s:
                assert await s.call(s.store.expire_leases, time.time()) == 0
                await asyncio.sleep(0.1)
            view = await s.worker_view()
            assert view == {"state": "paused", "reason": "on battery", "leases": 1}
            assert await s.lease_state(lease_id) is LeaseState.ACTIVE
            s.monitor.readings = Readings()
            # The same chunk finishes under the same lease: nothing was recomputed.
            await until(
                lambda: lease_id not in s.agent._running, timeout_s=60, what="the chunk to end"
            )
            assert await until(lambda: s.agent.stats.chunks_done >= 2)
            await until(lambda: not s.agent._unsent, what="the result to be sent")
            assert await s.lease_state(lease_id) is LeaseState.DONE
            assert (await s.worker_view())["state"] == "running"
            assert s.compute_pids() == pids  # the same process carried on

    asyncio.run(scenario())


def test_a_long_pause_gives_the_chunks_back_and_the_job_still_ends_exactly(
    tmp_path: Path,
) -> None:
    samples = 600 * 2**20

    async def scenario() -> None:
        async with running_agent(tmp_path, cpu_pause_percent=50, return_after_s=0.5) as s:
            job = await s.call(
                s.store.submit_job, "pi", {"samples": samples, "seed": SEED}, time.time()
            )
            lease_id, _ = await until(s.running_lease, what="a full-size chunk")
            pids = s.compute_pids()
            s.monitor.readings = Readings(other_cpu_percent=90)
            await until(lambda: s.agent.stats.leases_returned == 1, what="the leases to go back")
            assert await s.lease_state(lease_id) is LeaseState.RETURNED
            assert (await s.worker_view())["leases"] == 0
            # The suspended computation is killed (right after the return), not left holding
            # memory.
            await until(
                lambda: not any(psutil.pid_exists(p) and p in s.compute_pids() for p in pids),
                what="the suspended computation to be killed",
            )
            status = await until(
                lambda: (
                    (seen := json.loads(s.status_file.read_text()))["state"] == "paused" and seen
                ),
                what="the status file",
            )
            assert "other programs use 90%" in status["reason"]
            assert status["leases"] == [] and status["leases_returned"] == 1
            # Still paused: it asks for nothing.
            before = s.agent.stats.exchanges
            await until(lambda: s.agent.stats.exchanges > before + 2)
            assert (await s.worker_view())["leases"] == 0
            s.monitor.readings = Readings(other_cpu_percent=10)  # below the resume threshold
            done = await until(lambda: finished(s, job.job_id), what="the job to finish")
            assert done.state is JobState.DONE and done.answer is not None
            assert done.answer["hits"] == count_hits(SEED, 0, samples)

    asyncio.run(scenario())
