"""A worker told to slow down (429) waits and carries on; it never gives up its work."""

from __future__ import annotations

from pathlib import Path

import httpx

from hydracompute.coordinator.auth import SecuritySettings
from hydracompute.core.config import SchedulerConfig
from tests.agent_support import run_pi_job


class CountingTransport(httpx.ASGITransport):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.statuses: list[int] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        self.statuses.append(response.status_code)
        return response


def test_a_rate_limited_worker_waits_and_finishes_the_job(tmp_path: Path) -> None:
    # Two exchanges a second after a burst of three: far fewer than the job needs.
    security = SecuritySettings(
        api_rate_per_s=1e6, api_burst=1e6, worker_rate_per_s=2.0, worker_burst=3.0
    )
    config = SchedulerConfig(target_chunk_s=0.02, heartbeat_s=0.5)
    transport = run_pi_job(tmp_path, CountingTransport, config, 12 * 2**20, 3, security)
    assert 429 in transport.statuses
