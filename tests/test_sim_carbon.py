"""Grid-aware dispatch in the simulator: the real store, a virtual clock over the shipped
2020 traces, workers in Germany and France, and the same job dispatched both ways."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest

from hydracompute.carbon.traces import load_traces
from hydracompute.core.carbon import Point
from hydracompute.errors import InvalidParams
from hydracompute.sim import carbon_view, load_scenario, parse_scenario, simulate
from hydracompute.sim.workers import draw_workers

SCENARIO = """
name = "carbon-two-grids"
max_duration_s = 43200
sample_period_s = 600

[coordinator]
target_chunk_s = 300
heartbeat_s = 60

[workers]
count = 4
cores = 1
kinds = ["pi"]
zones = {{ DE = 1, FR = 1 }}

[workers.speed]
pi = 547.0

[workers.availability]
always_on = true

[[jobs]]
kind = "pi"
params = {{ samples = 2_000_000_000_000, seed = 7 }}
arrival_s = 60
deadline_s = 21600
carbon = "{mode}"
"""


def run(mode: str) -> dict[str, Any]:
    report, _ = simulate(parse_scenario(SCENARIO.format(mode=mode)), seed=3)
    assert report["all_jobs_ended"]
    carbon = report["carbon"]
    assert carbon is not None and carbon["deadline_jobs"] == 1
    return carbon  # type: ignore[no-any-return]


def test_a_prefer_clean_job_runs_in_france_within_its_deadline() -> None:
    blind, clean = run("blind"), run("prefer-clean")
    assert clean["deadlines_missed"] == blind["deadlines_missed"] == 0
    # Carbon-blind, both grids compute alike; prefer-clean, Germany only probes its speed.
    assert blind["zones"]["DE"]["chunks"] > 0.3 * blind["zones"]["FR"]["chunks"]
    assert clean["zones"]["DE"]["chunks"] < 0.25 * clean["zones"]["FR"]["chunks"]
    assert clean["gco2"] < 0.75 * blind["gco2"]
    # The ledger's own counterfactual (the pool's mean at submission) sees the saving too.
    assert clean["gco2_blind_estimate"] > clean["gco2"]
    assert blind["gco2_blind_estimate"] == blind["gco2"]


def test_the_traces_start_where_the_scenario_says_and_zones_are_split_by_weight() -> None:
    scenario = load_scenario("three-grids")
    start = datetime(2020, 3, 2, tzinfo=UTC).timestamp()
    assert scenario.carbon_start_s == start
    view = carbon_view(scenario)
    assert view is not None
    traces = load_traces()
    for zone in ("DE", "GB", "FR"):
        assert view.intensity(zone, 3600.0) == traces[zone].at(start + 3600.0)
        (first, *_rest) = view.forecast(zone, 3600.0, 7200.0)
        assert first.time_s == 3600.0 and first.gco2_per_kwh == traces[zone].at(start + 3600.0)
        # A time that does not survive being shifted into 2020 and back in floating
        # point: the forecast still starts at it, not a hair after.
        (first, second, *_rest) = view.forecast(zone, 71034.926, 80000.0)
        assert first.time_s == 71034.926 < second.time_s
    workers = draw_workers(scenario.population, scenario.saboteurs, random.Random(5))
    assert Counter(w.zone for w in workers) == {"DE": 4, "GB": 4, "FR": 4}
    bad = SCENARIO.format(mode="blind") + '\n[carbon]\nstart = "the spring"\n'
    with pytest.raises(InvalidParams) as refused:
        parse_scenario(bad)
    assert "carbon.start" in refused.value.errors


def test_a_persistence_forecast_is_the_day_before_from_the_intensity_now() -> None:
    scenario = dataclasses.replace(load_scenario("three-grids"), carbon_forecast="persistence")
    view, perfect = carbon_view(scenario), carbon_view(load_scenario("three-grids"))
    assert view is not None and perfect is not None
    day = 86400.0
    for zone in ("DE", "GB", "FR"):
        now = 2 * day + 1234.5
        first, *ahead = view.forecast(zone, now, now + 6 * 3600)
        assert first == Point(now, perfect.intensity(zone, now))  # now is known
        _, *day_before = perfect.forecast(zone, now - day, now - day + 6 * 3600)
        assert ahead == [Point(p.time_s + day, p.gco2_per_kwh) for p in day_before]
        assert len(ahead) >= 11  # the recorded points of six hours (half-hourly at least)
        assert view.intensity(zone, now + 3600) == perfect.intensity(zone, now + 3600)
    bad = SCENARIO.format(mode="blind") + '\n[carbon]\nforecast = "tomorrow"\n'
    with pytest.raises(InvalidParams) as refused:
        parse_scenario(bad)
    assert "carbon.forecast" in refused.value.errors


DEADLINES = """
name = "carbon-deadlines"
max_duration_s = 21600
sample_period_s = 900

[coordinator]
target_chunk_s = 300
heartbeat_s = 60

[workers]
count = 3
cores = 1
kinds = ["pi"]
zones = {{ DE = 1, GB = 1, FR = 1 }}

[workers.speed]
pi = 500.0

[workers.availability]
always_on = true

[carbon]
start = 2020-06-10
forecast = "{forecast}"

[[jobs]]
kind = "pi"
# 30 minutes of the pool's work (3 cores × 500 blocks/s × 1800 s of 2^20 samples), due
# 90 minutes after it arrives; one every 45 minutes.
params = {{ samples = 2_831_155_200_000, seed = 7 }}
arrival_s = 600
count = 3
every_s = 2700
deadline_s = 5400
carbon = "{mode}"
"""


@pytest.mark.parametrize("forecast", ["perfect", "persistence"])
def test_prefer_clean_jobs_meet_their_deadlines_through_the_real_store(forecast: str) -> None:
    """Jobs held back from dirty grids are done by their deadlines, through chunks, leases
    and a virtual clock whose times the traces shift by 2020's (a forecast's first point
    a hair after now once held every zone back until the deadlines were lost); also when
    the forecast is only the day before repeated."""
    results = {}
    for mode in ("blind", "prefer-clean"):
        text = DEADLINES.format(mode=mode, forecast=forecast)
        report, simulation = simulate(parse_scenario(text), seed=1)
        assert report["all_jobs_ended"]
        carbon = report["carbon"]
        assert carbon is not None and carbon["deadline_jobs"] == 3
        assert carbon["deadlines_missed"] == 0, mode
        jobs = {j.job_id: j for j in simulation.store.list_jobs(limit=10)}
        for record in simulation.recorder.jobs.values():
            deadline = jobs[record.job_id].deadline_s
            assert record.ended_s is not None and deadline is not None
            assert record.ended_s <= deadline, (mode, record.ended_s - deadline)
        results[mode] = carbon
    assert results["prefer-clean"]["gco2"] < 0.8 * results["blind"]["gco2"]
