"""Routes for workers: enrol, exchange, return leases, leave; and the pool's view of its
workers."""

from __future__ import annotations

import hmac
import logging
from typing import Annotated

from fastapi import APIRouter, Header, Request, Response, status
from starlette.types import Scope

from hydracompute import jsonvalues
from hydracompute.coordinator.auth import CoordinatorDep, SecurityDep, SecuritySettings, Viewer
from hydracompute.coordinator.schemas import (
    Enrolled,
    ExchangeIn,
    ExchangeOut,
    LeaseReturn,
    Left,
    Rejoined,
    Returned,
    WorkerEnrol,
    WorkerList,
    WorkerProfile,
    WorkerView,
)
from hydracompute.coordinator.service import Coordinator
from hydracompute.core.models import Worker
from hydracompute.errors import NotFound, Unauthorized
from hydracompute.store import ResultReport
from hydracompute.store.credentials import hash_secret

router = APIRouter(prefix="/api/v1", tags=["workers"])
log = logging.getLogger("hydracompute.coordinator")
#: The exchange's answer, compact (``json.dumps`` with arguments builds an encoder per call).
_encode_answer = jsonvalues.compact

MAX_AUTHORIZATION_CHARS = 200
Authorization = Annotated[str | None, Header(max_length=MAX_AUTHORIZATION_CHARS)]


