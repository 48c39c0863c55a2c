"""Recorded intensity time series, replayed: for tests, benchmarks and the simulator.

A trace is a CSV file per zone, ``time,gco2_per_kwh`` (any name for the second column), the
time in UTC as ``YYYY-MM-DD HH:MM:SS`` (or ISO 8601), optionally gzip-compressed; the zone
is the file's name less a trailing year and the extensions (``DE-2020.csv.gz``: ``DE``).

The package ships three of 2020 (``data/``: Germany every 15 min, Great Britain and France
every 30 min), from the data sets published with P. Wiesner, I. Behnke, D. Scheinert,
K. Gontarska and L. Thamsen, "Let's Wait Awhile: How Temporal Workload Shifting Can Reduce
Carbon Emissions in the Cloud", Middleware '21 (doi 10.1145/3464298.3493399), computed there
from the ENTSO-E Transparency Platform's production data with the IPCC's per-source
emission factors. Cite that paper and ENTSO-E wherever their results are reported.

A time within a trace's range is looked up as it is (the simulator's clock runs in 2020);
any other time is replayed at the same position in the trace's year (a coordinator running
today sees 2020's intensity of the same day and hour). By default the trace is its own
forecast: a perfect one, which overstates what a real forecast allows. The simulator can
instead forecast by persistence (``forecast="persistence"``): every hour ahead as it was
24 hours before, the intensity now as it is, the usual baseline of carbon-intensity
forecasting, whose errors are those of a day that does not repeat the one before.
"""

from __future__ import annotations

import bisect
import csv
import gzip
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

from hydracompute.carbon import IntensitySource
from hydracompute.carbon.annual import AnnualTable, annual_table
from hydracompute.core.carbon import Point, normal_zone

#: How far ahead :meth:`TraceSource.upcoming` looks, like the APIs' 48 h forecasts.
FORECAST_HORIZON_S = 48 * 3600.0
#: How a :class:`TraceSource` forecasts: the trace itself, or the day before repeated.
FORECASTS = ("perfect", "persistence")
DAY_S = 86400.0
_YEAR_SUFFIX = re.compile(r"-\d{4}$")


def _parse_time(text: str) -> float:
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _year_start(year: int) -> float:
    return datetime(year, 1, 1, tzinfo=UTC).timestamp()


