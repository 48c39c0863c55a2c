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


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stops_within_a_second_with_an_idle_keep_alive_tls_client(
    tmp_path: Path, sig: signal.Signals
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
            tls.sendall(b"GET /api/v1/health HTTP/1.1\r\nHost: coordinator\r\n\r\n")
            answer = b""
            while b'"status":"ok"' not in answer:
                answer += tls.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200 ")
            assert b"connection: close" not in answer.lower()  # kept alive, now idle
            started = time.monotonic()
            coordinator.process.send_signal(sig)
            coordinator.process.wait(timeout=10)
            elapsed_s = time.monotonic() - started
    finally:
        stop(coordinator.process)
    log = (tmp_path / "pool" / "coordinator.log").read_text()
    assert "ERROR" not in log
    assert elapsed_s < 1.5
