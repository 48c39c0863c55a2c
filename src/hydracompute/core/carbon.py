"""Grid-aware dispatch: which workers may take a job's work now, and what it emitted.

A job may carry a deadline and the carbon mode ``prefer-clean``. The pool then decides,
per job kind, the dirtiest grid intensity at which a worker may take its work now (the
*limit*, :func:`may_take`): :func:`hydracompute.core.carbon_plan.plan_limit` lets a zone
compute now only if cleaner capacity alone (other zones now, or any zone later, from the
forecasts or recorded traces) cannot do the work in hand, the work expected to arrive and
room for a burst before the deadlines, less a guard for chunks, leases and waits
(:func:`~hydracompute.core.carbon_plan.deadline_guard_s`). With one zone this is temporal
shifting; with a forecast that is flat, spatial; with both, both. Jobs without a deadline
are carbon-blind.

:func:`threshold` is the earlier, simpler policy (fill the cleanest capacity slots before
the deadline with the remaining work and a margin; the last slot's intensity is the limit),
kept as the reference ``bench/bench_carbon.py`` compares with: on a bursty year it missed
deadlines that carbon-blind dispatch met (docs/carbon.md).

Emissions are reckoned per accepted copy: its energy (see :mod:`hydracompute.core.credit`)
times its worker's grid intensity when it was accepted; the counterfactual of carbon-blind
dispatch is the same energy at the intensity the job met when it was submitted, averaged
over the zones of the pool's online cores (carbon-blind dispatch gives work to whichever
worker asks, as soon as it is there).

Pure: times are arguments, intensities are data handed in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, runtime_checkable

#: Joules in a kilowatt-hour.
JOULES_PER_KWH = 3.6e6
#: Extra work the cleanest slots must hold beyond the remaining work (0.5: half as much
#: again), for workers that come and go, chunks computed twice, and forecasts that err.
DEFAULT_MARGIN = 0.5
#: The most of the pool's capacity expected to go to work not yet submitted.
MAX_ARRIVING_SHARE = 0.9
#: The step in which a zone's forecast is cut into slots when it gives none finer.
DEFAULT_STEP_S = 900.0
#: The longest deadline a job may ask for (a week), and the shortest (a minute).
MAX_DEADLINE_S = 7 * 24 * 3600.0
MIN_DEADLINE_S = 60.0
#: Zone codes: an ISO country code or an Electricity Maps zone ("US-CAL-CISO", "DK-DK1").
MAX_ZONE_CHARS = 40


class CarbonMode(StrEnum):
    """How a job's work is dispatched with respect to grids."""

    BLIND = "blind"  # as if no grid mattered (the default)
    PREFER_CLEAN = "prefer-clean"  # cleaner workers and hours, within the deadline


def valid_zone(zone: str) -> bool:
    """Whether ``zone`` looks like a grid zone code: letters, digits and dashes, starting
    with a letter, at most ``MAX_ZONE_CHARS`` characters."""
    return (
        0 < len(zone) <= MAX_ZONE_CHARS
        and zone[0].isascii()
        and zone[0].isalpha()
        and all(c.isascii() and (c.isalnum() or c in "-_") for c in zone)
    )


def normal_zone(zone: str) -> str:
    """The canonical spelling of a zone code (upper case; Electricity Maps' codes are)."""
    return zone.strip().upper()


@dataclass(frozen=True)
class Point:
    """The intensity from ``time_s`` on (until the next point), in gCO2 per kWh."""

    time_s: float
    gco2_per_kwh: float


@runtime_checkable
class IntensityView(Protocol):
    """What the scheduler may ask about grids, answered from memory without waiting
    (see :mod:`hydracompute.carbon`): intensities at a time, and forecasts."""

    def intensity(self, zone: str, at_s: float) -> float:
        """The zone's intensity at ``at_s`` (its last known value, or its annual average
        when nothing better is known), in gCO2 per kWh."""
        ...

    def forecast(self, zone: str, start_s: float, end_s: float) -> Sequence[Point]:
        """The zone's expected intensity over ``[start_s, end_s)``, as points in time
        order, the first at or before ``start_s`` (a flat line where nothing is known)."""
        ...


@dataclass(frozen=True)
class ZoneOutlook:
    """One zone of the pool, for one job kind: the units per second of its online cores
    and its expected intensity from now on."""

    zone: str
    units_per_s: float
    forecast: Sequence[Point]


