"""The grid-aware dispatch policy (core/carbon.py): pure, with the clock and the
intensities handed in."""

from __future__ import annotations

import math

import pytest

from hydracompute.core import carbon
from hydracompute.core.carbon import CarbonMode, Point, ZoneOutlook

HOUR = 3600.0


def flat(zone: str, units_per_s: float, gco2: float) -> ZoneOutlook:
    return ZoneOutlook(zone, units_per_s, [Point(0.0, gco2)])


def test_spatial_only_the_cleanest_zones_that_hold_the_work_may_take_it() -> None:
    zones = [flat("FR", 10, 50), flat("GB", 10, 200), flat("DE", 10, 400)]
    # 12 h ahead; the work needs 2 h of the whole pool (30 units/s): with the margin
    # (3 h of the pool = 9 zone-hours) France alone (12 zone-hours) holds it.
    limit = carbon.threshold(zones, 30 * 2 * HOUR, now=0.0, deadline_s=12 * HOUR)
    assert limit == 50
    assert carbon.may_take(limit, 50) and not carbon.may_take(limit, 200)
    # 5 h of the pool with the margin is 22.5 zone-hours: France and Britain are needed.
    limit = carbon.threshold(zones, 30 * 5 * HOUR, now=0.0, deadline_s=12 * HOUR)
    assert limit == 200
    assert carbon.may_take(limit, 200) and not carbon.may_take(limit, 400)


def test_temporal_work_waits_for_the_clean_hours_of_the_forecast() -> None:
    # One zone: dirty for 6 h, then clean for 6 h.
    de = ZoneOutlook("DE", 10, [Point(0, 500), Point(6 * HOUR, 150), Point(12 * HOUR, 500)])
    limit = carbon.threshold([de], 10 * 2 * HOUR, now=0.0, deadline_s=12 * HOUR)
    assert limit == 150
    assert not carbon.may_take(limit, 500)  # held back now
    # Later, in the clean hours, it runs.
    later = carbon.threshold([de], 10 * 2 * HOUR, now=7 * HOUR, deadline_s=12 * HOUR)
    assert carbon.may_take(later, 150)


def test_no_slack_lets_every_worker_take_the_work() -> None:
    zones = [flat("FR", 10, 50), flat("DE", 10, 400)]
    # 20 units/s for 12 h is 864,000 units; 600,000 with the half margin needs 15 h.
    assert carbon.threshold(zones, 600_000, now=0.0, deadline_s=12 * HOUR) is None
    # Past the deadline, too.
    assert carbon.threshold(zones, 1, now=13 * HOUR, deadline_s=12 * HOUR) is None


def test_as_the_deadline_nears_the_threshold_rises_to_every_zone() -> None:
    zones = [flat("FR", 10, 50), flat("GB", 10, 200), flat("DE", 10, 400)]
    work = 30 * 2 * HOUR
    # The work with its margin is 9 zone-hours.
    limits = [
        carbon.threshold(zones, work, now=t * HOUR, deadline_s=12 * HOUR)
        for t in (0, 3, 4, 7, 8, 9.5)
    ]
    assert limits[:2] == [50, 50]  # France's 12, then 9 zone-hours hold it
    assert limits[2:4] == [200, 200]  # 8 h left: France's 8 do not; with Britain's, 16
    assert limits[4] == 400  # 4 h left: France's and Britain's 8 do not
    assert limits[5] is None  # 2.5 h left: 3 h of the whole pool are needed


def test_an_unknown_speed_or_no_work_holds_nothing_back() -> None:
    assert carbon.threshold([], 100, now=0.0, deadline_s=HOUR) is None
    assert carbon.threshold([flat("DE", 0, 400)], 100, now=0.0, deadline_s=HOUR) is None
    assert carbon.threshold([flat("DE", 10, 400)], 0, now=0.0, deadline_s=HOUR) is None


def test_slots_follow_the_forecast_points_and_the_step() -> None:
    outlook = ZoneOutlook("DE", 2, [Point(-100, 300), Point(1800, 100)])
    got = list(carbon.slots(outlook, 0.0, 3600.0, step_s=900.0))
    assert got == [(300, 1800.0), (300, 1800.0), (100, 1800.0), (100, 1800.0)]
    assert sum(units for _, units in got) == 2 * 3600


def test_grams_and_the_mean_intensity() -> None:
    assert carbon.grams(3.6e6, 250) == 250  # 1 kWh at 250 g/kWh
    assert carbon.mean_intensity({"FR": 1, "DE": 3}, {"FR": 40, "DE": 400}) == 310
    assert math.isnan(carbon.mean_intensity({}, {}))


@pytest.mark.parametrize(
    ("zone", "valid"),
    [
        ("DE", True),
        ("US-CAL-CISO", True),
        ("dk-dk1", True),
        ("", False),
        ("1X", False),
        ("DE;drop", False),
        ("X" * 41, False),
        ("DÉ", False),
    ],
)
def test_zone_codes(zone: str, valid: bool) -> None:
    assert carbon.valid_zone(carbon.normal_zone(zone)) is valid


def test_deadline_and_mode_are_checked_together() -> None:
    assert carbon.deadline_errors(None, CarbonMode.BLIND) == {}
    assert carbon.deadline_errors(6 * HOUR, CarbonMode.PREFER_CLEAN) == {}
    assert "carbon" in carbon.deadline_errors(None, CarbonMode.PREFER_CLEAN)
    assert "deadline_s" in carbon.deadline_errors(1.0, CarbonMode.BLIND)
    assert "deadline_s" in carbon.deadline_errors(8 * 24 * HOUR, CarbonMode.BLIND)
