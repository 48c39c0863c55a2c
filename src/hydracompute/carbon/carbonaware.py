"""The Green Software Foundation's Carbon Aware SDK, through its WebAPI.

``GET /emissions/bylocation?location=L&time=…&toTime=…`` answers a list of EmissionsData,
``[{"location": "eastus", "time": "2022-05-17T20:45:11+00:00", "rating": 70, "duration":
"…"}]`` (g/kWh); ``GET /emissions/forecasts/current?location=L`` answers a list of forecasts,
one per location, each with ``forecastData``: ``[{"location": "IE", "timestamp": "…",
"duration": 10, "value": 448.4}, …]``. Locations are whatever the WebAPI's data source
knows (its configured regions or zones). The WebAPI runs where its operator deploys it
(``--carbon-source carbon-aware-sdk:URL``); a key for its own upstream stays in its config.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import httpx

from hydracompute.carbon import CarbonSourceError
from hydracompute.carbon.http import HTTPSource, point
from hydracompute.core.carbon import Point

#: How far back ``/emissions/bylocation`` is asked for the latest observation.
LOOKBACK_S = 6 * 3600.0


def _iso(at_s: float) -> str:
    return datetime.fromtimestamp(at_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class CarbonAwareSDK(HTTPSource):
    name = "carbon-aware-sdk"

    def __init__(self, base_url: str, client: httpx.AsyncClient | None = None) -> None:
        super().__init__(base_url, None, client)

    async def latest(self, zone: str, now: float) -> Point | None:
        params = {"location": zone, "time": _iso(now - LOOKBACK_S), "toTime": _iso(now)}
        body = await self.get_json("/emissions/bylocation", params)
        if body is None:
            return None
        if not isinstance(body, list):
            raise CarbonSourceError(f"{self.name}: expected a list of emissions data")
        points = [point(e.get("time"), e.get("rating")) for e in body if isinstance(e, dict)]
        return max(points, key=lambda p: p.time_s) if points else None

    async def upcoming(self, zone: str, now: float) -> Sequence[Point]:
        body = await self.get_json("/emissions/forecasts/current", {"location": zone})
        if body is None:
            return []
        if not isinstance(body, list):
            raise CarbonSourceError(f"{self.name}: expected a list of forecasts")
        points = []
        for forecast in body:
            data = forecast.get("forecastData") if isinstance(forecast, dict) else None
            if not isinstance(data, list):
                raise CarbonSourceError(f"{self.name}: a forecast without forecastData")
            points += [
                point(e.get("timestamp"), e.get("value")) for e in data if isinstance(e, dict)
            ]
        return sorted(points, key=lambda p: p.time_s)
