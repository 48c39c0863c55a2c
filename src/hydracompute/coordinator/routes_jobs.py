"""Routes for submitters: submit, inspect, cancel jobs and fetch their results."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from hydracompute.coordinator.auth import (
    CoordinatorDep,
    Principal,
    Submitter,
    Viewer,
    require_code_role,
)
from hydracompute.coordinator.capacity import PoolCapacity
from hydracompute.coordinator.schemas import (
    Emissions,
    JobList,
    JobSubmit,
    JobView,
    ShareList,
    ShareView,
    ZoneEmissions,
)
from hydracompute.coordinator.service import Coordinator, log_job_end
from hydracompute.core.carbon import CarbonMode
from hydracompute.core.config import MAX_JOB_WAIT_S
from hydracompute.core.credit import JOULES_PER_KWH, ZoneTotal
from hydracompute.core.fairshare import OwnerShare
from hydracompute.core.models import Job, JobState, Role
from hydracompute.core.progress import LeaseSpan
from hydracompute.core.verification import workers_needed
from hydracompute.errors import Conflict, NotFound
from hydracompute.kinds import JobKind
from hydracompute.store.blobs import BlobStore
from hydracompute.store.content import open_content
from hydracompute.store.views import elapsed, progress_of

router = APIRouter(prefix="/api/v1", tags=["jobs"])
log = logging.getLogger("hydracompute.coordinator")


async def visible_job(c: Coordinator, principal: Principal, job_id: str) -> Job:
    """The job, if the caller may see it; another submitter's job does not exist for them.

    Raises:
        NotFound: no such job, or not the caller's.
    """
    job = await c.call(c.store.get_job, job_id)
    if not principal.may_see(job.owner):
        raise NotFound(f"no job {job_id!r}")
    return job


async def owner_shares(c: Coordinator) -> dict[str, OwnerShare]:
    """Every submitter's standing in the fair share, by owner."""
    return {s.owner: s for s in await c.call(c.store.owner_shares, c.clock())}


def share_view(share: OwnerShare) -> ShareView:
    return ShareView(
        owner=share.owner,
        weight=share.weight,
        share=share.share,
        usage_s=share.usage_s,
        usage_fraction=share.usage_fraction,
        running_jobs=share.running_jobs,
    )


async def lease_spans(c: Coordinator, jobs: Iterable[Job]) -> dict[str, list[LeaseSpan] | None]:
    """The running ones of ``jobs``' active leases, for their ETAs, in one call to the store
    (a job that is finished, or has too many, is absent or ``None``)."""
    running = [job.job_id for job in jobs if not job.state.finished]
    return await c.call(c.store.lease_spans, running) if running else {}


def job_view(
    c: Coordinator,
    job: Job,
    capacity: PoolCapacity,
    shares: dict[str, OwnerShare] | None = None,
    spans: list[LeaseSpan] | None = None,
) -> JobView:
    """The job as the API shows it; ``capacity`` (see :meth:`Coordinator.capacity`) says
    whether a running job is waiting for a worker that can run it, ``shares`` (see
    :func:`owner_shares`) its owner's standing in the fair share, ``spans`` (see
    :func:`lease_spans`) the work in flight that its ETA counts."""
    share = (shares or {}).get(job.owner) if not job.state.finished else None
    kind = c.store.kinds.get(job.kind)
    now = c.clock()
    elapsed_s = elapsed(job, now)
    artefacts = list(job.answer.get("artefacts", [])) if job.answer else []
    progress = progress_of(job, kind, now, spans)
    return JobView(
        job_id=job.job_id,
        kind=job.kind,
        name=job.name,
        state=job.state.value,
        params=job.params,
        progress=progress.fraction,
        units_done=job.units_done,
        total_units=job.total_units,
        unit_name=kind.unit_name,
        created_s=job.created_s,
        finished_s=job.finished_s,
        elapsed_s=elapsed_s,
        error=job.error,
        answer=job.answer,
        live=job.live,
        artefacts=[f"/api/v1/jobs/{job.job_id}/artefacts/{name}" for name in artefacts],
        work_name=kind.work_name(),
        work_total=progress.work_total,
        work_done=progress.work_done,
        throughput=progress.throughput,
        eta_s=progress.eta_s,
        replication=job.replication,
        quorum=job.quorum,
        adaptive=job.adaptive,
        reopened=job.reopened,
        priority=job.priority,
        owner_share=None if share is None else share_view(share),
        waiting_reason=None
        if job.state.finished
        else capacity.waiting_reason(
            job.kind,
            workers_needed(job.quorum, job.adaptive),
            job.required_labels,
            kind.min_worker_version(job.params),
        ),
        required_labels=job.required_labels,
        deadline_s=job.deadline_s,
        carbon=job.carbon.value,
    )