@dataclass(frozen=True)
class Trace:
    """One zone's recorded intensities, in time order."""

    zone: str
    times_s: Sequence[float]
    values: Sequence[float]

    def __post_init__(self) -> None:
        if not self.times_s or len(self.times_s) != len(self.values):
            raise ValueError(f"trace of {self.zone}: no rows, or times and values differ")

    @property
    def year(self) -> int:
        """The year most of the trace lies in."""
        middle = self.times_s[len(self.times_s) // 2]
        return datetime.fromtimestamp(middle, UTC).year

    def trace_time(self, at_s: float) -> float:
        """Where ``at_s`` falls in the trace (see the module's docstring)."""
        if self.times_s[0] <= at_s <= self.times_s[-1]:
            return at_s
        year = datetime.fromtimestamp(at_s, UTC).year
        mapped = _year_start(self.year) + (at_s - _year_start(year))
        return min(max(mapped, self.times_s[0]), self.times_s[-1])

    def at(self, at_s: float) -> float:
        """The intensity recorded at ``at_s`` (the latest row at or before it)."""
        t = self.trace_time(at_s)
        i = max(bisect.bisect_right(self.times_s, t) - 1, 0)
        return self.values[i]

    def between(self, start_s: float, end_s: float) -> list[Point]:
        """The rows over ``[start_s, end_s)``, the first at ``start_s``, in the caller's
        time (a replayed year is shifted back to it)."""
        t0 = self.trace_time(start_s)
        shift = start_s - t0
        first = max(bisect.bisect_right(self.times_s, t0) - 1, 0)
        last = bisect.bisect_left(self.times_s, t0 + (end_s - start_s))
        points = [Point(start_s, self.values[first])]
        points += [Point(self.times_s[i] + shift, self.values[i]) for i in range(first + 1, last)]
        return points


def read_trace(zone: str, lines: Iterable[str]) -> Trace:
    rows = csv.reader(lines)
    header = next(rows, None)
    if header is None or len(header) < 2:
        raise ValueError(f"trace of {zone}: expected a header 'time,gco2_per_kwh'")
    pairs = sorted((_parse_time(r[0]), float(r[1])) for r in rows if r)
    return Trace(normal_zone(zone), [p[0] for p in pairs], [p[1] for p in pairs])


def zone_of(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".csv"):
        name = name.removesuffix(suffix)
    return normal_zone(_YEAR_SUFFIX.sub("", name))


def load_trace(path: Path) -> Trace:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", newline="") as file:
        return read_trace(zone_of(path), file)


def load_traces(folder: Path | None = None) -> dict[str, Trace]:
    """The traces of a folder (``*.csv``, ``*.csv.gz``), by zone; the shipped ones without
    a folder."""
    if folder is None:
        shipped = resources.files("hydracompute.carbon").joinpath("data")
        traces = {}
        for entry in shipped.iterdir():
            if entry.name.endswith(".csv.gz"):
                with gzip.open(io.BytesIO(entry.read_bytes()), "rt", encoding="utf-8") as file:
                    trace = read_trace(zone_of(Path(entry.name)), file)
                traces[trace.zone] = trace
        return traces
    files = sorted([*folder.glob("*.csv"), *folder.glob("*.csv.gz")])
    if not files:
        raise ValueError(f"no trace (*.csv, *.csv.gz) in {folder}")
    return {t.zone: t for t in map(load_trace, files)}


class TraceSource(IntensitySource):
    """Recorded traces replayed; a zone without one is at its annual average.

    Also an :class:`~hydracompute.core.carbon.IntensityView` itself (lookups in memory),
    which is how the simulator uses it.
    """

    name = "trace"

    def __init__(
        self,
        traces: dict[str, Trace],
        table: AnnualTable | None = None,
        shift_s: float = 0.0,
        forecast: str = "perfect",
    ) -> None:
        """``shift_s``: added to every time asked about (a simulation whose virtual time 0
        is a chosen moment of the traces); ``forecast``: one of :data:`FORECASTS` (see the
        module's docstring)."""
        if forecast not in FORECASTS:
            raise ValueError(f"forecast must be one of {', '.join(FORECASTS)}, not {forecast!r}")
        self.traces = traces
        self.table = table or annual_table()
        self.shift_s = shift_s
        self.persistence = forecast == "persistence"

    def intensity(self, zone: str, at_s: float) -> float:
        trace = self.traces.get(normal_zone(zone))
        return self.table.average(zone) if trace is None else trace.at(at_s + self.shift_s)

    def forecast(self, zone: str, start_s: float, end_s: float) -> Sequence[Point]:
        if not self.persistence:
            return self._recorded(zone, start_s, end_s)
        _, *day_before = self._recorded(zone, start_s - DAY_S, end_s - DAY_S)
        return [
            Point(start_s, self.intensity(zone, start_s)),
            *(Point(p.time_s + DAY_S, p.gco2_per_kwh) for p in day_before),
        ]

    def _recorded(self, zone: str, start_s: float, end_s: float) -> Sequence[Point]:
        """The trace over ``[start_s, end_s)``, its first point at ``start_s``."""
        trace = self.traces.get(normal_zone(zone))
        if trace is None:
            return [Point(start_s, self.table.average(zone))]
        if not self.shift_s:
            return trace.between(start_s, end_s)
        shift = self.shift_s
        first, *rest = trace.between(start_s + shift, end_s + shift)
        # The first point at start_s itself: shifted there and back in floating point, it
        # would fall a hair after it.
        return [
            Point(start_s, first.gco2_per_kwh),
            *(Point(p.time_s - shift, p.gco2_per_kwh) for p in rest),
        ]

    async def latest(self, zone: str, now: float) -> Point | None:
        return Point(now, self.intensity(zone, now))

    async def upcoming(self, zone: str, now: float) -> Sequence[Point]:
        return self.forecast(zone, now, now + FORECAST_HORIZON_S)
