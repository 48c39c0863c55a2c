"""Every error leaves the coordinator as an RFC 9457 JSON problem document."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.routing import Match

from hydracompute.errors import (
    HydraError,
    InvalidParams,
    StoreUnavailable,
    TooManyRequests,
    Unauthorized,
)

PROBLEM_MEDIA_TYPE = "application/problem+json"
log = logging.getLogger("hydracompute.coordinator")


def problem_document(status: int, title: str, detail: str, **extra: Any) -> dict[str, Any]:
    """An RFC 9457 problem document (to send as :data:`PROBLEM_MEDIA_TYPE`)."""
    return {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}


def problem(
    status: int, title: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body = problem_document(status, title, detail, **extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


async def _hydra_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HydraError)
    extra = dict(exc.extra)
    if isinstance(exc, InvalidParams):
        extra["errors"] = exc.errors
    headers = None
    if isinstance(exc, Unauthorized):
        headers = {"WWW-Authenticate": "Bearer"}
    elif isinstance(exc, TooManyRequests | StoreUnavailable):
        headers = {"Retry-After": str(extra.get("retry_after_s", 1))}
    return problem(exc.status, exc.title, exc.detail, headers, **extra)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    # Like a kind's parameter errors: one message per field, keyed by its location.
    errors: dict[str, str] = {}
    for error in exc.errors():
        where = ".".join(str(part) for part in error.get("loc", ())) or "body"
        errors.setdefault(where, str(error.get("msg", "invalid")))
    detail = "; ".join(f"{k}: {v}" for k, v in errors.items()) or "invalid request"
    return problem(422, "Invalid request", detail, errors=errors)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 400:
        # FastAPI's only 400 is a body it could not parse (e.g. not UTF-8): malformed input.
        return problem(422, "Invalid request", f"the request body is not valid JSON: {exc.detail}")
    title = {404: "Not found", 405: "Method not allowed", 413: "Request too large"}.get(
        exc.status_code, "HTTP error"
    )
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        # Starlette names the methods of the first route whose path matched; RFC 9110
        # wants every method of the resource, which several routes may share.
        headers["Allow"] = ", ".join(sorted(allowed_methods(request)))
    return problem(exc.status_code, title, str(exc.detail), headers)


#: The methods a 405's ``Allow`` may name.
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> set[str]:
    """Every method the application's routes accept at the request's path (each method
    tried against the routes, as the router would match it)."""
    routes = request.app.router.routes
    return {
        method
        for method in METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    }


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem(500, "Internal error", "the coordinator failed; the error is in its log")


async def response_for(request: Request, exc: Exception) -> JSONResponse:
    """The problem document for ``exc``, as the handlers :func:`install` registers give it."""
    if isinstance(exc, HydraError):
        return await _hydra_error(request, exc)
    if isinstance(exc, RequestValidationError):
        return await _validation_error(request, exc)
    if isinstance(exc, HTTPException):
        return await _http_error(request, exc)
    return await _unexpected(request, exc)


def install(app: FastAPI) -> None:
    app.add_exception_handler(HydraError, _hydra_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
