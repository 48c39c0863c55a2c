"""The Python client's own logic, against a stand-in coordinator (httpx.MockTransport)."""

from __future__ import annotations

import httpx

from hydracompute.client import Client


def test_waiting_slows_down_when_over_the_rate_limit() -> None:
    answers = iter(
        [
            (429, {"title": "Too many requests", "status": 429, "retry_after_s": 0}),
            (200, {"job_id": "j1", "state": "running"}),
            (429, {"title": "Too many requests", "status": 429, "retry_after_s": 0}),
            (200, {"job_id": "j1", "state": "done", "answer": {"x": 1}}),
        ]
    )
    seen = []

    def coordinator(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        status, body = next(answers)
        body = {"type": "about:blank", "detail": "slow down", **body} if status >= 400 else body
        return httpx.Response(status, json=body)

    client = Client("http://pool.test", api_key="k", transport=httpx.MockTransport(coordinator))
    info = client.job("j1").wait(poll_s=0.001)
    assert info.answer == {"x": 1}
    assert seen == ["/api/v1/jobs/j1"] * 4
