"""What several benchmark scripts share."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
import sys
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Children started inside write their standard output to our standard error (so that
    workers' farewells do not mix with a script's ``--json`` output)."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


class Connection:
    """One keep-alive HTTP/1.1 connection: a request at a time, JSON in and out."""

    def __init__(
        self, host: str, port: int, tls: ssl.SSLContext | None, local_address: str | None = None
    ) -> None:
        self.host, self.port, self.tls = host, port, tls
        #: The source address to connect from (a loopback address of its own plays another
        #: machine: the coordinator limits enrolments per address).
        self.local_address = local_address
        #: Longest wait for one answer, connecting included.
        self.timeout_s = 120.0
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, body: Any = None, token: str = ""
    ) -> tuple[int, dict[str, str], bytes]:
        payload = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        message = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n{auth}"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        ).encode() + payload
        reused = self.writer is not None
        try:
            return await self._send(message)
        except (asyncio.IncompleteReadError, ConnectionError):
            if not reused:
                raise
            # The server closed the idle connection as this request went out: as an
            # HTTP client does, open a new one and send it again.
            return await self._send(message)

    async def _send(self, message: bytes) -> tuple[int, dict[str, str], bytes]:
        """One request and its answer; the connection is closed if anything goes wrong
        (a half-read answer would be taken for the next one's)."""
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._exchange(message)
        except BaseException:
            await self.close()
            raise

    async def _exchange(self, message: bytes) -> tuple[int, dict[str, str], bytes]:
        if self.writer is None:
            local = None if self.local_address is None else (self.local_address, 0)
            self.reader, self.writer = await asyncio.open_connection(
                self.host, self.port, ssl=self.tls, limit=2**24, local_addr=local
            )
        assert self.reader is not None
        self.writer.write(message)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if "content-length" not in headers:  # the coordinator always sends one
            raise ConnectionError(f"an answer without Content-Length: {head[:200]!r}")
        data = await self.reader.readexactly(int(headers["content-length"]))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, headers, data

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


async def enrol(
    connection: Connection,
    join_token: str,
    name: str,
    cores: int,
    slots: asyncio.Semaphore | None = None,
) -> tuple[dict[str, Any], int]:
    """Enrol a simulated π worker over ``connection`` (each request under ``slots``, if
    given), waiting as asked whenever the coordinator answers 429: it limits enrolments per
    address, and a real pool's workers come from many. Returns the enrolment (its
    ``worker_id`` and ``secret``) and how many times the coordinator asked to slow down."""
    body = {"join_token": join_token, "name": name, "cores": cores, "kinds": ["pi"]}
    slowed = 0
    while True:
        async with slots or contextlib.nullcontext():
            status, headers, data = await connection.request("POST", "/api/v1/workers", body)
        if status != 429:
            break
        slowed += 1
        await asyncio.sleep(float(headers.get("retry-after", "1")))
    if status != 201:
        raise RuntimeError(f"enrolment refused: {status} {data[:300]!r}")
    return json.loads(data), slowed
