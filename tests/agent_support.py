"""A real agent of one core working through a π job on an in-process coordinator."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TypeVar

import httpx

from hydracompute.coordinator.app import create_app
from hydracompute.coordinator.auth import SecuritySettings
from hydracompute.core.config import SchedulerConfig
from hydracompute.core.models import CredentialKind
from hydracompute.kinds import default_registry
from hydracompute.kinds.pi_kernel import count_hits
from hydracompute.store import MemoryBackend, Store
from hydracompute.worker.agent import WorkerAgent
from hydracompute.worker.rules import rules_from_values

Transport = TypeVar("Transport", bound=httpx.ASGITransport)


def run_pi_job(
    tmp_path: Path,
    transport_type: type[Transport],
    config: SchedulerConfig,
    samples: int,
    seed: int,
    security: SecuritySettings | None = None,
) -> Transport:
    """Run the job to its end through ``transport_type`` (which may record what passes)
    and check its answer; returns the transport."""

    async def scenario() -> Transport:
        store = Store(MemoryBackend(), default_registry(), config)
        _, token = store.credentials.issue(CredentialKind.JOIN_TOKEN, "t", time.time())
        app = create_app(store, security=security)
        transport = transport_type(app=app)
        agent = WorkerAgent(
            "http://pool",
            1,
            token,
            transport=transport,
            rules=rules_from_values({"priority": "normal"}, default_cores=1),
            status_file=tmp_path / "status.json",
            poll_s=0.05,
        )
        job = store.submit_job("pi", {"samples": samples, "seed": seed}, now=time.time())
        task = asyncio.ensure_future(agent.run())
        try:
            deadline = time.monotonic() + 120
            while not store.get_job(job.job_id).state.finished:
                assert not task.done(), "the agent gave up"
                assert time.monotonic() < deadline, "the job did not finish"
                await asyncio.sleep(0.02)
        finally:
            agent.stop()
            await asyncio.wait_for(task, 60)
            await app.state.coordinator.stop()
        assert store.get_job(job.job_id).answer["hits"] == count_hits(seed, 0, samples)
        return transport

    return asyncio.run(scenario())
