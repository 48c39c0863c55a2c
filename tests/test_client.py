"""The Python client's own logic, against a stand-in coordinator (httpx.MockTransport), and
how it finds its coordinator."""

from __future__ import annotations

import httpx
import pytest

from hydracompute import connection
from hydracompute.client import Client
from hydracompute.connection import DEFAULT_URL, Connection, resolve, save_profile
from hydracompute.errors import CoordinatorUnavailable, InvalidParams, InvalidRequest


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


def recording_transport(seen: list[httpx.Request]) -> httpx.MockTransport:
    def coordinator(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"jobs": [], "job_id": "j1", "state": "running"})

    return httpx.MockTransport(coordinator)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_a_nan_or_infinite_parameter_is_refused_by_name_and_nothing_is_sent(
    value: float,
) -> None:
    seen: list[httpx.Request] = []
    client = Client("http://pool.test", api_key="k", transport=recording_transport(seen))
    with pytest.raises(InvalidParams) as refused:
        client.submit("pi", samples=value)
    assert refused.value.errors == {
        "samples": "must be a finite number (JSON has no NaN or infinity)"
    }
    with pytest.raises(InvalidParams, match=r"center\[1\]"):
        client.submit("custom", center=[0.0, value])
    with pytest.raises(InvalidRequest, match="target_chunk_s"):
        client.submit("pi", samples=10, target_chunk_s=value)
    with pytest.raises(InvalidRequest, match="expires_in_s"):
        client.request("POST", "/api/v1/keys", json={"role": "viewer", "expires_in_s": value})
    assert seen == []


def test_client_without_arguments_uses_the_environment_then_the_saved_login(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[httpx.Request] = []
    save_profile({"url": "http://saved.test/", "api_key": "saved-key"})
    Client(transport=recording_transport(seen)).jobs()
    # The profile's key belongs to its pool: not sent to another URL.
    Client("http://other.test", transport=recording_transport(seen)).jobs()
    monkeypatch.setenv("HYDRACOMPUTE_URL", "http://env.test")
    monkeypatch.setenv("HYDRACOMPUTE_API_KEY", "env-key")
    Client(transport=recording_transport(seen)).jobs()
    Client(api_key="given-key", transport=recording_transport(seen)).jobs()
    assert [(r.url.host, r.headers.get("Authorization")) for r in seen] == [
        ("saved.test", "Bearer saved-key"),
        ("other.test", None),
        ("env.test", "Bearer env-key"),
        ("env.test", "Bearer given-key"),
    ]


def test_resolve_falls_back_on_the_default_url_and_says_so() -> None:
    assert resolve(environ={}) == Connection(DEFAULT_URL, None, None, "default")
    save_profile({"url": "https://pool.test:8765", "api_key": "k", "ca_fingerprint": "sha256:ab"})
    assert resolve(environ={}) == Connection("https://pool.test:8765", "k", "sha256:ab", "profile")
    environ = {"HYDRACOMPUTE_URL": "https://pool.test:8765/", "HYDRACOMPUTE_API_KEY": "e"}
    assert resolve(environ=environ) == Connection(
        "https://pool.test:8765", "e", "sha256:ab", "environment"
    )


def test_no_configured_coordinator_says_how_to_log_in(monkeypatch: pytest.MonkeyPatch) -> None:
    # Nothing listens on the discard port: the stand-in for "no coordinator on this machine".
    monkeypatch.setattr(connection, "DEFAULT_URL", "http://127.0.0.1:9")
    with Client() as client, pytest.raises(CoordinatorUnavailable) as refused:
        client.jobs()
    assert "no coordinator is configured" in refused.value.detail
    assert "hydracompute login URL" in refused.value.detail
    with Client("http://127.0.0.1:9") as client, pytest.raises(CoordinatorUnavailable) as plain:
        client.jobs()
    assert "no coordinator is configured" not in plain.value.detail
