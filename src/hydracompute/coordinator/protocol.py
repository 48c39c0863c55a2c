"""The coordinator's HTTP/1.1 connection protocol: uvicorn's httptools protocol, leaner
between requests.

Every connected worker keeps a connection open (it exchanges about every 2 s), so what a
connection holds while idle is multiplied by the size of the pool. uvicorn's protocol keeps
its last request until the next one arrives: the ASGI scope with every header and what the
application stored in it, the request body, an event, the cycle object. Measured with
``bench/bench_memory.py``, that was 6 KB of each of 5,000 connections, about 30 MB. This
protocol forgets a request once it is answered and has arrived whole. It depends on
uvicorn's internals (``cycle``, ``scope``, ``pipeline`` and the order of its callbacks);
``tests/test_protocol.py`` exercises them against the uvicorn installed.

It also cancels the keep-alive timer of a connection lost with an error (a reset, a
timeout); uvicorn cancels it only on a clean close, and until the timer fired (one keep-alive
timeout later) it held the whole connection in memory.

A request its HTTP parser refuses (a malformed ``Content-Length``, request line or header)
gets a 400 problem document, like every other refusal of the coordinator, instead of
uvicorn's plain text.

It guards the coordinator against clients that would exhaust it before any request
reaches the application (see :class:`ConnectionLimits` and docs/security.md): a request's
head (request line and headers) is bounded in bytes and in headers (431), must arrive
within a few seconds of its first byte, or of the connection's opening (408, or a plain
close if nothing came), and one address holds at most so many connections at once (503).
httptools has no header limit of its own: it buffers an unfinished header whole, so the
bytes of an unfinished head are counted as they arrive.

And it drops idle connections at once when the server shuts down. uvicorn closes them
gracefully, which over TLS means waiting for the client's ``close_notify``: a client idle
on a keep-alive connection reads nothing until its next request, so it never answers, and
every shutdown with one connected waited out uvicorn's whole graceful timeout (5 s) and
logged "ERROR: Cancel 0 running task(s), timeout graceful shutdown exceeded".
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from hydracompute.coordinator.problems import PROBLEM_MEDIA_TYPE, problem_document


@dataclass(frozen=True)
class ConnectionLimits:
    """What one connection may send or hold before the application sees a request.

    Attributes:
        max_head_bytes: bytes of a request's line and headers (431 beyond).
        max_headers: headers in one request (431 beyond).
        head_timeout_s: a request's head must arrive whole within this long of its first
            byte, and a new connection's first request within this long of its opening
            (408, or closed if nothing came): against clients that trickle a head to hold
            connections open (slowloris).
        max_connections_per_address: connections one client address may hold at once
            (503 beyond): a pool behind one NAT address counts as one address.
    """

    max_head_bytes: int = 32 * 1024
    max_headers: int = 100
    head_timeout_s: float = 5.0
    max_connections_per_address: int = 1024

    def __post_init__(self) -> None:
        checks = {
            "max_head_bytes": 1024 <= self.max_head_bytes <= 1024 * 1024,
            "max_headers": 8 <= self.max_headers <= 1000,
            "head_timeout_s": 0.05 <= self.head_timeout_s <= 600,
            "max_connections_per_address": 1 <= self.max_connections_per_address <= 10**6,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"connection limits out of range: {', '.join(bad)}")


class _Refused(Exception):
    """Raised from a parser callback to stop parsing a head that is over its limits."""


class HttpProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` that keeps nothing of an answered request and guards the
    connection (``uvicorn.Config``'s ``http=`` takes the class: :meth:`with_limits` makes
    one per server, with its own count of connections per address)."""

    limits: ClassVar[ConnectionLimits] = ConnectionLimits()
    #: Open connections per client address, of every connection of this class.
    per_address: ClassVar[dict[str, int]] = {}

    @classmethod
    def with_limits(cls, limits: ConnectionLimits) -> type[HttpProtocol]:
        """A protocol class with ``limits`` and a count of connections of its own."""
        return type("HttpProtocol", (cls,), {"limits": limits, "per_address": {}})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Waiting for a request's head (its first byte has arrived if ``_head_bytes``).
        self._awaiting_head = True
        self._head_bytes = 0
        self._headers_seen = 0
        self._head_size = 0  # of the URL and headers parsed so far
        self._head_timer: asyncio.TimerHandle | None = None
        self._address: str | None = None
        #: A refusal decided while parsing: (status, title, detail).
        self._refusal: tuple[int, str, str] | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        address = self.client[0] if self.client else ""
        self._address = address
        count = self.per_address.get(address, 0) + 1
        self.per_address[address] = count
        if count > self.limits.max_connections_per_address:
            self._refuse(
                503,
                "Too many connections",
                f"at most {self.limits.max_connections_per_address} connections per address",
            )
            return
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
            return
        if self._awaiting_head:
            self._head_bytes += len(data)
            if self._head_timer is None:
                self._arm_head_timer()
        super().data_received(data)
        if (
            self._awaiting_head
            and self._head_bytes > self.limits.max_head_bytes
            and not self.transport.is_closing()
        ):
            self._refuse_large_head()

    def on_url(self, url: bytes) -> None:
        self._counted(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers_seen += 1
        self._counted(len(name) + len(value))
        super().on_header(name, value)

    def _counted(self, size: int) -> None:
        # The bytes arrived are counted in data_received; this catches a head that arrived
        # whole in one read larger than the limit, and the number of headers.
        self._head_size += size
        too_many = self._headers_seen > self.limits.max_headers
        if too_many or self._head_size > self.limits.max_head_bytes:
            self._refusal = _large_head(self.limits, too_many)
            raise _Refused

    def on_headers_complete(self) -> None:
        self._awaiting_head = False
        self._head_bytes = self._headers_seen = self._head_size = 0
        self._cancel_head_timer()
        super().on_headers_complete()

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.limits.head_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or not self._awaiting_head:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined request waits (unparsed) for the answer to the one before it.
            self._arm_head_timer()
        elif self._head_bytes:
            self._refuse(
                408,
                "Request timeout",
                f"a request's line and headers must arrive within {self.limits.head_timeout_s:g} s",
            )
        else:
            self.transport.close()

    def _refuse_large_head(self) -> None:
        status, title, detail = _large_head(self.limits, too_many=False)
        self._refuse(status, title, detail)

    def _refuse(self, status: int, title: str, detail: str) -> None:
        """Answer a problem document and close the connection; nothing more is read."""
        self._refusal = (status, title, detail)
        self._cancel_head_timer()
        body = json.dumps(problem_document(status, title, detail)).encode()
        head = [b"HTTP/1.1 %d %s\r\n" % (status, title.encode())]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: %s\r\n" % PROBLEM_MEDIA_TYPE.encode(),
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.cycle is not None:
            self._forget_if_idle(arrived=not self.cycle.more_body)

    def on_message_complete(self) -> None:
        self._awaiting_head = True  # the next request's (its timer starts at its first byte)
        super().on_message_complete()
        # (uvicorn leaves more_body set on a request answered before its body arrived.)
        self._forget_if_idle(arrived=True)

    def _forget_if_idle(self, arrived: bool) -> None:
        # Idle: the latest request (self.cycle) has arrived whole and is answered, and no
        # pipelined one waits. uvicorn reads self.cycle while a body arrives.
        latest = self.cycle
        if latest is not None and arrived and latest.response_complete and not self.pipeline:
            self.cycle = None  # type: ignore[assignment]  # uvicorn checks for None
            # Unless the next request has begun arriving, with a scope of its own.
            if self.scope is latest.scope:
                self.scope = None  # type: ignore[assignment]  # made anew when one begins
                self.headers = []
                self.url = b""

    def send_400_response(self, msg: str) -> None:
        """Refuse a request the parser could not read (uvicorn calls this while handling
        the parser's error, whose message becomes the detail) and close the connection;
        or one whose head a parser callback found over its limits."""
        if self._refusal is not None:
            self._refuse(*self._refusal)
            return
        error = sys.exc_info()[1]
        reason = str(error) if error is not None and str(error) else msg
        body = json.dumps(
            problem_document(400, "Bad request", f"the request is not valid HTTP/1.1: {reason}")
        ).encode()
        head = [b"HTTP/1.1 400 Bad Request\r\n"]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: %s\r\n" % PROBLEM_MEDIA_TYPE.encode(),
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()

    def shutdown(self) -> None:
        """Called by uvicorn's server as it shuts down: an idle connection with nothing left
        to send is dropped (aborted) rather than closed gracefully; one whose request is
        under way is closed once answered, as uvicorn does."""
        idle = self.cycle is None or self.cycle.response_complete
        # Also one already closing gracefully (after a refusal, say), waiting on its client.
        if idle and not self.transport.get_write_buffer_size():
            self.transport.abort()
        else:
            super().shutdown()

    def connection_lost(self, exc: Any) -> None:
        super().connection_lost(exc)
        self._unset_keepalive_if_required()
        self._cancel_head_timer()
        if self._address is not None:
            left = self.per_address.get(self._address, 1) - 1
            if left > 0:
                self.per_address[self._address] = left
            else:
                self.per_address.pop(self._address, None)
            self._address = None


def _large_head(limits: ConnectionLimits, too_many: bool) -> tuple[int, str, str]:
    detail = (
        f"at most {limits.max_headers} headers"
        if too_many
        else f"a request's line and headers are limited to {limits.max_head_bytes} bytes"
    )
    return 431, "Request header fields too large", detail
