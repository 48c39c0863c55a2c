"""What the sources last said, kept in memory and refreshed off the request path.

:class:`IntensityCache` is the :class:`~hydracompute.core.carbon.IntensityView` the store
consults on exchanges: it answers from memory at once. A task of the coordinator calls
:meth:`IntensityCache.refresh` now and then for the zones asked about; a source that fails
leaves the last known values in place, and a zone never heard of is at its annual average.
It is a cache a coordinator may lose (several coordinators each keep their own): the truth
is the source.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from hydracompute.carbon import CarbonSourceError, IntensitySource
from hydracompute.carbon.annual import AnnualTable, annual_table
from hydracompute.core.carbon import IntensityView, Point, normal_zone, valid_zone

log = logging.getLogger("hydracompute.carbon")
#: Zones kept at most (a pool's workers name them: a bound on what they can make it fetch).
MAX_ZONES = 500
#: How often the coordinator refreshes the zones it was asked about, by default.
REFRESH_S = 300.0


@dataclass
class ZoneState:
    latest: Point | None = None
    upcoming: list[Point] = field(default_factory=list)
    error: str = ""


class IntensityCache:
    """Latest values and forecasts of a source, by zone; see the module's docstring."""

    def __init__(self, source: IntensitySource, table: AnnualTable | None = None) -> None:
        self.source = source
        self.table = table or annual_table()
        self._zones: dict[str, ZoneState] = {}

    def _state(self, zone: str) -> ZoneState | None:
        zone = normal_zone(zone)
        state = self._zones.get(zone)
        if state is None and valid_zone(zone) and len(self._zones) < MAX_ZONES:
            state = self._zones[zone] = ZoneState()  # refreshed next time round
        return state

    def intensity(self, zone: str, at_s: float) -> float:
        state = self._state(zone)
        if state is None:
            return self.table.average(zone)
        # A forecast point at or before ``at_s`` and after the latest value is fresher.
        best = state.latest
        for p in state.upcoming:
            if p.time_s > at_s:
                break
            if best is None or p.time_s >= best.time_s:
                best = p
        return self.table.average(zone) if best is None else best.gco2_per_kwh

    def forecast(self, zone: str, start_s: float, end_s: float) -> Sequence[Point]:
        points = [Point(start_s, self.intensity(zone, start_s))]
        state = self._state(zone)
        if state is not None:
            points += [p for p in state.upcoming if start_s < p.time_s < end_s]
        return points

    def origin(self, zone: str) -> str:
        """Where the zone's value comes from: the source's name, "annual" (never heard
        from it), with "(last known)" when its last refresh failed."""
        state = self._zones.get(normal_zone(zone))
        if state is None or state.latest is None:
            return "annual"
        return self.source.name + (" (last known)" if state.error else "")

    def zones(self) -> list[str]:
        return sorted(self._zones)

    async def refresh(self, now: float, zones: Iterable[str] = ()) -> None:
        """Ask the source about ``zones`` and every zone asked about so far (each zone's
        failure is logged and leaves what was known)."""
        for zone in zones:
            self._state(zone)
        await asyncio.gather(*(self._refresh_zone(z, now) for z in list(self._zones)))

    async def _refresh_zone(self, zone: str, now: float) -> None:
        state = self._zones[zone]
        try:
            latest = await self.source.latest(zone, now)
            upcoming = await self.source.upcoming(zone, now)
        except CarbonSourceError as exc:
            if state.error != exc.detail:
                log.warning("carbon intensity of %s: %s (keeping the last known)", zone, exc)
            state.error = exc.detail
            return
        if latest is not None:
            state.latest = latest
        state.upcoming = [p for p in upcoming if p.time_s >= now - 3600]
        state.error = ""

    async def run(self, clock: Callable[[], float], every_s: float = REFRESH_S) -> None:
        """Refresh every ``every_s`` seconds, for ever (a task of the coordinator)."""
        while True:
            await self.refresh(clock())
            await asyncio.sleep(every_s)

    async def aclose(self) -> None:
        await self.source.aclose()


def intensity_view(source: IntensitySource) -> IntensityView:
    """What the store consults for ``source``: a recorded trace answers from memory
    itself; any other source through an :class:`IntensityCache`."""
    if isinstance(source, IntensityView):
        return source
    return IntensityCache(source)
