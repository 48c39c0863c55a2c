"""The dashboard: its page and assets, the pool's pulse, and a live event stream.

The page is a single HTML file with one script and one style sheet, all served from the
package (no CDN), so it works on a LAN without internet. Updates are pushed with
Server-Sent Events: ``jobs`` (views of jobs that changed), ``chunks`` (finished chunks of
the job a page shows, to draw), ``pool`` (the pool's pulse, every few seconds).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path as FilePath
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import FileResponse, StreamingResponse

from hydracompute.coordinator.auth import CoordinatorDep, Principal, Viewer
from hydracompute.coordinator.events import Subscription
from hydracompute.coordinator.routes_jobs import job_view, lease_spans, visible_job
from hydracompute.coordinator.routes_workers import worker_views
from hydracompute.coordinator.schemas import KindField, KindList, KindView, PoolView, PreviewOut
from hydracompute.coordinator.service import Coordinator
from hydracompute.core.models import JobState
from hydracompute.errors import Unauthorized
from hydracompute.store.views import finished_chunks, job_history, preview_source

ASSETS = FilePath(__file__).parent / "dashboard"
#: Least time between two writes of one event stream: changes in between are merged.
FLUSH_INTERVAL_S = 0.25
#: How often a stream sends the pool's pulse (and a keep-alive).
POOL_INTERVAL_S = 2.0
#: How long one computation of the pool's pulse is shared between requests.
POOL_CACHE_S = 1.0

router = APIRouter()


@router.get("/", include_in_schema=False)
async def dashboard() -> FileResponse:
    return FileResponse(ASSETS / "index.html", headers={"Cache-Control": "no-cache"})


@router.get("/api/v1/kinds", response_model=KindList, tags=["pool"])
async def kinds(c: CoordinatorDep) -> KindList:
    """Job kinds this coordinator accepts, with the parameters a form should offer."""
    return KindList(
        kinds=[
            KindView(
                name=k.name,
                unit_name=k.unit_name,
                work_name=k.work_name(),
                work_per_unit=k.work_per_unit,
                fields=[
                    KindField(
                        name=f.name,
                        type=f.type,
                        label=f.label or f.name,
                        required=f.required,
                        default=f.default,
                        minimum=f.minimum,
                        maximum=f.maximum,
                        choices=list(f.choices),
                        help=f.help,
                    )
                    for f in k.param_fields()
                ],
            )
            for k in c.store.kinds
        ]
    )


async def pool_view(c: Coordinator, limit: int) -> PoolView:
    """The pool at a glance, computed at most once per :data:`POOL_CACHE_S` however many
    dashboards are open (every stream asks for it every few seconds)."""
    cached = c.pool_view_cache
    now = time.monotonic()
    if cached is None or now - cached[0] > POOL_CACHE_S:
        cached = c.pool_view_cache = (now, await _full_pool_view(c))
    view: PoolView = cached[1]
    return view.model_copy(update={"workers": view.workers[:limit]})


async def _full_pool_view(c: Coordinator) -> PoolView:
    workers = await c.call(c.store.list_workers)
    running = await c.call(c.store.list_jobs, JobState.RUNNING, 10_000)
    views = await worker_views(c, workers)
    views.sort(key=lambda w: (not w.online, w.name, w.worker_id))
    online = [w for w in views if w.online]
    latest = c.sampler.history[-1]["throughput"] if c.sampler.history else {}
    return PoolView(
        workers_total=len(views),
        workers_online=len(online),
        workers_paused=sum(w.state == "paused" for w in online),
        cores_online=sum(w.cores for w in online),
        jobs_running=len(running),
        throughput=latest,
        work_names={k.name: k.work_name() for k in c.store.kinds},
        history=list(c.sampler.history),
        workers=views,
    )


@router.get("/api/v1/pool", response_model=PoolView, tags=["pool"])
async def pool(
    c: CoordinatorDep, _: Viewer, limit: Annotated[int, Query(ge=0, le=10_000)] = 200
) -> PoolView:
    """The pool at a glance: workers, cores, throughput per kind and its recent history."""
    return await pool_view(c, limit)


@router.get("/api/v1/jobs/{job_id}/history", tags=["jobs"])
async def history(job_id: str, c: CoordinatorDep, principal: Viewer) -> dict[str, object]:
    """The job's live summary after each finished chunk, in chunk order (sampled down to a
    few hundred points): e.g. how a π estimate converged."""
    await visible_job(c, principal, job_id)
    return {"job_id": job_id, "points": await c.call(job_history, c.store, job_id)}


@router.get("/api/v1/jobs/{job_id}/chunks", tags=["jobs"])
async def chunks(job_id: str, c: CoordinatorDep, principal: Viewer) -> dict[str, object]:
    """Indices of the job's finished chunks; each has a ``/preview`` if the kind draws."""
    await visible_job(c, principal, job_id)
    return {"job_id": job_id, "finished": await c.call(finished_chunks, c.store, job_id)}


