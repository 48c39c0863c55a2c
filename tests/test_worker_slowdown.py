"""A worker told to slow down (429) waits and carries on; it never gives up its work."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

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


class CountingTransport(httpx.ASGITransport):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.statuses: list[int] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        self.statuses.append(response.status_code)
        return response


def test_a_rate_limited_worker_waits_and_finishes_the_job(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = Store(
            MemoryBackend(),
            default_registry(),
            SchedulerConfig(target_chunk_s=0.02, heartbeat_s=0.5),
        )
        _, token = store.credentials.issue(CredentialKind.JOIN_TOKEN, "t", time.time())
        # Two exchanges a second after a burst of three: far fewer than the job needs.
        security = SecuritySettings(
            api_rate_per_s=1e6, api_burst=1e6, worker_rate_per_s=2.0, worker_burst=3.0
        )
        app = create_app(store, security=security)
        transport = CountingTransport(app=app)
        agent = WorkerAgent(
            "http://pool",
            1,
            token,
            transport=transport,
            rules=rules_from_values({"priority": "normal"}, default_cores=1),
            status_file=tmp_path / "status.json",
            poll_s=0.05,
        )
        job = store.submit_job("pi", {"samples": 12 * 2**20, "seed": 3}, now=time.time())
        task = asyncio.ensure_future(agent.run())
        try:
            deadline = time.monotonic() + 120
            while not store.get_job(job.job_id).state.finished:
                assert not task.done(), "the agent gave up"
                assert time.monotonic() < deadline, "the job did not finish"
                await asyncio.sleep(0.05)
        finally:
            agent.stop()
            await asyncio.wait_for(task, 60)
            await app.state.coordinator.stop()
        assert 429 in transport.statuses
        assert store.get_job(job.job_id).answer["hits"] == count_hits(3, 0, 12 * 2**20)

    asyncio.run(scenario())