def emissions(zones: list[ZoneTotal]) -> Emissions:
    """Energy and CO2 of accepted copies, from the ledger's sums per zone."""
    gco2 = sum(z.gco2 for z in zones)
    blind = sum(z.gco2_blind for z in zones)
    return Emissions(
        energy_kwh=sum(z.energy_j for z in zones) / JOULES_PER_KWH,
        energy_measured_kwh=sum(z.energy_measured_j for z in zones) / JOULES_PER_KWH,
        gco2=gco2,
        gco2_blind=blind,
        saved_share=1 - gco2 / blind if blind > 0 else 0.0,
        zones=[
            ZoneEmissions(
                zone=z.zone, chunks=z.chunks, energy_kwh=z.energy_j / JOULES_PER_KWH, gco2=z.gco2
            )
            for z in zones
        ],
    )


async def full_job_view(
    c: Coordinator,
    job: Job,
    capacity: PoolCapacity,
    shares: dict[str, OwnerShare] | None = None,
) -> JobView:
    """One job's view, with its energy and CO2 so far (read from the ledger)."""
    view = job_view(c, job, capacity, shares, (await lease_spans(c, [job])).get(job.job_id))
    view.emissions = emissions(await c.call(c.store.credit_by_zone, job.job_id))
    return view


@router.post("/jobs", status_code=status.HTTP_201_CREATED, response_model=JobView)
async def submit_job(
    body: JobSubmit, c: CoordinatorDep, request: Request, response: Response, principal: Submitter
) -> JobView:
    """Submit a job of an installed kind; parameters are validated by the kind. A kind that
    runs submitted code (``wasm``) needs the role the pool's admin chose for it, and its
    module and input uploaded first (``PUT /api/v1/blobs/{sha256}``)."""
    params = body.params
    if body.kind in c.store.kinds:
        kind = c.store.kinds.get(body.kind)
        if kind.runs_submitted_code:
            require_code_role(principal, request.app.state.security)
        if kind.checked_blobs:  # e.g. compiling a module: off the store thread
            await asyncio.to_thread(check_blobs, c.store.blobs, kind, params)
        # The kind's plan (a Mandelbrot view's cost estimate: tens of milliseconds) off the
        # store thread, which serves the exchanges meanwhile, and before the job's clock
        # starts, so its rate and ETA do not count it; the store plans the planned
        # parameters again, unchanged (what plan promises), from the kind's cache.
        params = await asyncio.to_thread(lambda: kind.plan(kind.validate(body.params)))
    job = await c.call(
        c.store.submit_job,
        body.kind,
        params,
        c.clock(),
        body.name,
        body.target_chunk_s,
        principal.key_id,
        body.replication,
        body.quorum,
        body.adaptive,
        body.priority,
        body.required_labels,
        body.deadline_s,
        CarbonMode(body.carbon),
    )
    c.wake_all_waiters()  # whichever held workers run its kind take it now
    response.headers["Location"] = f"/api/v1/jobs/{job.job_id}"
    c.events.publish({job.job_id})
    view = job_view(c, job, await c.capacity(max_age_s=0.0), await owner_shares(c))
    log.info(
        "job %s (%s, %d %ss) submitted by %s%s",
        job.job_id,
        job.kind,
        job.total_units,
        view.unit_name,
        principal.key_id or "anonymous",
        f"; waiting: {view.waiting_reason}" if view.waiting_reason else "",
    )
    return view


def check_blobs(blobs: BlobStore, kind: JobKind, params: dict[str, Any]) -> None:
    """Show the kind the blobs it checks at submission (missing ones are the store's to
    refuse).

    Raises:
        InvalidParams: the parameters are invalid, or a blob is unusable.
    """
    canonical = kind.validate(params)
    named = kind.blobs(canonical)
    for role in kind.checked_blobs:
        file = open_content(blobs, named[role]) if role in named else None
        if file is not None:
            with file:
                kind.check_blob(canonical, role, file.read())