@router.get(
    "/api/v1/jobs/{job_id}/chunks/{index}/preview",
    response_model=PreviewOut,
    tags=["jobs"],
)
async def preview(
    job_id: str,
    index: Annotated[int, Path(ge=0, lt=2**31)],
    c: CoordinatorDep,
    principal: Viewer,
    response: Response,
) -> PreviewOut:
    """A finished chunk's picture: a PNG and the pieces of it that go into the job's
    picture (see ``PreviewOut``)."""
    await visible_job(c, principal, job_id)
    source = await c.call(preview_source, c.store, job_id, index)
    picture = await asyncio.to_thread(source.render)  # not on the store thread
    response.headers["Cache-Control"] = "private, max-age=86400"
    return PreviewOut(
        png=base64.b64encode(picture.png).decode("ascii"), pieces=list(picture.pieces)
    )


def _event(name: str, data: object) -> str:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def _stream(
    c: Coordinator, principal: Principal, subscription: Subscription, request: Request
) -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    next_pool = 0.0
    try:
        while not await request.is_disconnected():
            if loop.time() >= next_pool:
                next_pool = loop.time() + POOL_INTERVAL_S
                if principal.key_id:  # a revoked or expired key ends its open streams too
                    try:
                        await c.call(c.store.credentials.get_usable, principal.key_id, c.clock())
                    except Unauthorized:
                        yield _event("signed-out", {})
                        return
                yield _event("pool", (await pool_view(c, 200)).model_dump())
            jobs, subscription.jobs = subscription.jobs, set()
            views = []
            capacity = await c.capacity() if jobs else None
            seen = []
            for job_id in sorted(jobs):
                job = await c.call(c.store.get_job, job_id)
                if capacity is not None and principal.may_see(job.owner):
                    seen.append(job)
            if capacity is not None and seen:
                spans = await lease_spans(c, seen)
                views = [
                    job_view(c, job, capacity, spans=spans.get(job.job_id)).model_dump()
                    for job in seen
                ]
            if views:
                yield _event("jobs", views)
            chunks, subscription.chunks = subscription.chunks, []
            if subscription.overflowed:
                subscription.overflowed = False
                yield _event("reload", {"job_id": subscription.job_id})
            elif chunks:
                yield _event(
                    "chunks", [{"job_id": ch.job_id, "index": ch.chunk_index} for ch in chunks]
                )
            subscription.wake.clear()
            timeout = max(0.0, next_pool - loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(subscription.wake.wait(), timeout)
            await asyncio.sleep(FLUSH_INTERVAL_S)
    finally:
        c.events.unsubscribe(subscription)


@router.get(
    "/api/v1/events",
    tags=["pool"],
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def events(
    request: Request,
    c: CoordinatorDep,
    principal: Viewer,
    job: Annotated[str | None, Query(max_length=64)] = None,
) -> StreamingResponse:
    """Server-Sent Events: ``pool`` every few seconds, ``jobs`` when jobs change, and, with
    ``job=ID``, ``chunks`` as that job's chunks finish (at most four writes a second)."""
    if job is not None:
        await visible_job(c, principal, job)
    subscription = c.events.subscribe(job)
    return StreamingResponse(
        _stream(c, principal, subscription, request),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
