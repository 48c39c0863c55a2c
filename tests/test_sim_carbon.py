"""Grid-aware dispatch in the simulator: the real store, a virtual clock over the shipped
2020 traces, workers in Germany and France, and the same job dispatched both ways."""

from __future__ import annotations

from typing import Any

from hydracompute.sim import parse_scenario, simulate

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
