"""Carbon intensity sources: the annual table, recorded traces, and the two live APIs'
clients against a real HTTP server on loopback answering with each API's documented
response shape; the cache's fallbacks when a source fails."""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from hydracompute.carbon import CarbonSourceError
from hydracompute.carbon.annual import AnnualSource, annual_table
from hydracompute.carbon.cache import IntensityCache, intensity_view
from hydracompute.carbon.carbonaware import CarbonAwareSDK
from hydracompute.carbon.electricitymaps import ElectricityMaps
from hydracompute.carbon.sources import make_source
from hydracompute.carbon.traces import TraceSource, load_traces
from hydracompute.core.carbon import Point

NOW = datetime(2024, 3, 5, 12, 0, tzinfo=UTC).timestamp()


def at(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class FakeAPI:
    """A loopback HTTP server: ``routes`` maps a path to (status, JSON body); every request
    is recorded (path, query, headers)."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, Any]] = {}
        self.requests: list[tuple[str, dict[str, list[str]], dict[str, str]]] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlparse(self.path)
                api.requests.append((url.path, parse_qs(url.query), dict(self.headers)))
                status, body = api.routes.get(url.path, (404, {"error": "not found"}))
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api() -> Iterator[FakeAPI]:
    server = FakeAPI()
    yield server
    server.close()


# Electricity Maps v3, as its documentation shows them.
EM_LATEST = {
    "zone": "DE",
    "carbonIntensity": 302,
    "datetime": "2024-03-05T11:00:00.000Z",
    "updatedAt": "2024-03-05T11:47:01.000Z",
    "createdAt": "2024-03-02T11:50:13.000Z",
    "emissionFactorType": "lifecycle",
    "isEstimated": False,
    "estimationMethod": None,
}
EM_FORECAST = {
    "zone": "DE",
    "forecast": [
        {"carbonIntensity": 320, "datetime": "2024-03-05T13:00:00.000Z"},
        {"carbonIntensity": 180, "datetime": "2024-03-05T14:00:00.000Z"},
        {"carbonIntensity": 250, "datetime": "2024-03-05T15:00:00.000Z"},
    ],
    "updatedAt": "2024-03-05T11:47:01.000Z",
}
# The Carbon Aware SDK WebAPI, as its documentation shows them.
CA_BYLOCATION = [
    {
        "location": "westeurope",
        "time": "2024-03-05T10:00:00+00:00",
        "rating": 290.5,
        "duration": "01:00:00",
    },
    {
        "location": "westeurope",
        "time": "2024-03-05T11:00:00+00:00",
        "rating": 310.0,
        "duration": "01:00:00",
    },
]
CA_FORECAST = [
    {
        "requestedAt": "2024-03-05T12:00:00+00:00",
        "generatedAt": "2024-03-05T11:55:00+00:00",
        "location": "westeurope",
        "dataStartAt": "2024-03-05T12:00:00Z",
        "dataEndAt": "2024-03-05T14:00:00Z",
        "windowSize": 60,
        "optimalDataPoint": {
            "location": "NL",
            "timestamp": "2024-03-05T13:00:00+00:00",
            "duration": 60,
            "value": 150.0,
        },
        "forecastData": [
            {
                "location": "NL",
                "timestamp": "2024-03-05T12:00:00+00:00",
                "duration": 60,
                "value": 280.0,
            },
            {
                "location": "NL",
                "timestamp": "2024-03-05T13:00:00+00:00",
                "duration": 60,
                "value": 150.0,
            },
        ],
    }
]


def test_electricity_maps_latest_and_forecast_with_the_key_in_its_header(api: FakeAPI) -> None:
    api.routes["/v3/carbon-intensity/latest"] = (200, EM_LATEST)
    api.routes["/v3/carbon-intensity/forecast"] = (200, EM_FORECAST)

    async def ask() -> tuple[Point | None, list[Point]]:
        source = ElectricityMaps("secret-key", api.url)
        try:
            return await source.latest("DE", NOW), list(await source.upcoming("DE", NOW))
        finally:
            await source.aclose()

    latest, upcoming = asyncio.run(ask())
    assert latest == Point(at("2024-03-05T11:00:00Z"), 302.0)
    assert [p.gco2_per_kwh for p in upcoming] == [320.0, 180.0, 250.0]
    assert upcoming[1].time_s == at("2024-03-05T14:00:00Z")
    for _path, query, headers in api.requests:
        assert query == {"zone": ["DE"]}
        assert headers.get("auth-token") == "secret-key"
    assert [r[0] for r in api.requests] == [
        "/v3/carbon-intensity/latest",
        "/v3/carbon-intensity/forecast",
    ]


def test_carbon_aware_sdk_latest_observation_and_current_forecast(api: FakeAPI) -> None:
    api.routes["/emissions/bylocation"] = (200, CA_BYLOCATION)
    api.routes["/emissions/forecasts/current"] = (200, CA_FORECAST)

    async def ask() -> tuple[Point | None, list[Point]]:
        source = CarbonAwareSDK(api.url)
        try:
            return await source.latest("westeurope", NOW), list(
                await source.upcoming("westeurope", NOW)
            )
        finally:
            await source.aclose()

    latest, upcoming = asyncio.run(ask())
    assert latest == Point(at("2024-03-05T11:00:00Z"), 310.0)  # the newest observation
    assert upcoming == [
        Point(at("2024-03-05T12:00:00Z"), 280.0),
        Point(at("2024-03-05T13:00:00Z"), 150.0),
    ]
    (path, query, _), _ = api.requests
    assert path == "/emissions/bylocation"
    assert query["location"] == ["westeurope"]
    assert query["toTime"] == ["2024-03-05T12:00:00Z"]  # up to now, not all history


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (401, {"message": "unauthorized"}),
        (500, {"error": "boom"}),
        (200, b"not json"),
        (200, {"zone": "DE"}),  # no intensity
        (200, {**EM_LATEST, "carbonIntensity": -5}),
        (200, {**EM_LATEST, "carbonIntensity": "302"}),
        (200, {**EM_LATEST, "datetime": "yesterday"}),
    ],
)
def test_a_failing_or_nonsensical_answer_is_a_source_error(
    api: FakeAPI, status: int, body: Any
) -> None:
    api.routes["/v3/carbon-intensity/latest"] = (status, body)

    async def ask() -> None:
        source = ElectricityMaps("k", api.url)
        try:
            await source.latest("DE", NOW)
        finally:
            await source.aclose()

    with pytest.raises(CarbonSourceError):
        asyncio.run(ask())


def test_the_cache_keeps_the_last_known_value_then_falls_back_to_the_annual_average(
    api: FakeAPI,
) -> None:
    api.routes["/v3/carbon-intensity/latest"] = (200, EM_LATEST)
    api.routes["/v3/carbon-intensity/forecast"] = (200, EM_FORECAST)
    table = annual_table()

    async def scenario() -> None:
        cache = IntensityCache(ElectricityMaps("k", api.url))
        try:
            # Never heard from: the annual average, at once (no request on the lookup).
            assert cache.intensity("DE", NOW) == table.average("DE")
            assert api.requests == []
            await cache.refresh(NOW)  # the zone asked about is refreshed
            assert cache.intensity("DE", NOW) == 302.0
            assert cache.origin("DE") == "electricitymaps"
            # The forecast's points count from their time on.
            assert cache.intensity("DE", at("2024-03-05T14:30:00Z")) == 180.0
            ahead = cache.forecast("DE", NOW, NOW + 3 * 3600)
            assert [p.gco2_per_kwh for p in ahead] == [302.0, 320.0, 180.0]
            # The source goes down: the last known values stand.
            api.routes.clear()
            api.routes["/v3/carbon-intensity/latest"] = (503, {"error": "down"})
            await cache.refresh(NOW + 600)
            assert cache.intensity("DE", NOW + 600) == 302.0
            assert cache.origin("DE") == "electricitymaps (last known)"
            # A zone the source does not know (404): its country's average.
            assert cache.intensity("US-CAL-CISO", NOW) == table.average("US")
            await cache.refresh(NOW + 1200)
            assert cache.intensity("US-CAL-CISO", NOW) == table.average("US")
        finally:
            await cache.aclose()

    asyncio.run(scenario())


def test_an_unreachable_source_leaves_the_annual_average() -> None:
    async def scenario() -> float:
        # Nothing listens on this loopback port once the server is closed.
        server = FakeAPI()
        url = server.url
        server.close()
        cache = IntensityCache(ElectricityMaps("k", url))
        try:
            cache.intensity("FR", NOW)
            await cache.refresh(NOW)
            return cache.intensity("FR", NOW)
        finally:
            await cache.aclose()

    assert asyncio.run(scenario()) == annual_table().average("FR")


def test_the_annual_table_names_its_countries_and_a_world_mean() -> None:
    table = annual_table()
    assert 40 < table.average("FR") < 100 and 300 < table.average("DE") < 500
    assert table.years["DE"] >= 2022
    assert table.average("de") == table.average("DE")
    assert table.average("DK-DK1") == table.average("DK")  # a sub-zone: its country's
    assert 350 < table.average("ZZ") == table.world_gco2_per_kwh < 600
    assert asyncio.run(AnnualSource(table).latest("FR", NOW)) == Point(NOW, table.average("FR"))


def test_shipped_traces_replay_2020_in_place_and_other_years_at_the_same_time_of_year() -> None:
    source = TraceSource(load_traces())
    assert set(source.traces) == {"DE", "GB", "FR"}
    noon_2020 = datetime(2020, 6, 1, 12, 0, tzinfo=UTC).timestamp()
    trace = source.traces["DE"]
    assert source.intensity("DE", noon_2020) == trace.at(noon_2020)
    assert 100 <= source.intensity("DE", noon_2020) <= 600
    # 2023 (not a leap year): June 1st is day 151 there, May 31st in 2020.
    same_offset = datetime(2023, 6, 1, 12, 0, tzinfo=UTC).timestamp()
    may_31_2020 = datetime(2020, 5, 31, 12, 0, tzinfo=UTC).timestamp()
    assert source.intensity("DE", same_offset) == source.intensity("DE", may_31_2020)
    ahead = source.forecast("DE", noon_2020, noon_2020 + 12 * 3600)
    assert ahead[0].time_s == noon_2020 and len(ahead) == 48  # every 15 min
    # The view of a trace source is the source itself (answers from memory).
    assert intensity_view(source) is source
    assert source.intensity("US", noon_2020) == annual_table().average("US")


def test_a_folder_of_traces_is_read_by_zone(tmp_path: Path) -> None:
    (tmp_path / "NL-2021.csv").write_text(
        "time,gCO2/kWh\n2021-01-01 00:00:00,300\n2021-01-01 01:00:00,100\n"
    )
    with gzip.open(tmp_path / "US-CAL-CISO-2021.csv.gz", "wt") as file:
        file.write("time,gco2_per_kwh\n2021-01-01T00:00:00Z,200\n")
    source = make_source(f"trace:{tmp_path}")
    assert isinstance(source, TraceSource)
    assert set(source.traces) == {"NL", "US-CAL-CISO"}
    half_past = datetime(2021, 1, 1, 1, 30, tzinfo=UTC).timestamp()
    assert source.intensity("NL", half_past) == 100


def test_source_names_are_checked() -> None:
    assert isinstance(make_source("annual"), AnnualSource)
    with pytest.raises(ValueError, match="unknown carbon source"):
        make_source("watttime")
    with pytest.raises(ValueError, match="needs a key"):
        make_source("electricitymaps", environ={})
    with pytest.raises(ValueError, match="URL"):
        make_source("carbon-aware-sdk")
    em = make_source("electricitymaps", environ={"ELECTRICITYMAPS_API_KEY": "k"})
    assert isinstance(em, ElectricityMaps)
    asyncio.run(em.aclose())
