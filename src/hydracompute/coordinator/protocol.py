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

And it drops idle connections at once when the server shuts down. uvicorn closes them
gracefully, which over TLS means waiting for the client's ``close_notify``: a client idle
on a keep-alive connection reads nothing until its next request, so it never answers, and
every shutdown with one connected waited out uvicorn's whole graceful timeout (5 s) and
logged "ERROR: Cancel 0 running task(s), timeout graceful shutdown exceeded".
"""

from __future__ import annotations

import json
import sys
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from hydracompute.coordinator.problems import PROBLEM_MEDIA_TYPE, problem_document


class HttpProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` that keeps nothing of an answered request (``uvicorn.Config``'s
    ``http=`` takes the class)."""

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.cycle is not None:
            self._forget_if_idle(arrived=not self.cycle.more_body)

    def on_message_complete(self) -> None:
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
        the parser's error, whose message becomes the detail) and close the connection."""
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
