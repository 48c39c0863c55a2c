"""The exchange route dispatched directly: a worker's exchange is the coordinator's busiest
request, and FastAPI's generic dispatch (routing through every router, dependency solving,
five middleware layers, request and response objects) cost more CPU than the exchange's own
work.

:class:`ExchangeFastPath` sits in front of the whole application. It recognises
``POST /api/v1/workers/{worker_id}/exchange``, reads the body under the exchange's limit,
parses and validates it against the same model FastAPI would (:class:`ExchangeIn`, strict),
checks the headers' documented limits, and calls the route's own logic
(:func:`routes_workers.answer_exchange`); refusals become the same problem documents as
anywhere else. Every other request goes on, under the ordinary body limit
(:class:`BodySizeLimit`), to FastAPI. The route stays declared in FastAPI, which is where
its documentation (and the OpenAPI schema) comes from.
"""

from __future__ import annotations

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from hydracompute.coordinator import problems
from hydracompute.coordinator.authfirst import AuthenticateFirst
from hydracompute.coordinator.limits import (
    EXCHANGE_PATH,
    BodySizeLimit,
    BodyTooLarge,
    ClientGone,
    read_body,
    refuse_too_large,
)
from hydracompute.coordinator.routes_workers import (
    MAX_AUTHORIZATION_CHARS,
    answer_exchange,
    authenticate_worker_scope,
    client_host,
)
from hydracompute.coordinator.schemas import ExchangeIn

_JSON_HEADERS = [(b"content-type", b"application/json")]


class ExchangeFastPath:
    """The exchange, straight to its route; everything else to ``app`` under ``max_bytes``.

    An exchange's body may be up to ``max_exchange_bytes`` (a batch of Mandelbrot tiles),
    but only when it presents a bearer credential: nobody anonymous gets to make the
    coordinator read and parse megabytes.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, max_exchange_bytes: int) -> None:
        self.app = AuthenticateFirst(BodySizeLimit(app, max_bytes))
        self.max_bytes, self.max_exchange_bytes = max_bytes, max_exchange_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = None
        if scope["type"] == "http" and scope["method"] == "POST":
            match = EXCHANGE_PATH.match(scope["path"])
        if match is None:
            await self.app(scope, receive, send)
            return
        authorization = content_type = None
        for name, value in scope["headers"]:  # the first of each, as Starlette reads them
            if name == b"authorization" and authorization is None:
                authorization = value.decode("latin-1")
            elif name == b"content-type" and content_type is None:
                content_type = value.decode("latin-1")
        errors = _header_errors(content_type, authorization)
        worker_id = match.group(1)
        if not errors:
            # The worker's credentials before its body: nobody else makes the coordinator
            # read and parse up to 64 MiB.
            try:
                await authenticate_worker_scope(scope, worker_id, in_store=True)
            except Exception as exc:
                await _refuse(scope, receive, send, exc)
                return
        try:
            body = await read_body(
                scope, receive, self.max_bytes if errors else self.max_exchange_bytes
            )
        except BodyTooLarge as exc:
            await refuse_too_large(send, exc)
            return
        except ClientGone:
            return
        try:
            try:
                parsed = ExchangeIn.model_validate_json(body)
            except ValidationError as exc:
                errors += [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
                parsed = None
            if errors or parsed is None:
                raise RequestValidationError(errors)
            state = scope["app"].state
            answer = await answer_exchange(
                state.coordinator,
                state.security,
                worker_id,
                parsed,
                authorization,
                client_host(scope),
                len(body),
                authenticated=True,
            )
        except Exception as exc:
            await _refuse(scope, receive, send, exc)
            return
        headers = [*_JSON_HEADERS, (b"content-length", b"%d" % len(answer))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})


async def _refuse(scope: Scope, receive: Receive, send: Send, exc: Exception) -> None:
    """The same problem documents as FastAPI's handlers give."""
    response = await problems.response_for(Request(scope), exc)
    # A refusal's traceback holds the frames it passed through, this one (and so the body)
    # among them, in a reference cycle through the awaited future: it would live until the
    # coordinator's next garbage collection.
    exc.__traceback__ = None
    await response(scope, receive, send)


def _header_errors(content_type: str | None, authorization: str | None) -> list[dict[str, object]]:
    errors: list[dict[str, object]] = []
    if (content_type or "").split(";")[0].strip().lower() not in ("application/json", ""):
        errors.append({"loc": ("body",), "msg": "send the body as application/json"})
    if len(authorization or "") > MAX_AUTHORIZATION_CHARS:
        errors.append(
            {
                "loc": ("header", "authorization"),
                "msg": f"String should have at most {MAX_AUTHORIZATION_CHARS} characters",
            }
        )
    return errors