def slots(
    outlook: ZoneOutlook, start_s: float, end_s: float, step_s: float = DEFAULT_STEP_S
) -> Iterable[tuple[float, float]]:
    """``(gco2_per_kwh, units)`` of the zone's capacity over ``[start_s, end_s)``, cut at
    the forecast's points and at least every ``step_s``."""
    points = sorted(outlook.forecast, key=lambda p: p.time_s)
    if not points or end_s <= start_s or outlook.units_per_s <= 0:
        return
    for i, point in enumerate(points):
        begin = max(point.time_s, start_s)
        until = points[i + 1].time_s if i + 1 < len(points) else end_s
        until = min(until, end_s)
        if i == 0:
            begin = start_s  # the first point stands for all before it
        t = begin
        while t < until:
            step_end = min(t + step_s, until)
            yield point.gco2_per_kwh, outlook.units_per_s * (step_end - t)
            t = step_end


def threshold(
    outlooks: Iterable[ZoneOutlook],
    remaining_units: float,
    now: float,
    deadline_s: float,
    margin: float = DEFAULT_MARGIN,
    step_s: float = DEFAULT_STEP_S,
    guard_s: float = 0.0,
    arriving_share: float = 0.0,
) -> float | None:
    """The highest intensity at which a worker may take the job's work now, or ``None``
    when every worker may (no slack left, or nothing known about the pool's speed).

    Args:
        outlooks: the pool's zones for the job's kind (their speed and forecast).
        remaining_units: the work still to be done before ``deadline_s`` (this job's, plus
            that of jobs that come before it).
        margin: extra capacity asked for beyond the remaining work (see ``DEFAULT_MARGIN``).
        guard_s: time kept in hand before the deadline: the last chunks leased take up to
            a lease's lifetime, and the caller may reuse the threshold a while.
        arriving_share: the share of the pool's capacity that work not yet submitted is
            expected to take (the pool's recent load, at most ``MAX_ARRIVING_SHARE``):
            work held back now must not pile up where later jobs will need the cores.
    """
    zones = [o for o in outlooks if o.units_per_s > 0]
    speed = sum(o.units_per_s for o in zones)
    if speed <= 0 or remaining_units <= 0:
        return None
    needed_units = remaining_units * (1 + margin)
    end_s = deadline_s - guard_s
    free = 1 - min(max(arriving_share, 0.0), MAX_ARRIVING_SHARE)
    if needed_units / (speed * free) >= end_s - now:
        return None  # no slack: the whole pool is needed from now on
    found = sorted(
        ((gco2, units * free) for o in zones for gco2, units in slots(o, now, end_s, step_s)),
        key=lambda slot: slot[0],
    )
    held = 0.0
    for gco2, units in found:
        held += units
        if held >= needed_units:
            return gco2
    return None


def may_take(limit: float | None, gco2_per_kwh: float) -> bool:
    """Whether a worker on a grid at ``gco2_per_kwh`` may take work under ``limit``."""
    return limit is None or gco2_per_kwh <= limit + 1e-9


def mean_intensity(weights: Mapping[str, float], intensity_of: Mapping[str, float]) -> float:
    """The intensities of zones averaged with ``weights`` (their cores' speed), or NaN if
    no zone weighs anything."""
    total = sum(w for w in weights.values() if w > 0)
    if total <= 0:
        return math.nan
    return sum(w * intensity_of[z] for z, w in weights.items() if w > 0) / total


def grams(energy_j: float, gco2_per_kwh: float) -> float:
    """The CO2 of ``energy_j`` joules drawn from a grid at ``gco2_per_kwh``."""
    return energy_j / JOULES_PER_KWH * gco2_per_kwh


def deadline_errors(deadline_s: float | None, mode: CarbonMode) -> dict[str, str]:
    """What is wrong with a job's relative deadline (seconds from its submission) and
    carbon mode, by field (empty if nothing)."""
    problems = {}
    if deadline_s is not None and not MIN_DEADLINE_S <= deadline_s <= MAX_DEADLINE_S:
        problems["deadline_s"] = (
            f"must be between {MIN_DEADLINE_S:g} s and {MAX_DEADLINE_S:g} s (a week)"
        )
    if mode is CarbonMode.PREFER_CLEAN and deadline_s is None:
        problems["carbon"] = "prefer-clean needs a deadline: without one a job runs carbon-blind"
    return problems
