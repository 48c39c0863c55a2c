"""Routes for the pool's administration (API keys, join tokens, workers) and sign-in."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request, Response, status

from hydracompute.coordinator.auth import (
    SESSION_COOKIE,
    Admin,
    CoordinatorDep,
    SecurityDep,
    authenticate,
    csrf_token,
    session_cookie,
)
from hydracompute.coordinator.routes_workers import worker_views
from hydracompute.coordinator.schemas import (
    CredentialIssued,
    CredentialList,
    CredentialView,
    KeyCreate,
    KeyWeight,
    SessionStart,
    SessionView,
    TokenCreate,
    WorkerLabels,
    WorkerView,
)
from hydracompute.coordinator.service import Coordinator
from hydracompute.core.models import Credential, CredentialKind, Role
from hydracompute.errors import Unauthorized

router = APIRouter(prefix="/api/v1", tags=["administration"])
log = logging.getLogger("hydracompute.coordinator")


def credential_view(credential: Credential) -> CredentialView:
    return CredentialView(
        id=credential.cred_id,
        name=credential.name,
        role=credential.role.value if credential.role else None,
        weight=credential.weight if credential.kind is CredentialKind.API_KEY else None,
        created_s=credential.created_s,
        expires_s=credential.expires_s,
        max_uses=credential.max_uses,
        uses=credential.uses,
        revoked=credential.revoked,
    )


async def _issue(
    c: Coordinator,
    kind: CredentialKind,
    name: str,
    expires_in_s: float | None,
    role: Role | None = None,
    max_uses: int | None = None,
    weight: float = 1.0,
) -> CredentialIssued:
    now = c.clock()
    expires_s = None if expires_in_s is None else now + expires_in_s
    credential, text = await c.call(
        c.store.credentials.issue, kind, name, now, role, expires_s, max_uses, weight
    )
    return CredentialIssued(**credential_view(credential).model_dump(), secret=text)


@router.post("/keys", status_code=status.HTTP_201_CREATED, response_model=CredentialIssued)
async def create_key(body: KeyCreate, c: CoordinatorDep, _: Admin) -> CredentialIssued:
    """Issue an API key with a role; the key itself is in the answer, and only there."""
    return await _issue(
        c,
        CredentialKind.API_KEY,
        body.name,
        body.expires_in_s,
        Role(body.role),
        weight=body.weight,
    )


@router.put("/keys/{key_id}/weight", response_model=CredentialView)
async def set_key_weight(
    key_id: str, body: KeyWeight, c: CoordinatorDep, _: Admin
) -> CredentialView:
    """Set an API key's weight in the fair share between submitters: its jobs' share of
    the pool against the other submitters' weights (1 by default). Counts within a second."""
    return credential_view(await c.call(c.store.credentials.set_weight, key_id, body.weight))


@router.get("/keys", response_model=CredentialList)
async def list_keys(c: CoordinatorDep, _: Admin) -> CredentialList:
    keys = await c.call(c.store.credentials.list, CredentialKind.API_KEY)
    return CredentialList(credentials=[credential_view(k) for k in keys])


@router.post("/keys/{key_id}/revoke", response_model=CredentialView)
async def revoke_key(key_id: str, c: CoordinatorDep, _: Admin) -> CredentialView:
    """Revoke an API key: refused from its next request on, sessions included."""
    return credential_view(await c.call(c.store.credentials.revoke, CredentialKind.API_KEY, key_id))


@router.post("/join-tokens", status_code=status.HTTP_201_CREATED, response_model=CredentialIssued)
async def create_join_token(body: TokenCreate, c: CoordinatorDep, _: Admin) -> CredentialIssued:
    """Issue a join token, optionally expiring or limited in uses, for workers to enrol."""
    return await _issue(
        c, CredentialKind.JOIN_TOKEN, body.name, body.expires_in_s, max_uses=body.max_uses
    )


@router.get("/join-tokens", response_model=CredentialList)
async def list_join_tokens(c: CoordinatorDep, _: Admin) -> CredentialList:
    tokens = await c.call(c.store.credentials.list, CredentialKind.JOIN_TOKEN)
    return CredentialList(credentials=[credential_view(t) for t in tokens])


