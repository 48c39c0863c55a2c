"""The worker's link to its coordinator: steady backoff, saying when it reconnected, taking
up its identity with other cores or kinds, and the CA it pinned kept between runs."""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hydracompute import tls
from hydracompute.coordinator.app import create_app
from hydracompute.core.config import SchedulerConfig
from hydracompute.core.models import CredentialKind
from hydracompute.errors import Unauthorized
from hydracompute.kinds import default_registry
from hydracompute.store import MemoryBackend, Store
from hydracompute.worker import pinning
from hydracompute.worker.link import (
    BACKOFF_JITTER,
    FIRST_BACKOFF_S,
    MAX_BACKOFF_S,
    CoordinatorLink,
    Enrolment,
    backoff_s,
    load_identity,
)

# --- backoff ---------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(20))
def test_delays_grow_to_the_cap_and_never_jump_back(seed: int) -> None:
    draw = random.Random(seed).random
    delays = [backoff_s(attempt, draw) for attempt in range(1, 40)]
    assert FIRST_BACKOFF_S * (1 - BACKOFF_JITTER) <= delays[0] <= FIRST_BACKOFF_S
    assert all(d <= MAX_BACKOFF_S for d in delays)
    assert delays[-1] >= MAX_BACKOFF_S * (1 - BACKOFF_JITTER)
    for before, after in itertools.pairwise(delays):
        assert after >= before * (1 - BACKOFF_JITTER)  # never much shorter than the last
        if after < MAX_BACKOFF_S * (1 - BACKOFF_JITTER):
            assert after > before  # still growing below the cap


def test_the_extremes_of_the_jitter_keep_the_order() -> None:
    for attempt in range(1, 12):
        shortest_next = backoff_s(attempt + 1, lambda: 0.999999)
        assert shortest_next >= backoff_s(attempt, lambda: 0.0) * (1 - BACKOFF_JITTER)


# --- reconnecting ----------------------------------------------------------------------------


class Outage:
    """A coordinator unreachable for the first ``failures`` requests, then answering; time
    passes only through the link's sleeps (recorded)."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.now = 1000.0
        self.sleeps: list[float] = []

    def handle(self, request: httpx.Request) -> httpx.Response:
        if self.failures > 0:
            self.failures -= 1
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200, json={"ok": True})

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_after_an_outage_the_link_says_once_that_it_reconnected(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="hydracompute.worker")
    outage = Outage(failures=6)

    async def scenario() -> None:
        transport = httpx.MockTransport(outage.handle)
        async with httpx.AsyncClient(base_url="http://pool", transport=transport) as http:
            link = CoordinatorLink(
                "http://pool", http, lambda: False, sleep=outage.sleep, clock=lambda: outage.now
            )
            assert await link.request("/x", {}) == {"ok": True}
            assert await link.request("/x", {}) == {"ok": True}  # no outage: nothing said
            assert link.error == "" and link.outage_since is None

    asyncio.run(scenario())
    assert len(outage.sleeps) == 6
    for before, after in itertools.pairwise(outage.sleeps):
        assert after > before
    reconnected = [m for m in caplog.messages if m.startswith("reconnected")]
    assert reconnected == [
        f"reconnected to the coordinator at http://pool after {sum(outage.sleeps):.1f} s"
    ]
    retries = [r for r in caplog.records if "retrying in" in r.message]
    assert len(retries) == 6 and all(r.levelno == logging.WARNING for r in retries)


# --- taking up the identity ------------------------------------------------------------------


def test_a_worker_with_other_cores_and_kinds_rejoins_as_itself_without_its_spent_token(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hydracompute.worker")
    identity = tmp_path / "worker.json"

    async def scenario() -> None:
        store = Store(MemoryBackend(), default_registry(), SchedulerConfig())
        _, once = store.credentials.issue(
            CredentialKind.JOIN_TOKEN, "once", time.time(), max_uses=1
        )
        app = create_app(store)
        transport = httpx.ASGITransport(app=app)

        async def join(cores: int, kinds: list[str], token: str = once) -> str:
            async with httpx.AsyncClient(base_url="http://pool", transport=transport) as http:
                link = CoordinatorLink("http://pool", http, lambda: False)
                await link.join(Enrolment(token, "laptop", cores, kinds, identity))
                return link.worker_id

        try:
            first = await join(1, ["pi"])
            again = await join(4, ["mandelbrot", "pi"])
            assert again == first
            (worker,) = store.list_workers()
            assert (worker.worker_id, worker.cores, worker.kinds) == (
                first,
                4,
                ["mandelbrot", "pi"],
            )
            saved = load_identity(identity)
            assert saved is not None and (saved["cores"], saved["kinds"]) == (
                4,
                ["mandelbrot", "pi"],
            )
            # Removed by the admin: the saved identity is refused, and the spent token too,
            # saying why.
            store.remove_worker(first, time.time())
            with pytest.raises(Unauthorized, match="used up"):
                await join(4, ["pi"])
            with pytest.raises(Unauthorized, match="no join token was given"):
                await join(4, ["pi"], token="")
        finally:
            await app.state.coordinator.stop()

    asyncio.run(scenario())
    assert any(m.endswith("now with 4 core(s) for mandelbrot, pi") for m in caplog.messages)
    assert any("no longer accepts worker" in m for m in caplog.messages)


# --- the pinned CA ---------------------------------------------------------------------------

#: Nothing listens here: a verification that needed the network would fail.
UNREACHABLE = "https://127.0.0.1:9"


@pytest.fixture
def ca(tmp_path: Path) -> Iterator[tuple[bytes, str]]:
    paths = tls.ensure_certificates(tmp_path / "tls", ["127.0.0.1"])
    yield paths.ca_cert.read_bytes(), paths.ca_fingerprint


def test_a_kept_ca_is_trusted_again_without_a_fingerprint(
    tmp_path: Path, ca: tuple[bytes, str]
) -> None:
    pem, fingerprint = ca
    kept = pinning.pinned_ca_path(tmp_path / "w" / "worker.json")
    assert kept == tmp_path / "w" / "worker.ca.pem"
    assert pinning.verification(UNREACHABLE, None, kept) is True  # nothing pinned yet
    kept.parent.mkdir()
    kept.write_bytes(pem)
    context = pinning.verification(UNREACHABLE, None, kept)
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode is ssl.CERT_REQUIRED
    (trusted,) = context.get_ca_certs()
    common_name = tls.x509.load_pem_x509_certificate(pem).subject.rfc4514_string()
    assert f"commonName={common_name.removeprefix('CN=')}" in str(trusted["subject"]).replace(
        "', '", "="
    )
    # Given the fingerprint it already has, it fetches nothing either.
    assert isinstance(pinning.verification(UNREACHABLE, fingerprint, kept), ssl.SSLContext)
    # A plain-HTTP pool pins nothing.
    assert pinning.verification("http://127.0.0.1:9", None, kept) is True


def test_another_fingerprint_than_the_kept_cas_is_checked_against_the_coordinator(
    tmp_path: Path, ca: tuple[bytes, str]
) -> None:
    pem, _ = ca
    kept = tmp_path / "worker.ca.pem"
    kept.write_bytes(pem)
    with pytest.raises(tls.CoordinatorUnavailable):  # it has to fetch, and cannot
        pinning.verification(UNREACHABLE, "sha256:" + "ab" * 32, kept)
    assert kept.read_bytes() == pem
