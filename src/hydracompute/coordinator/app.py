"""The coordinator's ASGI application: ``create_app(store)`` composes everything."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, Response

from hydracompute import __version__
from hydracompute.coordinator import problems, routes_admin, routes_jobs, routes_workers
from hydracompute.coordinator.auth import CoordinatorDep, SecuritySettings
from hydracompute.coordinator.limits import BodySizeLimit
from hydracompute.coordinator.schemas import Health
from hydracompute.coordinator.service import Coordinator
from hydracompute.core.models import JobState
from hydracompute.errors import NotFound
from hydracompute.store import Store

#: Large enough for a batch of Mandelbrot tiles (at most 16 MiB raw each, compressed).
MAX_BODY_BYTES = 64 * 1024 * 1024

INDEX_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Hydra Compute</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family: system-ui, sans-serif; max-width: 40em; margin: 2em auto">
<h1>Hydra Compute coordinator</h1>
<ul>
<li><a href="/docs">API reference (OpenAPI)</a></li>
<li><a href="/api/v1/jobs">Jobs (JSON)</a></li>
<li><a href="/api/v1/workers">Workers (JSON)</a></li>
<li><a href="/api/v1/health">Health</a></li>
</ul></body></html>
"""


def create_app(
    store: Store,
    clock: Callable[[], float] = time.time,
    security: SecuritySettings | None = None,
    ca_pem: bytes | None = None,
) -> FastAPI:
    """The coordinator application over ``store`` (which it closes on shutdown).

    Args:
        clock: seconds since the epoch; injectable for tests.
        security: how requests are authenticated and limited (defaults: API keys
            required, no anonymous access).
        ca_pem: the certificate authority of the coordinator's TLS certificate, served at
            ``/api/v1/tls/ca.pem`` for workers and clients to pin by fingerprint.
    """
    coordinator = Coordinator(store, clock)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await coordinator.start()
        try:
            yield
        finally:
            await coordinator.stop()

    app = FastAPI(
        title="Hydra Compute",
        version=__version__,
        summary="Pool idle machines into one compute service.",
        lifespan=lifespan,
    )
    app.state.coordinator = coordinator
    app.state.security = security or SecuritySettings()
    problems.install(app)
    app.include_router(routes_jobs.router)
    app.include_router(routes_workers.router)
    app.include_router(routes_admin.router)

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

    @app.get("/api/v1/kinds", tags=["pool"])
    async def kinds(c: CoordinatorDep) -> dict[str, list[dict[str, str]]]:
        """Job kinds this coordinator accepts."""
        return {"kinds": [{"name": k.name, "unit_name": k.unit_name} for k in c.store.kinds]}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> str:
        return INDEX_HTML

    app.add_middleware(BodySizeLimit, max_bytes=MAX_BODY_BYTES)
    return app
