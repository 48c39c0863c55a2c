"""The coordinator's ASGI application: ``create_app(store)`` composes everything."""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.types import Receive, Scope, Send

from hydracompute import __version__
from hydracompute.coordinator import (
    problems,
    routes_admin,
    routes_blobs,
    routes_carbon,
    routes_credit,
    routes_dashboard,
    routes_jobs,
    routes_workers,
)
from hydracompute.coordinator.auth import CoordinatorDep, SecuritySettings, Viewer, authenticate
from hydracompute.coordinator.collector import CollectionSchedule
from hydracompute.coordinator.fastpath import ExchangeFastPath
from hydracompute.coordinator.openapi import install_openapi
from hydracompute.coordinator.peers import ALIVE_S
from hydracompute.coordinator.reference import install_reference
from hydracompute.coordinator.schemas import CoordinatorList, CoordinatorView, Health
from hydracompute.coordinator.service import DEFAULT_FORGET_WORKERS_AFTER_S, Coordinator
from hydracompute.core.models import JobState
from hydracompute.errors import NotFound
from hydracompute.store import Store
from hydracompute.store.content import DEFAULT_MAX_BLOB_BYTES

#: Any request but a worker's exchange: job parameters, credentials, sign-in.
MAX_BODY_BYTES = 256 * 1024
#: A worker's exchange: a batch of Mandelbrot tiles (at most 16 MiB raw each, compressed).
MAX_EXCHANGE_BODY_BYTES = 64 * 1024 * 1024


#: Newer FastAPI releases instrument every request for OpenTelemetry, and even with no
#: provider configured, deciding so per request cost a fifth of an exchange's CPU. The
#: coordinator exports its own figures (the pool view, the dashboard); turned off.
_NO_TELEMETRY: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}}
    if "telemetry" in inspect.signature(FastAPI).parameters
    else {}
)


class CoordinatorApp(FastAPI):
    """FastAPI with the exchange's fast path and the request body limits in front of its
    own middleware stack rather than inside it.

    A worker's exchange, most of the coordinator's requests, goes straight to its route
    (:class:`ExchangeFastPath`) without passing through FastAPI's five middleware layers,
    which cost CPU per request and kept a coroutine each alive for the exchange's whole
    wait (more objects for every garbage collection to walk). Everything else has its body
    read under its limit (:class:`BodySizeLimit`) and goes on to FastAPI as before.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._front = ExchangeFastPath(
            super().__call__,
            max_bytes=MAX_BODY_BYTES,
            max_exchange_bytes=MAX_EXCHANGE_BODY_BYTES,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self
        await self._front(scope, receive, send)


def create_app(
    store: Store,
    clock: Callable[[], float] = time.time,
    security: SecuritySettings | None = None,
    ca_pem: bytes | None = None,
    collection: CollectionSchedule | None = None,
    forget_workers_after_s: float | None = DEFAULT_FORGET_WORKERS_AFTER_S,
    max_blob_bytes: int = DEFAULT_MAX_BLOB_BYTES,
    url: str = "",
    coordinator_id: str | None = None,
) -> FastAPI:
    """The coordinator application over ``store`` (which it closes on shutdown).

    Args:
        clock: seconds since the epoch; injectable for tests.
        security: how requests are authenticated and limited (defaults: API keys
            required, no anonymous access).
        ca_pem: the certificate authority of the coordinator's TLS certificate, served at
            ``/api/v1/tls/ca.pem`` for workers and clients to pin by fingerprint.
        collection: the process's garbage collection schedule while the application runs
            (see :class:`Coordinator`); ``None`` leaves Python's automatic collector on.
        forget_workers_after_s: workers not heard from for this long are removed from the
            pool; ``None`` keeps them forever.
        max_blob_bytes: the largest module or input a submitter may upload.
        url: the base URL workers reach this coordinator at, listed for the pool.
        coordinator_id: its id in the pool's list of coordinators (new by default).
    """
    coordinator = Coordinator(store, clock, collection, forget_workers_after_s, url, coordinator_id)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await coordinator.start()
        try:
            yield
        finally:
            await coordinator.stop()

    app = CoordinatorApp(
        title="Hydra Compute",
        version=__version__,
        summary="Pool idle machines into one compute service.",
        lifespan=lifespan,
        # Served by install_reference, without a CDN.
        docs_url=None,
        redoc_url=None,
        **_NO_TELEMETRY,
    )
    app.state.coordinator = coordinator
    app.state.security = security or SecuritySettings()
    app.state.max_blob_bytes = max_blob_bytes
    problems.install(app)
    app.include_router(routes_jobs.router)
    app.include_router(routes_workers.router)
    app.include_router(routes_admin.router)
    app.include_router(routes_credit.router)
    app.include_router(routes_carbon.router)
    app.include_router(routes_dashboard.router)
    app.include_router(routes_blobs.router)
    install_reference(app)
    app.mount("/static", StaticFiles(directory=routes_dashboard.ASSETS), name="static")

    @app.get(
        "/api/v1/tls/ca.pem",
        response_class=Response,
        responses={200: {"content": {"application/x-pem-file": {}}}},
        tags=["pool"],
    )
    async def certificate_authority() -> Response:
        """The CA that signed this coordinator's certificate; compare its SHA-256 fingerprint
        with the one the pool's admin gave you before trusting it."""
        if ca_pem is None:
            raise NotFound("this coordinator does not serve its own certificate authority")
        return Response(ca_pem, media_type="application/x-pem-file")

    @app.get("/api/v1/health", response_model=Health, tags=["pool"])
    async def health(c: CoordinatorDep) -> Health:
        running = await c.call(c.store.list_jobs, JobState.RUNNING, 1000)
        workers = await c.call(c.store.list_workers)
        now = c.clock()
        return Health(
            status="ok",
            version=__version__,
            kinds=c.store.kinds.names(),
            jobs_running=len(running),
            workers_online=sum(w.online(now, c.config.lease_ttl_s) for w in workers),
        )

    @app.get("/api/v1/coordinators", response_model=CoordinatorList, tags=["pool"])
    async def coordinators(c: CoordinatorDep, principal: Viewer) -> CoordinatorList:
        """The pool's live coordinators (sharing one database): a worker or client may use
        any of them, and moves to another when one stops answering."""
        live = await c.call(c.store.sharing.coordinators, c.clock(), ALIVE_S)
        return CoordinatorList(
            coordinators=[
                CoordinatorView(
                    url=e.url,
                    started_s=e.started_s,
                    seen_s=e.seen_s,
                    this=e.coordinator_id == c.peers.coordinator_id,
                )
                for e in live
                if e.url
            ]
        )

    @app.get("/metrics", response_class=Response, include_in_schema=False)
    async def metrics(request: Request, c: CoordinatorDep) -> Response:
        """Prometheus metrics (docs/metrics.md): for a viewer, or anyone with
        ``--metrics-public``."""
        settings: SecuritySettings = app.state.security
        if not settings.metrics_public:
            await authenticate(request, c, settings)  # any role may read: viewer and up
        # On the store thread: the pool's figures are read from the store as it is scraped.
        exposition = await c.call(c.metrics.exposition)
        return Response(exposition, media_type=CONTENT_TYPE_LATEST)

    install_openapi(app)
    return app