def client_host(scope: Scope) -> str:
    """The address a request came from (``"unknown"`` where the server gives none)."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


#: Where a worker whose secret was checked before its request's body was read is named
#: (see :mod:`hydracompute.coordinator.authfirst`).
WORKER_SCOPE_KEY = "hydracompute.worker"


async def authenticate_worker_scope(scope: Scope, worker_id: str, in_store: bool = False) -> None:
    """:func:`authenticate` the worker of a request from its ASGI scope (its first
    ``Authorization`` header, as Starlette reads it)."""
    authorization = next(
        (v.decode("latin-1") for n, v in scope["headers"] if n == b"authorization"), None
    )
    state = scope["app"].state
    await authenticate(
        state.coordinator, state.security, worker_id, authorization, client_host(scope), in_store
    )


async def authenticate(
    c: Coordinator,
    settings: SecuritySettings,
    worker_id: str,
    authorization: str | None,
    client: str,
    revocation_checked_by_store: bool = False,
) -> None:
    """Check a worker's secret; failures count against the caller's address (``client``).

    Args:
        revocation_checked_by_store: the request's store call refuses a revoked worker
            itself (the exchange does), so a secret already verified for this worker is
            accepted without a store call of its own.
    """
    failures = f"failed-worker:{client}"
    now = c.clock()
    settings.failures.check_here(failures, now)
    scheme, _, secret = (authorization or "").partition(" ")
    try:
        if scheme.lower() != "bearer" or not secret:
            raise Unauthorized("send the worker's secret as 'Authorization: Bearer <secret>'")
        digest = hash_secret(secret)
        known = c.verified_workers.get(worker_id, "")
        if not (revocation_checked_by_store and hmac.compare_digest(known, digest)):
            await c.call(
                settings.failures.guarded,
                c.store,
                failures,
                now,
                c.store.authenticate_worker,
                worker_id,
                secret,
            )
            c.remember_verified_worker(worker_id, digest)
    except Unauthorized:
        await c.call(settings.failures.spend, c.store, failures, c.clock())
        raise
    settings.worker_limiter.take(worker_id)


@router.post("/workers", status_code=status.HTTP_201_CREATED, response_model=Enrolled)
async def enrol(
    body: WorkerEnrol, c: CoordinatorDep, settings: SecurityDep, request: Request
) -> Enrolled:
    """Join the pool with a join token. The answer carries the worker's own secret, shown
    only once; the worker sends it with every request from then on."""
    settings.api_limiter.take(f"enrol:{request.client.host if request.client else ''}")
    worker, secret = await c.call(
        c.store.enrol_worker,
        body.name,
        body.cores,
        body.kinds,
        c.clock(),
        body.join_token,
        body.watts_per_core,
        body.grid_zone,
        body.power_measured,
        version=body.version,
    )
    c.workers_changed()
    log.info(
        "worker %s (%s) joined with %d core(s) for %s",
        worker.worker_id,
        worker.name,
        worker.cores,
        ", ".join(worker.kinds),
    )
    return Enrolled(
        worker_id=worker.worker_id,
        secret=secret,
        heartbeat_s=c.config.heartbeat_s,
        lease_ttl_s=c.config.lease_ttl_s,
        max_wait_s=c.config.max_wait_s,
    )


@router.post("/workers/{worker_id}/rejoin", response_model=Rejoined)
async def rejoin(
    worker_id: str,
    body: WorkerProfile,
    c: CoordinatorDep,
    settings: SecurityDep,
    request: Request,
    authorization: Authorization = None,
) -> Rejoined:
    """A worker that starts again takes up its identity: it says how many cores and which
    kinds it has now (its owner may have changed them), and keeps its id, speeds and
    credit. No join token is needed."""
    await authenticate(c, settings, worker_id, authorization, client_host(request.scope))
    worker = await c.call(
        c.store.update_worker_profile,
        worker_id,
        body.cores,
        body.kinds,
        c.clock(),
        body.watts_per_core,
        body.grid_zone,
        body.power_measured,
        version=body.version,
    )
    c.workers_changed()
    c.silent_workers.discard(worker.worker_id)  # the line below says it is back
    log.info(
        "worker %s (%s) rejoined with %d core(s) for %s",
        worker.worker_id,
        worker.name,
        worker.cores,
        ", ".join(worker.kinds),
    )
    return Rejoined(
        worker_id=worker.worker_id,
        heartbeat_s=c.config.heartbeat_s,
        lease_ttl_s=c.config.lease_ttl_s,
        max_wait_s=c.config.max_wait_s,
    )


@router.post("/workers/{worker_id}/exchange", response_model=ExchangeOut)
async def exchange(
    worker_id: str, body: ExchangeIn, request: Request, authorization: Authorization = None
) -> Response:
    """Results, renewals and a request for ``want`` chunks in one round trip.

    Results are durable when this answers. If any result is refused (unknown lease, another
    worker's lease, a different second result, an output failing its kind's check) the
    whole exchange is refused with a problem document naming the ``lease_id``, and nothing
    is recorded. With nothing to lease, the request is held up to ``wait_s``.
    """
    # The coordinator's fast path (coordinator/fastpath.py) takes every exchange before
    # FastAPI sees it; this route is declared for its documentation and schema, and serves
    # an application built without that front.
    app = request.app
    answer = await answer_exchange(
        app.state.coordinator,
        app.state.security,
        worker_id,
        body,
        authorization,
        client_host(request.scope),
    )
    return Response(answer, media_type="application/json")


async def answer_exchange(
    c: Coordinator,
    settings: SecuritySettings,
    worker_id: str,
    body: ExchangeIn,
    authorization: str | None,
    client: str,
    body_bytes: int = 0,
    authenticated: bool = False,
) -> bytes:
    """The exchange's answer, as JSON (see :func:`exchange`); ``body_bytes`` is the size of
    the request's body; ``authenticated``: the worker's credentials were checked before it
    was read.

    The answer is serialised here rather than validated again against ExchangeOut (its
    schema, which the protocol tests hold it to): this is the busiest request.

    Raises:
        HydraError: refused (credentials, rate limit, or a result; nothing is recorded).
    """
    if not authenticated:
        await authenticate(c, settings, worker_id, authorization, client, True)
    reports = [ResultReport(r.lease_id, r.output, r.compute_s, r.error) for r in body.results]
    try:
        outcome = await c.exchange(
            worker_id,
            reports,
            body.running,
            body.want,
            body.wait_s,
            body.state,
            body.state_reason,
            body_bytes,
        )
    except (NotFound, Unauthorized) as exc:
        if isinstance(exc, NotFound) and exc.extra.get("worker_id") != worker_id:
            raise  # an unknown lease: refused as such
        # Its secret was verified here, but the worker was removed or revoked since,
        # perhaps through another coordinator of the pool: refused as at its next sign-in.
        c.forget_verified_worker(worker_id)
        raise Unauthorized("unknown, revoked or wrong worker credentials") from None
    now = c.clock()
    answer = {
        "accepted": outcome.accepted,
        "leases": [
            {
                "lease_id": g.lease_id,
                "job_id": g.job_id,
                "kind": g.kind,
                "params": g.params,
                "chunk": {"index": g.chunk_index, "start": g.start, "stop": g.stop},
                "deadline_in_s": max(0.0, g.deadline_s - now),
            }
            for g in outcome.leases
        ],
        "abandon": outcome.abandon,
        "next_exchange_s": c.config.heartbeat_s,
    }
    if outcome.grid_gco2_per_kwh is not None:
        answer["grid_gco2_per_kwh"] = outcome.grid_gco2_per_kwh
    return _encode_answer(answer).encode()


@router.post("/workers/{worker_id}/leave", response_model=Left)
async def leave(
    worker_id: str,
    c: CoordinatorDep,
    settings: SecurityDep,
    request: Request,
    authorization: Authorization = None,
) -> Left:
    """A stopping worker leaves the pool: every lease it holds goes back to the others.

    Send the results it did finish in an exchange first.
    """
    await authenticate(c, settings, worker_id, authorization, client_host(request.scope))
    returned = await c.call(c.store.leave, worker_id, c.clock())
    c.workers_changed()
    c.silent_workers.discard(worker_id)
    log.info("worker %s left, giving back %d lease(s)", worker_id, returned)
    return Left(returned=returned)


@router.post("/workers/{worker_id}/return", response_model=Returned)
async def return_leases(
    worker_id: str,
    body: LeaseReturn,
    c: CoordinatorDep,
    settings: SecurityDep,
    request: Request,
    authorization: Authorization = None,
) -> Returned:
    """Give back leases the worker will not finish soon (its owner's rules paused it for
    long), so that other workers take their chunks now rather than when the leases expire.

    Leases that are no longer active (finished, expired, already returned) are left as they
    are and not counted. If any lease is unknown (404) or held by another worker (403),
    nothing is returned.
    """
    if request.scope.get(WORKER_SCOPE_KEY) != worker_id:  # not checked before the body
        await authenticate(c, settings, worker_id, authorization, client_host(request.scope))
    return Returned(
        returned=await c.call(c.store.return_leases, worker_id, body.lease_ids, c.clock())
    )


@router.get("/workers", response_model=WorkerList)
async def list_workers(c: CoordinatorDep, principal: Viewer) -> WorkerList:
    return WorkerList(workers=await worker_views(c, await c.call(c.store.list_workers)))


async def worker_views(c: Coordinator, workers: list[Worker]) -> list[WorkerView]:
    leases = await c.call(c.store.leases_in_hand)
    now = c.clock()
    grid = c.store.grid
    return [
        WorkerView(
            worker_id=w.worker_id,
            name=w.name,
            cores=w.cores,
            kinds=w.kinds,
            online=w.online(now, c.config.lease_ttl_s),
            revoked=w.revoked,
            left=w.left,
            state=worker_state(w, now, c.config.lease_ttl_s),
            state_reason=w.state_reason,
            last_seen_s=w.last_seen_s,
            last_seen_ago_s=max(0.0, now - w.last_seen_s),
            chunks_done=w.chunks_done,
            leases=leases.get(w.worker_id, 0),
            speeds=w.speeds,
            barred=w.barred,
            trust=w.trust,
            labels=w.labels,
            accepts_wasm=any(
                c.store.kinds.get(k).runs_submitted_code for k in w.kinds if k in c.store.kinds
            ),
            grid_zone=w.grid_zone,
            grid_gco2_per_kwh=grid.intensity(w.grid_zone, now)
            if w.grid_zone and grid.view is not None
            else None,
            version=w.version,
        )
        for w in workers
    ]


def worker_state(worker: Worker, now: float, lease_ttl_s: float) -> str:
    """``revoked``, ``left``, ``offline``, else the state the worker reported (``paused``
    or ``running``): what it reported last is stale once it is gone."""
    if worker.revoked:
        return "revoked"
    if worker.left:
        return "left"
    if not worker.online(now, lease_ttl_s):
        return "offline"
    return worker.state
