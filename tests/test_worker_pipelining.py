"""A worker asks for its next chunk before it sends the result of the last one.

A result can be megabytes (a Mandelbrot chunk's counts) that take tens of milliseconds to
send, check and store; the core that computed it starts its next chunk meanwhile.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from hydracompute.core.config import SchedulerConfig
from tests.agent_support import run_pi_job


class RecordingTransport(httpx.ASGITransport):
    """Keeps each exchange's body and answer, in order."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.exchanges: list[tuple[dict[str, Any], dict[str, Any]]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        if request.url.path.endswith("/exchange"):
            body = json.loads(request.content)
            answer = json.loads(await response.aread())
            self.exchanges.append((body, answer))
        return response


def test_the_next_chunk_is_asked_for_before_the_last_result_is_sent(tmp_path: Path) -> None:
    config = SchedulerConfig(target_chunk_s=0.01, heartbeat_s=5.0)
    transport = run_pi_job(tmp_path, RecordingTransport, config, 8 * 2**20, 5)
    exchanges = transport.exchanges
    with_results = [n for n, (body, _) in enumerate(exchanges) if body["results"]]
    assert len(with_results) >= 3  # several chunks, one result each
    for n in with_results:
        asked, answer = exchanges[n - 1]
        # Just before: asked for a chunk, sending nothing ...
        assert asked["results"] == [] and asked["want"] == 1
        # ... and the chunk it got (if the job had any left) was running when the result
        # went.
        running = set(exchanges[n][0]["running"])
        assert {lease["lease_id"] for lease in answer["leases"]} <= running
        assert len(exchanges[n][0]["results"]) == 1
    granted = sum(len(answer["leases"]) for _, answer in exchanges)
    assert granted == len(with_results)  # every chunk granted came back with its result
