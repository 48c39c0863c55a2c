"""The pool's grids: each zone's carbon intensity now and ahead, and where chunks went."""

from __future__ import annotations

from fastapi import APIRouter

from hydracompute.carbon.cache import IntensityCache
from hydracompute.coordinator.auth import CoordinatorDep, Viewer
from hydracompute.coordinator.schemas import CarbonView, ZoneView

router = APIRouter(prefix="/api/v1", tags=["carbon"])
#: How far ahead each zone's expected intensity is shown.
FORECAST_S = 24 * 3600.0
#: Zones shown at most (the workers name them).
MAX_ZONES = 50


def _origin(view: object, zone: str) -> str:
    """Where a zone's figure comes from: a cache knows per zone; a trace is its own."""
    if isinstance(view, IntensityCache):
        return view.origin(zone) if zone else view.source.name
    return str(getattr(view, "name", ""))


@router.get("/carbon", response_model=CarbonView)
async def carbon(c: CoordinatorDep, _: Viewer) -> CarbonView:
    """The zones of the pool's workers (and of accepted copies): their intensity now from
    the coordinator's carbon source, the next 24 hours as it expects them, the workers and
    cores online there, and the copies accepted from them with their CO2. It sums the
    ledger by zone: read it now and then, not on every event."""
    now = c.clock()
    view = c.store.grid.view
    workers = await c.call(c.store.list_workers)
    totals = {t.zone: t for t in await c.call(c.store.credit_by_zone)}
    online: dict[str, tuple[int, int]] = {}
    for w in workers:
        if w.grid_zone and w.online(now, c.config.lease_ttl_s):
            count, cores = online.get(w.grid_zone, (0, 0))
            online[w.grid_zone] = (count + 1, cores + w.cores)
    zones = sorted({w.grid_zone for w in workers if w.grid_zone} | {z for z in totals if z})
    shown = []
    for zone in zones[:MAX_ZONES]:
        total = totals.get(zone)
        count, cores = online.get(zone, (0, 0))
        gco2 = view.intensity(zone, now) if view is not None else 0.0
        forecast = view.forecast(zone, now, now + FORECAST_S) if view is not None else []
        shown.append(
            ZoneView(
                zone=zone,
                gco2_per_kwh=gco2,
                origin=_origin(view, zone) if view is not None else "none",
                forecast=[(p.time_s, p.gco2_per_kwh) for p in forecast],
                workers_online=count,
                cores_online=cores,
                chunks=total.chunks if total else 0,
                gco2=total.gco2 if total else 0.0,
            )
        )
    return CarbonView(
        source="none" if view is None else _origin(view, "") or "annual",
        zones=shown,
        gco2=sum(t.gco2 for t in totals.values()),
        gco2_blind=sum(t.gco2_blind for t in totals.values()),
    )
