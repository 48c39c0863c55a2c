"""A worker with a large result asks for its next chunk before it sends the result.

A result can be megabytes (a Mandelbrot chunk's counts) that take tens of milliseconds to
send, check and store; the core that computed it starts its next chunk meanwhile. A small
result (π's counts) goes in the same exchange as the request: one exchange per chunk.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from hydracompute.core.config import SchedulerConfig
from hydracompute.worker import agent
from hydracompute.worker.agent import _payload_over
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


def test_the_next_chunk_is_asked_for_before_a_large_result_is_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agent, "PIPELINE_RESULT_CHARS", 0)  # every result counts as large
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


def test_a_small_result_goes_with_the_request_for_the_next_chunk(tmp_path: Path) -> None:
    config = SchedulerConfig(target_chunk_s=0.01, heartbeat_s=5.0)
    # 256 blocks: the probe's result sizes the next chunk at once, so a job of a few blocks
    # would be one or two chunks.
    transport = run_pi_job(tmp_path, RecordingTransport, config, 256 * 2**20, 5)
    exchanges = transport.exchanges
    with_results = [n for n, (body, _) in enumerate(exchanges) if body["results"]]
    assert len(with_results) >= 3
    # Every result but the last went with a request for the next chunk, which came back
    # in the same answer (the job had work left) ...
    for n in with_results[:-1]:
        body, answer = exchanges[n]
        assert body["want"] == 1 and len(body["results"]) == 1
        assert len(answer["leases"]) == 1
    # ... and no exchange asked for work without sending the result in hand: one exchange
    # per chunk, not two.
    asked_empty = [n for n, (body, _) in enumerate(exchanges) if body["want"] and n > 0]
    assert set(asked_empty) <= set(with_results)
    granted = sum(len(answer["leases"]) for _, answer in exchanges)
    assert granted == len(with_results)


def test_a_result_is_large_by_its_json_size_found_without_walking_all_of_it() -> None:
    assert not _payload_over({"hits": 12, "samples": 1024}, 100)
    assert _payload_over([{"counts": "x" * 200, "iterations": 3}], 100)
    assert not _payload_over([{"counts": "x" * 50}], 100)
    assert _payload_over([list(range(10))], 100)  # numbers count too
    huge = [0] * 10**7
    assert _payload_over(huge, 1000)  # stops early: no time to walk ten million
