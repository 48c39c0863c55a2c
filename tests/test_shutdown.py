"""A coordinator process stops promptly and quietly, even with idle clients connected."""

from __future__ import annotations

import signal
import socket
import ssl
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from hydracompute.demo import start_coordinator, stop

pytestmark = pytest.mark.e2e


HEALTH = b"GET /api/v1/health HTTP/1.1\r\nHost: coordinator\r\n\r\n"
#: Refused by the HTTP parser: the coordinator closes the connection (gracefully, over
#: TLS: it waits for the client's close_notify, which an idle client never sends).
MALFORMED = b"POST /api/v1/jobs HTTP/1.1\r\nHost: coordinator\r\nContent-Length: 1x\r\n\r\n"


@pytest.mark.parametrize(
    ("sig", "request_bytes", "answered"),
    [
        (signal.SIGTERM, HEALTH, b'"status":"ok"'),
        (signal.SIGINT, HEALTH, b'"status":"ok"'),
        (signal.SIGTERM, MALFORMED, b'"status": 400'),
    ],
    ids=["sigterm", "sigint", "sigterm-after-a-refusal"],
)
def test_stops_within_a_second_and_a_half_with_an_idle_tls_client(
    tmp_path: Path, sig: signal.Signals, request_bytes: bytes, answered: bytes
) -> None:
    coordinator = start_coordinator(tmp_path / "pool")
    url = urlsplit(coordinator.url)
    assert url.scheme == "https" and url.hostname is not None and url.port is not None
    context = ssl.create_default_context(cafile=tmp_path / "pool" / "tls" / "ca.pem")
    try:
        with (
            socket.create_connection((url.hostname, url.port)) as raw,
            context.wrap_socket(raw, server_hostname=url.hostname) as tls,
        ):
            tls.sendall(request_bytes)
            answer = b""
            while answered not in answer:
                answer += tls.recv(65536)
            # The client now sits idle on its connection, reading nothing.
            started = time.monotonic()
            coordinator.process.send_signal(sig)
            coordinator.process.wait(timeout=10)
            elapsed_s = time.monotonic() - started
    finally:
        stop(coordinator.process)
    log = (tmp_path / "pool" / "coordinator.log").read_text()
    assert "ERROR" not in log
    assert elapsed_s < 1.5
