"""What the live sources share: one httpx client, a timeout, and answers checked on the
way in (a source that answers nonsense is a source that failed)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import httpx

from hydracompute.carbon import CarbonSourceError, IntensitySource
from hydracompute.core.carbon import Point

#: Seconds a source has to answer; the cache refreshes off the request path, so a slow
#: source delays only its own refresh.
TIMEOUT_S = 10.0
#: The highest intensity believed (the dirtiest grids are around 1,000 gCO2/kWh).
MAX_GCO2_PER_KWH = 3000.0


def parse_time(value: Any) -> float:
    """An ISO 8601 time (``Z`` or an offset; UTC if none) as seconds since the epoch."""
    if not isinstance(value, str):
        raise CarbonSourceError(f"expected a time, got {value!r}")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise CarbonSourceError(f"not a time: {value!r}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def parse_intensity(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CarbonSourceError(f"expected an intensity, got {value!r}")
    if not (math.isfinite(value) and 0 <= value <= MAX_GCO2_PER_KWH):
        raise CarbonSourceError(f"implausible intensity {value!r} gCO2/kWh")
    return float(value)


def point(time_value: Any, intensity_value: Any) -> Point:
    return Point(parse_time(time_value), parse_intensity(intensity_value))


class HTTPSource(IntensitySource):
    """A source reached over HTTP at ``base_url``, with ``headers`` on every request."""

    def __init__(
        self,
        base_url: str,
        headers: dict[str, str] | None = None,
        client: httpx.AsyncClient | None = None,
        timeout_s: float = TIMEOUT_S,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = client or httpx.AsyncClient(timeout=timeout_s)
        self._headers = headers or {}

    async def get_json(self, path: str, params: dict[str, str]) -> Any:
        """The JSON answer to ``GET base_url + path``; ``None`` for a 404 (an unknown zone).

        Raises:
            CarbonSourceError: unreachable, an error status, or not JSON.
        """
        try:
            response = await self._client.get(
                self.base_url + path, params=params, headers=self._headers
            )
        except httpx.HTTPError as exc:
            raise CarbonSourceError(f"{self.name}: {type(exc).__name__}: {exc}") from exc
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise CarbonSourceError(
                f"{self.name}: {path} answered {response.status_code}: {response.text[:200]}"
            )
        try:
            return response.json()
        except ValueError as exc:
            raise CarbonSourceError(f"{self.name}: {path} answered no JSON") from exc

    async def aclose(self) -> None:
        await self._client.aclose()
