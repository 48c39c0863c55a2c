"""A pure ASGI middleware that refuses request bodies over a size limit with a 413."""

from __future__ import annotations

import json
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: The one request that carries bulk data: a worker's results.
EXCHANGE_PATH = re.compile(r"^/api/v1/workers/([^/]+)/exchange$")


class BodySizeLimit:
    """Refuse bodies larger than the limit, announced or streamed.

    Most requests are small (``max_bytes``). A worker's exchange may carry a batch of
    Mandelbrot tiles (``max_exchange_bytes``), but only when it presents a bearer
    credential: nobody anonymous gets to make the coordinator read and parse megabytes.
    The body is read (up to the limit) before the application sees the request, so an
    oversized one is refused with a 413 however it is sent, and the application then reads
    it from memory as it would have anyway.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, max_exchange_bytes: int) -> None:
        self.app, self.max_bytes, self.max_exchange_bytes = app, max_bytes, max_exchange_bytes

    def _limit(self, scope: Scope) -> int:
        headers = dict(scope.get("headers", []))
        bearer = headers.get(b"authorization", b"").lower().startswith(b"bearer ")
        if bearer and scope.get("method") == "POST" and EXCHANGE_PATH.match(scope["path"]):
            return self.max_exchange_bytes
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope)
        for name, value in scope.get("headers", []):
            if name == b"content-length" and (not value.isdigit() or int(value) > limit):
                await self._refuse(send, limit)
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._refuse(send, limit)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send, limit: int) -> None:
        body = json.dumps(
            {
                "type": "about:blank",
                "title": "Request too large",
                "status": 413,
                "detail": f"this request's body is limited to {limit} bytes",
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/problem+json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