@router.post("/join-tokens/{token_id}/revoke", response_model=CredentialView)
async def revoke_join_token(token_id: str, c: CoordinatorDep, _: Admin) -> CredentialView:
    """Revoke a join token: no worker can enrol with it any more."""
    return credential_view(
        await c.call(c.store.credentials.revoke, CredentialKind.JOIN_TOKEN, token_id)
    )


@router.post("/workers/{worker_id}/revoke", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_worker(worker_id: str, c: CoordinatorDep, principal: Admin) -> None:
    """Shut a worker out from its next request on; its chunks go to other workers."""
    worker = await c.call(c.store.revoke_worker, worker_id, c.clock())
    c.workers_changed()
    log.info("worker %s (%s) revoked by %s", worker_id, worker.name, principal.key_id or "?")


@router.post("/workers/{worker_id}/labels", response_model=WorkerView)
async def label_worker(
    worker_id: str, body: WorkerLabels, c: CoordinatorDep, principal: Admin
) -> WorkerView:
    """Give a worker labels and take others away: jobs that require labels
    (``required_labels``) go only to workers carrying them all (docs/security.md)."""
    worker = await c.call(c.store.label_worker, worker_id, body.add, body.remove)
    c.workers_changed()
    log.info(
        "worker %s (%s) labelled %s by %s",
        worker_id,
        worker.name,
        ", ".join(worker.labels) or "(none)",
        principal.key_id or "?",
    )
    return (await worker_views(c, [worker]))[0]


@router.delete("/workers/{worker_id}", status_code=status.HTTP_204_NO_CONTENT)
async def remove_worker(worker_id: str, c: CoordinatorDep, principal: Admin) -> None:
    """Remove a worker from the pool: its chunks go to other workers, it leaves the list,
    and its secret stops working (started again, it needs a join token to enrol anew)."""
    worker = await c.call(c.store.remove_worker, worker_id, c.clock())
    c.forget_verified_worker(worker_id)
    c.workers_changed()
    c.silent_workers.discard(worker_id)
    log.info("worker %s (%s) removed by %s", worker_id, worker.name, principal.key_id or "?")


@router.post("/session", response_model=SessionView, tags=["session"])
async def sign_in(
    body: SessionStart,
    c: CoordinatorDep,
    settings: SecurityDep,
    request: Request,
    response: Response,
) -> SessionView:
    """Sign in with an API key: sets an HttpOnly, SameSite=Strict session cookie and returns
    the CSRF token that changes made through the cookie must carry."""
    now = c.clock()
    settings.api_limiter.take(f"sign-in:{request.client.host if request.client else ''}")
    key = await c.call(c.store.credentials.check, CredentialKind.API_KEY, body.api_key, now)
    expires_s = now + settings.session_s
    if key.expires_s is not None:
        expires_s = min(expires_s, key.expires_s)
    cookie = session_cookie(settings, key.cred_id, expires_s)
    response.set_cookie(
        SESSION_COOKIE,
        cookie,
        max_age=int(expires_s - now),
        httponly=True,
        samesite="strict",
        secure=settings.secure_cookies,
        path="/",
    )
    assert key.role is not None
    return SessionView(
        key_id=key.cred_id,
        role=key.role.value,
        csrf_token=csrf_token(settings, cookie),
        expires_s=expires_s,
    )


@router.get("/session", response_model=SessionView, tags=["session"])
async def whoami(request: Request, c: CoordinatorDep, settings: SecurityDep) -> SessionView:
    """Who the request is authenticated as; ``signed_in`` is false (not a 401) without a
    usable credential, so a page can ask before showing its sign-in form."""
    try:
        principal = await authenticate(request, c, settings)
    except Unauthorized:
        return SessionView(key_id="", role="", signed_in=False)
    cookie = request.cookies.get(SESSION_COOKIE)
    # A page opened in a new tab has the cookie but not the token: give it back (another
    # origin cannot read this answer, which is what keeps the token from a forger).
    token = csrf_token(settings, cookie) if cookie and principal.key_id else None
    return SessionView(key_id=principal.key_id, role=principal.role.value, csrf_token=token)


@router.delete("/session", status_code=status.HTTP_204_NO_CONTENT, tags=["session"])
async def sign_out(response: Response, settings: SecurityDep) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=settings.secure_cookies
    )
