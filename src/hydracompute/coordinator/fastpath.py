"""The exchange route dispatched directly: a worker's exchange is the coordinator's busiest
request, and FastAPI's generic dispatch (routing through every router, dependency solving,
exception middleware) cost more CPU than the exchange's own work.

:class:`ExchangeFastPath` recognises ``POST /api/v1/workers/{worker_id}/exchange``, parses
and validates the body against the same model FastAPI would (:class:`ExchangeIn`, strict),
checks the ``Authorization`` header's documented limit, and calls the route's own function
(:func:`routes_workers.exchange`); refusals become the same problem documents as anywhere
else. Every other request goes on to FastAPI. The route stays declared in FastAPI, which
is where its documentation (and the OpenAPI schema) comes from.
"""

from __future__ import annotations

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hydracompute.coordinator import problems
from hydracompute.coordinator.limits import EXCHANGE_PATH
from hydracompute.coordinator.routes_workers import MAX_AUTHORIZATION_CHARS, exchange
from hydracompute.coordinator.schemas import ExchangeIn


class ExchangeFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = None
        if scope["type"] == "http" and scope["method"] == "POST":
            match = EXCHANGE_PATH.match(scope["path"])
        if match is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            body = await _body(receive)
            errors = _header_errors(request)
            try:
                parsed = ExchangeIn.model_validate_json(body)
            except ValidationError as exc:
                errors += [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
                parsed = None
            if errors or parsed is None:
                raise RequestValidationError(errors)
            authorization = request.headers.get("authorization")
            response = await exchange(match.group(1), parsed, request, authorization)
        except Exception as exc:  # the same problem documents as FastAPI's handlers give
            response = await problems.response_for(request, exc)
        await response(scope, receive, send)


async def _body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message: Message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _header_errors(request: Request) -> list[dict[str, object]]:
    content_type = request.headers.get("content-type", "application/json")
    errors: list[dict[str, object]] = []
    if content_type.split(";")[0].strip().lower() not in ("application/json", ""):
        errors.append({"loc": ("body",), "msg": "send the body as application/json"})
    authorization = request.headers.get("authorization", "")
    if len(authorization) > MAX_AUTHORIZATION_CHARS:
        errors.append(
            {
                "loc": ("header", "authorization"),
                "msg": f"String should have at most {MAX_AUTHORIZATION_CHARS} characters",
            }
        )
    return errors
