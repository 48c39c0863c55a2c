"""Annual average carbon intensity of electricity per country, shipped with the package.

``data/annual.csv``: one row per country (ISO 3166 alpha-2 code), its average intensity over
a year in gCO2 per kWh (life-cycle), the year, and its generation in TWh. The figures are
Our World in Data's *carbon intensity of electricity* (``carbon_intensity_elec`` of its
energy dataset, built from Ember's Yearly Electricity Data and the Energy Institute's
Statistical Review of World Energy; CC BY 4.0), for each country's latest year available,
2023 for most of the large grids (2022 for most others), as extracted in CodeCarbon's
``global_energy_mix.json`` (MIT licence); codes mapped from alpha-3 to alpha-2 with the ISO
3166 table. Cite "Our World in Data, Ember, Energy Institute" where they are reported.

A zone not in the table (an Electricity Maps sub-zone like ``US-CAL-CISO`` falls back to its
country, ``US``) counts at the generation-weighted mean of the table: the world's.
"""

from __future__ import annotations

import csv
import functools
import io
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources

from hydracompute.carbon import IntensitySource
from hydracompute.core.carbon import Point, normal_zone


@dataclass(frozen=True)
class AnnualTable:
    """Annual averages by zone (gCO2/kWh), their years, and the world's mean."""

    gco2_per_kwh: Mapping[str, float]
    years: Mapping[str, int]
    world_gco2_per_kwh: float

    def average(self, zone: str) -> float:
        """The zone's annual average: its own, its country's, or the world's."""
        zone = normal_zone(zone)
        found = self.gco2_per_kwh.get(zone)
        if found is None:
            found = self.gco2_per_kwh.get(zone.split("-")[0])
        return self.world_gco2_per_kwh if found is None else found

    def known(self, zone: str) -> bool:
        zone = normal_zone(zone)
        return zone in self.gco2_per_kwh or zone.split("-")[0] in self.gco2_per_kwh


def parse_table(text: str) -> AnnualTable:
    values: dict[str, float] = {}
    years: dict[str, int] = {}
    weighted = weight = 0.0
    for row in csv.DictReader(io.StringIO(text)):
        zone = normal_zone(row["zone"])
        values[zone] = float(row["gco2_per_kwh"])
        years[zone] = int(row["year"])
        twh = float(row["generation_twh"] or 0)
        weighted += values[zone] * twh
        weight += twh
    return AnnualTable(values, years, weighted / weight if weight else 475.0)


@functools.cache
def annual_table() -> AnnualTable:
    """The table shipped with the package (read once)."""
    text = resources.files("hydracompute.carbon").joinpath("data/annual.csv").read_text()
    return parse_table(text)


class AnnualSource(IntensitySource):
    """Each zone at its annual average, always (no forecast: a flat line)."""

    name = "annual"

    def __init__(self, table: AnnualTable | None = None) -> None:
        self.table = table or annual_table()

    async def latest(self, zone: str, now: float) -> Point | None:
        return Point(now, self.table.average(zone))
