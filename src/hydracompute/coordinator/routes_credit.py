"""The credit statement: the ledger summed per worker or volunteer (admin)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request

from hydracompute.coordinator.auth import Admin, CoordinatorDep, SecurityDep, Viewer
from hydracompute.coordinator.routes_workers import Authorization, authenticate, client_host
from hydracompute.coordinator.schemas import (
    CreditLine,
    CreditStatement,
    Leaderboard,
    LeaderboardEntry,
    VolunteerEntry,
    VolunteerView,
    VolunteerWorker,
    WorkerCredit,
)
from hydracompute.core.credit import (
    JOULES_PER_KWH,
    MICROS,
    CreditTotal,
    Grouping,
    StatementLine,
    statement,
)
from hydracompute.core.models import CredentialKind
from hydracompute.errors import InvalidRequest, NotFound
from hydracompute.store import Store

router = APIRouter(prefix="/api/v1", tags=["credit"])
#: Seconds since the epoch, bounded (a year 10000 date is a typo).
Seconds = Annotated[float | None, Query(ge=0, le=253_402_300_800)]


def _names(store: Store, by: Grouping) -> dict[str, str]:
    if by is Grouping.WORKER:
        return {w.worker_id: w.name for w in store.list_workers()}
    return {t.cred_id: t.name for t in store.credentials.list(CredentialKind.JOIN_TOKEN)}


def _line(line: StatementLine, name: str) -> CreditLine:
    t = line.total
    return CreditLine(
        key=t.key,
        name=name,
        chunks=t.chunks,
        work=t.work,
        credit=t.credit,
        energy_j=t.energy_j,
        energy_kwh=line.energy_kwh,
        payout=line.payout_micros / MICROS,
        payout_micros=line.payout_micros,
        gco2=t.gco2,
        gco2_blind=t.gco2_blind,
    )


@router.get("/workers/{worker_id}/credit", response_model=WorkerCredit, tags=["workers"])
async def worker_credit(
    worker_id: str,
    c: CoordinatorDep,
    settings: SecurityDep,
    request: Request,
    authorization: Authorization = None,
) -> WorkerCredit:
    """A worker's own credit (for ``hydracompute worker status``), with its secret."""
    await authenticate(c, settings, worker_id, authorization, client_host(request.scope))
    found = await c.call(c.store.credit_totals, Grouping.WORKER, None, None, worker_id)
    mine = found[0] if found else None
    return WorkerCredit(
        worker_id=worker_id,
        chunks=mine.chunks if mine else 0,
        work=mine.work if mine else 0.0,
        credit=mine.credit if mine else 0.0,
        energy_kwh=mine.energy_j / JOULES_PER_KWH if mine else 0.0,
    )


#: Volunteers shown on the leaderboard at most.
LEADERBOARD_SIZE = 100


@router.get("/leaderboard", response_model=Leaderboard)
async def leaderboard(c: CoordinatorDep, _: Viewer) -> Leaderboard:
    """The volunteers (join tokens, by name) with the most credit for verified work, at
    most 100, with their share of the pool's credit; for the dashboard. It sums the whole
    ledger: read it now and then, not on every event."""
    found = await c.call(c.store.credit_totals, Grouping.VOLUNTEER)
    names = await c.call(_names, c.store, Grouping.VOLUNTEER)
    total = sum(t.credit for t in found)
    return Leaderboard(
        volunteers=[
            LeaderboardEntry(
                key=t.key,
                name=names.get(t.key, "") or t.key or "(no join token)",
                chunks=t.chunks,
                credit=t.credit,
                energy_kwh=t.energy_j / JOULES_PER_KWH,
                share=t.credit / total if total > 0 else 0.0,
            )
            for t in found[:LEADERBOARD_SIZE]
            if t.credit > 0 or t.chunks > 0
        ],
        total_credit=total,
    )