@router.get("/jobs", response_model=JobList)
async def list_jobs(
    c: CoordinatorDep,
    principal: Viewer,
    state: JobState | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> JobList:
    """Jobs, newest first (for a submitter, its own)."""
    owner = None if principal.sees_all_jobs() else principal.key_id
    jobs = await c.call(c.store.list_jobs, state, limit, owner)
    capacity, shares = await c.capacity(), await owner_shares(c)
    spans = await lease_spans(c, jobs)
    return JobList(jobs=[job_view(c, j, capacity, shares, spans.get(j.job_id)) for j in jobs])


@router.get("/shares", response_model=ShareList)
async def list_shares(c: CoordinatorDep, principal: Viewer) -> ShareList:
    """Every submitter's share of the pool and recent usage (for a submitter, its own):
    the fair share gives each submitter with running jobs a part of the pool's compute in
    proportion to its key's weight."""
    shares = await c.call(c.store.owner_shares, c.clock())
    if not principal.sees_all_jobs():
        shares = [s for s in shares if s.owner == principal.key_id]
    return ShareList(
        owners=[share_view(s) for s in shares], half_life_s=c.store.fair_share.half_life_s
    )


@router.get("/jobs/{job_id}", response_model=JobView)
async def get_job(
    job_id: str,
    c: CoordinatorDep,
    principal: Viewer,
    wait_s: Annotated[
        float,
        Query(
            ge=0,
            le=MAX_JOB_WAIT_S,
            description="Hold the answer until the job finishes, at most this long.",
        ),
    ] = 0.0,
) -> JobView:
    """A job with its progress and its kind's live summary of results so far; with
    ``wait_s``, answered as soon as the job finishes, or after ``wait_s`` seconds (at most
    the coordinator's ``max_wait_s``)."""
    if wait_s <= 0:
        job = await visible_job(c, principal, job_id)
        return await full_job_view(c, job, await c.capacity(), await owner_shares(c))
    with c.events.job_end(job_id) as ended:  # before the read: an end in between wakes it
        job = await visible_job(c, principal, job_id)
        if not (job.state.finished or c.is_closing):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ended.wait(), min(wait_s, c.config.max_wait_s))
            job = await c.call(c.store.get_job, job_id)
    return await full_job_view(c, job, await c.capacity(), await owner_shares(c))


@router.post("/jobs/{job_id}/cancel", response_model=JobView)
async def cancel_job(job_id: str, c: CoordinatorDep, principal: Submitter) -> JobView:
    """Stop a running job (a submitter's own, or any for an admin); 409 if finished."""
    job = await visible_job(c, principal, job_id)
    if principal.role is not Role.ADMIN and job.owner != principal.key_id:
        raise NotFound(f"no job {job_id!r}")
    job = await c.call(c.store.cancel_job, job_id, c.clock())
    c.events.publish({job.job_id}, ended={job.job_id})
    log_job_end(job)
    return job_view(c, job, await c.capacity())


@router.get("/jobs/{job_id}/result")
async def job_result(job_id: str, c: CoordinatorDep, principal: Viewer) -> dict[str, object]:
    """The answer of a finished job; 409 while it runs or if it failed."""
    job = await visible_job(c, principal, job_id)
    if job.state is not JobState.DONE:
        detail = f"job {job_id!r} is {job.state.value}"
        if job.error:
            detail += f": {job.error}"
        raise Conflict(detail, state=job.state.value)
    return {"job_id": job.job_id, "kind": job.kind, "params": job.params, "answer": job.answer}


@router.get(
    "/jobs/{job_id}/artefacts/{name}",
    response_class=Response,
    responses={200: {"content": {"image/png": {}, "application/octet-stream": {}}}},
)
async def job_artefact(job_id: str, name: str, c: CoordinatorDep, principal: Viewer) -> Response:
    """A finished job's artefact, e.g. ``image.png`` or ``counts.npy`` of a Mandelbrot job,
    streamed from the blob store (rendered there on the first download)."""
    await visible_job(c, principal, job_id)
    artefact = await c.artefact(job_id, name)
    headers = {
        "Content-Disposition": f'attachment; filename="{job_id}-{name}"',
        "Content-Length": str(artefact.size_bytes),
    }
    # A plain iterator: Starlette reads it on a thread, a piece at a time.
    return StreamingResponse(artefact.pieces(), media_type=artefact.media_type, headers=headers)
