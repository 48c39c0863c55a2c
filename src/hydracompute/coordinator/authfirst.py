"""Authentication before the body: a request that needs credentials is refused (401, or 403
for a role or CSRF failure) before its body is read or parsed.

FastAPI reads and parses a route's body before it solves the route's dependencies, so an
unauthenticated request with a malformed body got a 422 describing the body, and made the
coordinator read and parse it first. :class:`AuthenticateFirst` sits in front of the
application (before the body limit reads the body): for the requests that change things
with an API key (jobs, keys, join tokens, workers' administration) it authenticates the
caller and leaves the :class:`~hydracompute.coordinator.auth.Principal` in the request's
scope, where :func:`~hydracompute.coordinator.auth.require` finds it; for a worker's
``/return`` it checks the worker's secret. The exchange does the same in its fast path.
"""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from hydracompute.coordinator import problems
from hydracompute.coordinator.auth import PRINCIPAL_SCOPE_KEY, SAFE_METHODS, authenticate
from hydracompute.coordinator.routes_workers import (
    WORKER_SCOPE_KEY,
    authenticate_worker_scope,
)

#: Changes made with an API key: their bodies are read only once the key is known.
API_KEY_PATHS = re.compile(
    r"^/api/v1/(?:jobs|keys|join-tokens|blobs)(?:/.*)?$"
    r"|^/api/v1/workers/[^/]+(?:/revoke|/labels)?$"
)
#: A worker's requests with a body (besides the exchange, which has its own fast path).
WORKER_PATHS = re.compile(r"^/api/v1/workers/([^/]+)/return$")


class AuthenticateFirst:
    """Authenticate the requests named above before passing them on to ``app``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
            path = scope["path"]
            worker = WORKER_PATHS.match(path)
            try:
                if worker is not None:
                    await authenticate_worker_scope(scope, worker.group(1))
                    scope[WORKER_SCOPE_KEY] = worker.group(1)
                elif API_KEY_PATHS.match(path):
                    state = scope["app"].state
                    request = Request(scope)
                    principal = await authenticate(request, state.coordinator, state.security)
                    scope[PRINCIPAL_SCOPE_KEY] = principal
            except Exception as exc:
                response = await problems.response_for(Request(scope), exc)
                exc.__traceback__ = None
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
