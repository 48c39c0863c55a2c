"""Request bodies read under a size limit: larger ones are refused with a 413."""

from __future__ import annotations

import json
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: The one request that carries bulk data: a worker's results.
EXCHANGE_PATH = re.compile(r"^/api/v1/workers/([^/]+)/exchange$")
#: Bodies read by their route as they arrive, under its own limit (blob uploads).
STREAMED_PATH = re.compile(r"^/api/v1/blobs/[0-9a-f]{64}$")


class BodyTooLarge(Exception):
    """The request's body is over its limit (announced or streamed)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"this request's body is limited to {limit} bytes")


class ClientGone(Exception):
    """The client disconnected before the whole body arrived."""


def announced_too_large(headers: list[tuple[bytes, bytes]], limit: int) -> bool:
    """Whether the ``Content-Length`` header is malformed or over ``limit``."""
    for name, value in headers:
        if name == b"content-length" and (not value.isdigit() or int(value) > limit):
            return True
    return False


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The request's whole body, read up to ``limit`` bytes.

    Raises:
        BodyTooLarge: the body is announced or sent larger than ``limit``.
        ClientGone: the client went away first.
    """
    if announced_too_large(scope.get("headers", []), limit):
        raise BodyTooLarge(limit)
    message: Message = await receive()
    if message["type"] != "http.request":
        raise ClientGone
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):  # the usual case: one message
        if len(body) > limit:
            raise BodyTooLarge(limit)
        return body
    chunks, size = [body], len(body)
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def refuse_too_large(send: Send, refusal: BodyTooLarge) -> None:
    """Answer a 413 problem document and close the connection."""
    body = json.dumps(
        {"type": "about:blank", "title": "Request too large", "status": 413, "detail": str(refusal)}
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


class BodySizeLimit:
    """Refuse bodies larger than ``max_bytes``, announced or streamed.

    The body is read (up to the limit) before the application sees the request, so an
    oversized one is refused with a 413 however it is sent, and the application then reads
    it from memory as it would have anyway. (A worker's exchange, which may carry a batch
    of Mandelbrot tiles, has a larger limit of its own: see
    :class:`~hydracompute.coordinator.fastpath.ExchangeFastPath`.)
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A blob upload streams its body to the blob store under a limit of its own
        # (routes_blobs): it is passed on unread.
        streamed = scope["type"] == "http" and scope["method"] == "PUT"
        if scope["type"] != "http" or (streamed and STREAMED_PATH.match(scope["path"])):
            await self.app(scope, receive, send)
            return
        try:
            body = await read_body(scope, receive, self.max_bytes)
        except BodyTooLarge as exc:
            await refuse_too_large(send, exc)
            return
        except ClientGone:
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
