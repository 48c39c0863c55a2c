"""Who is asking: API keys (header or signed session cookie), roles and rate limits.

A request is authenticated by ``Authorization: Bearer <API key>``, or by the session cookie
a browser gets from ``POST /api/v1/session``. A cookie-authenticated request that changes
anything must also carry the session's ``X-CSRF-Token``: another site can make a browser
send the cookie (SameSite=Strict already stops modern browsers) but cannot read the token.
Without a credential, a request is refused, unless the coordinator was started with
anonymous read-only access.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from hydracompute.coordinator.ratelimit import FailureLimit, RateLimiter
from hydracompute.coordinator.service import Coordinator
from hydracompute.core.models import CredentialKind, Role
from hydracompute.errors import Forbidden, Unauthorized

SESSION_COOKIE = "hydracompute_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Where :class:`~hydracompute.coordinator.authfirst.AuthenticateFirst` leaves the
#: principal of a request it authenticated before the body was read.
PRINCIPAL_SCOPE_KEY = "hydracompute.principal"


@dataclass
class SecuritySettings:
    """How the coordinator checks requests.

    Attributes:
        anonymous_read: requests without a credential may read (as a viewer).
        metrics_public: ``/metrics`` is served without a credential (else it needs the
            viewer role, as everything a viewer may read).
        session_s: lifetime of a dashboard session.
        secure_cookies: mark cookies Secure (set when serving TLS).
        api_rate_per_s, api_burst: allowance per API key (and per address without one),
            per coordinator; also the allowance of failed sign-ins per address, for the
            whole pool.
        worker_rate_per_s, worker_burst: allowance per worker (exchanges and leaving).
        code_role: the least role that may submit code (wasm jobs and their modules and
            inputs); the pool's admin chooses, admins only by default.
    """

    anonymous_read: bool = False
    metrics_public: bool = False
    session_s: float = 12 * 3600
    secure_cookies: bool = True
    api_rate_per_s: float = 50.0
    api_burst: float = 200.0
    worker_rate_per_s: float = 50.0
    worker_burst: float = 200.0
    session_secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    code_role: Role = Role.ADMIN

    def __post_init__(self) -> None:
        self.api_limiter = RateLimiter(self.api_rate_per_s, self.api_burst)
        self.worker_limiter = RateLimiter(self.worker_rate_per_s, self.worker_burst)
        self.failures = FailureLimit(self.api_rate_per_s, self.api_burst)


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: an API key's id and role ("" and viewer if anonymous)."""

    key_id: str
    role: Role

    def sees_all_jobs(self) -> bool:
        return self.role is not Role.SUBMITTER

    def may_see(self, owner: str) -> bool:
        return self.sees_all_jobs() or owner == self.key_id


# Asynchronous on purpose: FastAPI runs a plain function dependency in a thread pool, a
# thread hand-off per request for what is an attribute lookup.
async def coordinator(request: Request) -> Coordinator:
    return request.app.state.coordinator  # type: ignore[no-any-return]


async def security(request: Request) -> SecuritySettings:
    return request.app.state.security  # type: ignore[no-any-return]


CoordinatorDep = Annotated[Coordinator, Depends(coordinator)]
SecurityDep = Annotated[SecuritySettings, Depends(security)]


def _sign(settings: SecuritySettings, purpose: str, payload: str) -> str:
    mac = hmac.new(settings.session_secret, f"{purpose}:{payload}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")


def session_cookie(settings: SecuritySettings, key_id: str, expires_s: float) -> str:
    payload = base64.urlsafe_b64encode(json.dumps({"k": key_id, "e": expires_s}).encode()).decode()
    return f"{payload}.{_sign(settings, 'session', payload)}"


def csrf_token(settings: SecuritySettings, cookie: str) -> str:
    return _sign(settings, "csrf", cookie)


