"""Clients of a pool of several coordinators: the worker's link, the Python client and the
worker's command line move to the next coordinator when one cannot be reached, at once,
and the link goes back to its first (against stand-in coordinators: httpx.MockTransport)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click
import httpx
import pytest

from hydracompute.cli.worker import load_rules
from hydracompute.client import Client
from hydracompute.worker.link import PREFERRED_RETRY_S, CoordinatorLink, has_identity


class Pool:
    """Stand-in coordinators by host: ``down`` ones refuse connections, ``failing`` ones
    answer 503; time passes only through the link's sleeps."""

    def __init__(self) -> None:
        self.down: set[str] = set()
        self.failing: set[str] = set()
        self.served: list[str] = []
        self.now = 0.0
        self.sleeps: list[float] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        if host in self.down:
            raise httpx.ConnectError("connection refused", request=request)
        if host in self.failing:
            problem = {"title": "Store unavailable", "status": 503, "detail": "locked"}
            return httpx.Response(503, json=problem, headers={"Retry-After": "1"})
        self.served.append(host)
        return httpx.Response(200, json={"host": host})

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_the_link_moves_to_the_next_coordinator_at_once_and_goes_back_later() -> None:
    pool = Pool()

    async def scenario() -> None:
        transport = httpx.MockTransport(pool.handle)
        async with httpx.AsyncClient(transport=transport) as http:
            link = CoordinatorLink(
                ["http://a", "http://b/"],
                http,
                lambda: False,
                sleep=pool.sleep,
                clock=lambda: pool.now,
            )
            assert await link.request("/x", {}) == {"host": "a"}
            pool.down.add("a")
            assert await link.request("/x", {}) == {"host": "b"}  # the same request
            assert pool.sleeps == []  # without waiting
            assert link.url == "http://b"
            pool.down.discard("a")
            assert await link.request("/x", {}) == {"host": "b"}  # not back yet
            pool.now += PREFERRED_RETRY_S
            assert await link.request("/x", {}) == {"host": "a"}  # back to its first
            pool.failing.add("a")  # a 5xx moves it too
            assert await link.request("/x", {}) == {"host": "b"}
            assert pool.sleeps == []

    asyncio.run(scenario())
    assert pool.served == ["a", "b", "b", "a", "b"]


def test_the_link_waits_only_once_every_coordinator_has_failed() -> None:
    pool = Pool()
    pool.down = {"a", "b"}

    async def scenario() -> None:
        async def sleep(seconds: float) -> None:
            await pool.sleep(seconds)
            if len(pool.sleeps) == 2:
                pool.down.discard("b")

        transport = httpx.MockTransport(pool.handle)
        async with httpx.AsyncClient(transport=transport) as http:
            link = CoordinatorLink(
                ["http://a", "http://b"], http, lambda: False, sleep=sleep, clock=lambda: pool.now
            )
            assert await link.request("/x", {}) == {"host": "b"}

    asyncio.run(scenario())
    assert len(pool.sleeps) == 2  # one wait per round of both, growing
    assert pool.sleeps[1] > pool.sleeps[0]


def test_the_client_tries_the_next_coordinator_when_one_cannot_be_reached() -> None:
    pool = Pool()
    pool.down.add("a")
    client = Client("http://a http://b", api_key="k", transport=httpx.MockTransport(pool.handle))
    assert client.urls == ["http://a", "http://b"]
    assert client.request("GET", "/api/v1/health").json() == {"host": "b"}
    assert client.url == "http://b"  # used from then on
    listed = Client(
        ["http://a", "http://b"], api_key="k", transport=httpx.MockTransport(pool.handle)
    )
    assert listed.urls == ["http://a", "http://b"]


def test_an_identity_is_the_pools_whichever_of_its_coordinators_is_named(tmp_path: Path) -> None:
    path = tmp_path / "w.json"
    path.write_text('{"url": "https://a", "urls": ["https://a", "https://b"], "secret": "s"}')
    assert has_identity(path, ["https://b", "https://a"])
    assert has_identity(path, "https://b/")
    assert not has_identity(path, ["https://c"])
    path.write_text('{"url": "https://a", "secret": "s"}')  # written before pools had several
    assert has_identity(path, ["https://a"])


def test_the_worker_config_may_list_the_coordinators(tmp_path: Path) -> None:
    config = tmp_path / "worker.toml"
    config.write_text('coordinators = ["https://a:8765/", "https://b:8765"]\ncores = 1\n')
    rules, _, urls = load_rules(config, None, {})
    assert urls == ["https://a:8765", "https://b:8765"] and rules.cores == 1
    _, _, given = load_rules(config, None, {}, ("https://c:8765",))
    assert given == ["https://c:8765"]  # the command line wins
    config.write_text('coordinators = ["ftp://a"]\n')
    with pytest.raises(click.UsageError, match="coordinators must be a list"):
        load_rules(config, None, {})
