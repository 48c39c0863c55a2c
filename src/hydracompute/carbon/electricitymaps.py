"""The Electricity Maps API (v3): latest and forecast carbon intensity by zone.

``GET /v3/carbon-intensity/latest?zone=DE`` answers ``{"zone": "DE", "carbonIntensity":
302, "datetime": "2018-04-25T18:07:00.350Z", "updatedAt": "…", …}``;
``GET /v3/carbon-intensity/forecast?zone=DE`` answers ``{"zone": "DE", "forecast":
[{"carbonIntensity": 320, "datetime": "…"}, …], "updatedAt": "…"}`` (gCO2eq/kWh, life-cycle
emission factors by default). The key goes in the ``auth-token`` header; it is read from the
environment (``ELECTRICITYMAPS_API_KEY``), never from a command line. The forecast needs a
commercial plan: a key without it gets an error there, and the zone's latest value stands.
"""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from hydracompute.carbon import CarbonSourceError
from hydracompute.carbon.http import HTTPSource, point
from hydracompute.core.carbon import Point

BASE_URL = "https://api.electricitymap.org"
API_KEY_VARIABLE = "ELECTRICITYMAPS_API_KEY"


class ElectricityMaps(HTTPSource):
    name = "electricitymaps"

    def __init__(
        self, api_key: str, base_url: str = BASE_URL, client: httpx.AsyncClient | None = None
    ) -> None:
        if not api_key:
            raise ValueError(f"the Electricity Maps API needs a key (${API_KEY_VARIABLE})")
        super().__init__(base_url, {"auth-token": api_key}, client)

    async def latest(self, zone: str, now: float) -> Point | None:
        body = await self.get_json("/v3/carbon-intensity/latest", {"zone": zone})
        if body is None:
            return None
        if not isinstance(body, dict) or body.get("carbonIntensity") is None:
            raise CarbonSourceError(f"{self.name}: no carbonIntensity for {zone}")
        return point(body.get("datetime"), body["carbonIntensity"])

    async def upcoming(self, zone: str, now: float) -> Sequence[Point]:
        body = await self.get_json("/v3/carbon-intensity/forecast", {"zone": zone})
        if body is None:
            return []
        entries = body.get("forecast") if isinstance(body, dict) else None
        if not isinstance(entries, list):
            raise CarbonSourceError(f"{self.name}: no forecast list for {zone}")
        points = [
            point(e.get("datetime"), e.get("carbonIntensity"))
            for e in entries
            if isinstance(e, dict)
        ]
        return sorted(points, key=lambda p: p.time_s)