def _session_key_id(settings: SecuritySettings, cookie: str, now: float) -> str:
    payload, _, mac = cookie.partition(".")
    if not hmac.compare_digest(mac, _sign(settings, "session", payload)):
        raise Unauthorized("invalid session; sign in again")
    try:
        data = json.loads(base64.urlsafe_b64decode(payload))
        key_id, expires_s = str(data["k"]), float(data["e"])
    except (ValueError, KeyError, TypeError) as exc:
        raise Unauthorized("invalid session; sign in again") from exc
    if now >= expires_s:
        raise Unauthorized("session expired; sign in again")
    return key_id


async def authenticate(request: Request, c: Coordinator, settings: SecuritySettings) -> Principal:
    failures = f"failed:{request.client.host if request.client else 'unknown'}"
    settings.failures.check_here(failures, c.clock())  # refused before any lookup
    try:
        return await _authenticate(request, c, settings, failures)
    except Unauthorized:
        await c.call(settings.failures.spend, c.store, failures, c.clock())
        raise


async def _authenticate(
    request: Request, c: Coordinator, settings: SecuritySettings, failures: str
) -> Principal:
    """The caller of ``request``, within its rate limit; failed attempts count against the
    caller's address, so guessing keys is throttled too.

    Raises:
        Unauthorized: no usable credential (and no anonymous access), or a bad session.
        Forbidden: a cookie-authenticated change without the session's CSRF token.
        TooManyRequests: over the rate limit.
    """
    now = c.clock()
    header = request.headers.get("authorization")
    cookie = request.cookies.get(SESSION_COOKIE)
    if header:
        scheme, _, text = header.partition(" ")
        if scheme.lower() != "bearer" or not text:
            raise Unauthorized("send an API key as 'Authorization: Bearer <key>'")
        key = await c.call(
            settings.failures.guarded,
            c.store,
            failures,
            now,
            c.store.credentials.check,
            CredentialKind.API_KEY,
            text.strip(),
            now,
        )
    elif cookie:
        key_id = _session_key_id(settings, cookie, now)
        if request.method not in SAFE_METHODS and not hmac.compare_digest(
            request.headers.get(CSRF_HEADER, ""), csrf_token(settings, cookie)
        ):
            raise Forbidden(f"a change made with a session cookie needs the {CSRF_HEADER} header")
        key = await c.call(
            settings.failures.guarded,
            c.store,
            failures,
            now,
            c.store.credentials.get_usable,
            key_id,
            now,
        )
    elif settings.anonymous_read and request.method in SAFE_METHODS:
        client = request.client.host if request.client else "unknown"
        settings.api_limiter.take(f"address:{client}")
        return Principal("", Role.VIEWER)
    else:
        raise Unauthorized("this coordinator needs an API key ('Authorization: Bearer <key>')")
    settings.api_limiter.take(f"key:{key.cred_id}")
    assert key.role is not None
    return Principal(key.cred_id, key.role)


def require_code_role(principal: Principal, settings: SecuritySettings) -> None:
    """Refuse a caller whose role may not submit code to the pool.

    Raises:
        Forbidden: its role is below the pool's ``code_role``.
    """
    if not principal.role.allows(settings.code_role):
        raise Forbidden(
            f"this pool lets only {settings.code_role.value}s submit code (wasm jobs); "
            f"the key is a {principal.role.value}"
        )


def require(role: Role) -> object:
    """A dependency giving the :class:`Principal`, refused unless its role allows ``role``."""

    async def dependency(request: Request, c: CoordinatorDep, settings: SecurityDep) -> Principal:
        principal = request.scope.get(PRINCIPAL_SCOPE_KEY)
        if not isinstance(principal, Principal):  # not authenticated before the body
            principal = await authenticate(request, c, settings)
        if not principal.role.allows(role):
            raise Forbidden(f"this needs the {role.value} role; the key is a {principal.role}")
        return principal

    return Depends(dependency)


Viewer = Annotated[Principal, require(Role.VIEWER)]
Submitter = Annotated[Principal, require(Role.SUBMITTER)]
Admin = Annotated[Principal, require(Role.ADMIN)]