@router.get("/volunteers/{token_id}", response_model=VolunteerView)
async def volunteer(
    token_id: Annotated[str, Path(max_length=100)],
    c: CoordinatorDep,
    _: Viewer,
    entries: Annotated[int, Query(ge=1, le=200)] = 50,
) -> VolunteerView:
    """One volunteer (a join token, by id; "" is written ``-`` for workers enrolled
    without one): its credit, energy and share of the pool's, its workers with theirs, and
    its latest ``entries`` ledger entries (grants and corrections), for its dashboard page.
    Like the leaderboard it sums the whole ledger: read it now and then."""
    key = "" if token_id == "-" else token_id
    names = await c.call(_names, c.store, Grouping.VOLUNTEER)
    by_volunteer = await c.call(c.store.credit_totals, Grouping.VOLUNTEER)
    mine = next((t for t in by_volunteer if t.key == key), None)
    if key not in names and mine is None:
        raise NotFound(f"no volunteer {token_id!r}")
    workers = [w for w in await c.call(c.store.list_workers) if w.token_id == key]
    by_worker = {t.key: t for t in await c.call(c.store.credit_totals, Grouping.WORKER)}
    recent = await c.call(c.store.recent_credit, key, entries)
    worker_names = {w.worker_id: w.name for w in workers}
    total = sum(t.credit for t in by_volunteer)
    now = c.clock()
    empty = CreditTotal(key, 0, 0.0, 0.0, 0.0)
    held = mine or empty
    return VolunteerView(
        key=key,
        name=names.get(key, "") or key or "(no join token)",
        chunks=held.chunks,
        work=held.work,
        credit=held.credit,
        energy_kwh=held.energy_j / JOULES_PER_KWH,
        share=held.credit / total if total > 0 else 0.0,
        total_credit=total,
        workers=[
            VolunteerWorker(
                worker_id=w.worker_id,
                name=w.name,
                cores=w.cores,
                online=w.online(now, c.config.lease_ttl_s),
                barred=w.barred,
                watts_per_core=w.watts_per_core,
                chunks=(t := by_worker.get(w.worker_id, empty)).chunks,
                credit=t.credit,
                energy_kwh=t.energy_j / JOULES_PER_KWH,
            )
            for w in sorted(
                workers, key=lambda w: (-by_worker.get(w.worker_id, empty).credit, w.name)
            )
        ],
        entries=[
            VolunteerEntry(
                entry_id=e.entry_id,
                time_s=e.time_s,
                kind=e.kind.value,
                worker_id=e.worker_id,
                worker_name=worker_names.get(e.worker_id, ""),
                job_id=e.job_id,
                chunk_index=e.chunk_index,
                work=e.work,
                credit=e.credit,
                energy_j=e.energy_j,
            )
            for e in recent
        ],
    )


@router.get("/credit", response_model=CreditStatement)
async def credit_statement(
    c: CoordinatorDep,
    _: Admin,
    by: Literal["worker", "volunteer"] = "volunteer",
    since_s: Seconds = None,
    until_s: Seconds = None,
    rate_per_kwh: Annotated[float, Query(ge=0, le=1000)] = 0.0,
) -> CreditStatement:
    """The credit each worker or volunteer (join token) earned for verified work over
    ``[since_s, until_s)``, with the energy it spent and what that is paid at
    ``rate_per_kwh``: a payout statement. Corrections (credit withdrawn from a worker found
    lying) are counted in, so the figures are net."""
    if since_s is not None and until_s is not None and until_s < since_s:
        raise InvalidRequest("until_s is before since_s", errors={"until_s": "before since_s"})
    grouping = Grouping(by)
    found = await c.call(c.store.credit_totals, grouping, since_s, until_s)
    names = await c.call(_names, c.store, grouping)
    lines, total = statement(found, rate_per_kwh)
    return CreditStatement(
        by=by,
        since_s=since_s,
        until_s=until_s,
        rate_per_kwh=rate_per_kwh,
        watts_per_core=c.store.credit.watts_per_core,
        lines=[_line(line, names.get(line.total.key, "")) for line in lines],
        total=_line(total, "total"),
    )
