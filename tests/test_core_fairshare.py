"""The fair-share policy, driven by a virtual clock: a pool of cores, each taking the first
job the policy offers whenever it is free, every chunk a fixed compute time."""

from __future__ import annotations

import pytest

from hydracompute.core.fairshare import (
    FairSharePolicy,
    RunningJob,
    Usage,
    grant_cost_s,
    weight_of,
)

POLICY = FairSharePolicy(half_life_s=30.0)
CHUNK_S = 1.0


def run_pool(
    jobs_at: dict[float, list[RunningJob]],
    until_s: float,
    cores: int = 8,
    weights: dict[str, float] | None = None,
    idle: dict[str, tuple[float, float]] | None = None,
) -> tuple[dict[str, float], list[tuple[float, str]]]:
    """Core-seconds given to each job between ``until_s / 2`` and ``until_s``, and every
    grant ``(time, job id)``. ``jobs_at``: jobs arriving at each time (they never finish);
    ``idle``: an owner's jobs not runnable during ``[start, end)``."""
    usage: dict[str, Usage] = {}
    running: list[RunningJob] = []
    given: dict[str, float] = {}
    grants: list[tuple[float, str]] = []
    now = 0.0
    while now < until_s:
        running += jobs_at.get(now, [])
        runnable = [
            j
            for j in running
            if not (idle and j.owner in idle and idle[j.owner][0] <= now < idle[j.owner][1])
        ]
        for _ in range(cores):
            if not runnable:
                break
            job = POLICY.job_order(runnable, usage, weights or {}, now)[0]
            usage[job.owner] = POLICY.charged(usage.get(job.owner), CHUNK_S, now)
            grants.append((now, job.job_id))
            if now >= until_s / 2:
                given[job.job_id] = given.get(job.job_id, 0.0) + CHUNK_S
        now += CHUNK_S
    return given, grants


def fractions(given: dict[str, float]) -> dict[str, float]:
    total = sum(given.values())
    return {job: value / total for job, value in given.items()}


def test_two_owners_share_the_pool_equally_whatever_their_jobs_sizes() -> None:
    huge = RunningJob("huge", "pi", "alice")
    small = RunningJob("small", "mandelbrot", "bob")
    given, _ = run_pool({0.0: [huge, small]}, until_s=200)
    assert fractions(given) == pytest.approx({"huge": 0.5, "small": 0.5}, abs=0.02)


def test_weights_divide_the_pool_in_proportion() -> None:
    jobs = [RunningJob("a", "pi", "alice"), RunningJob("b", "pi", "bob")]
    given, _ = run_pool({0.0: jobs}, until_s=400, weights={"alice": 3.0})
    assert fractions(given) == pytest.approx({"a": 0.75, "b": 0.25}, abs=0.02)


def test_within_an_owner_priority_first_then_oldest() -> None:
    old = RunningJob("old", "pi", "alice")
    urgent = RunningJob("urgent", "pi", "alice", priority=5)
    newer = RunningJob("newer", "pi", "alice")
    order = POLICY.job_order([old, urgent, newer], {}, {}, now=0.0)
    assert [j.job_id for j in order] == ["urgent", "old", "newer"]
    given, _ = run_pool({0.0: [old, urgent, newer]}, until_s=20)
    assert set(given) == {"urgent"}  # one owner: its urgent job takes every core


def test_priority_does_not_take_from_another_owner() -> None:
    urgent = RunningJob("urgent", "pi", "alice", priority=100)
    plain = RunningJob("plain", "pi", "bob")
    given, _ = run_pool({0.0: [urgent, plain]}, until_s=200)
    assert fractions(given) == pytest.approx({"urgent": 0.5, "plain": 0.5}, abs=0.02)


def test_a_late_owner_starts_at_once_and_then_shares() -> None:
    huge = RunningJob("huge", "pi", "alice")
    small = RunningJob("small", "pi", "bob")
    _, grants = run_pool({0.0: [huge], 100.0: [small]}, until_s=400)
    first_small = min(t for t, job in grants if job == "small")
    assert first_small == 100.0  # the very next free core after it arrived
    assert {job for t, job in grants if t < 100.0} == {"huge"}
    late = [job for t, job in grants if t >= 300.0]  # long after the catch-up
    assert late.count("small") / len(late) == pytest.approx(0.5, abs=0.05)


def test_an_idle_owner_share_goes_to_the_others() -> None:
    jobs = [
        RunningJob("a", "pi", "alice"),
        RunningJob("b", "pi", "bob"),
        RunningJob("c", "pi", "carol"),
    ]
    # Carol has nothing runnable over the measured half: Alice and Bob split her share.
    given, _ = run_pool({0.0: jobs}, until_s=400, idle={"carol": (150.0, 400.0)})
    assert fractions(given) == pytest.approx({"a": 0.5, "b": 0.5}, abs=0.02)
    given, _ = run_pool({0.0: jobs}, until_s=400)
    assert fractions(given) == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}, abs=0.02)


def test_usage_decays_with_its_half_life_and_never_grows_backwards() -> None:
    usage = Usage(100.0, as_of_s=10.0)
    assert POLICY.usage_at(usage, 40.0) == pytest.approx(50.0)
    assert POLICY.usage_at(usage, 70.0) == pytest.approx(25.0)
    assert POLICY.usage_at(usage, 0.0) == 100.0  # a clock that stepped back
    assert POLICY.charged(usage, 10.0, 40.0) == Usage(pytest.approx(60.0), 40.0)


def test_shares_show_entitlement_and_usage() -> None:
    jobs = [RunningJob("a", "pi", "alice"), RunningJob("a2", "pi", "alice")]
    jobs.append(RunningJob("b", "pi", "bob"))
    usage = {"alice": Usage(30.0, 0.0), "bob": Usage(10.0, 0.0), "gone": Usage(60.0, 0.0)}
    shares = {s.owner: s for s in POLICY.shares(jobs, usage, {"bob": 3.0}, now=30.0)}
    assert shares["bob"].share == pytest.approx(0.75)
    assert shares["alice"].share == pytest.approx(0.25)
    assert shares["alice"].running_jobs == 2
    assert shares["gone"].share == 0.0  # no running job: entitled to nothing now
    assert shares["gone"].usage_s == pytest.approx(30.0)
    assert shares["alice"].usage_fraction == pytest.approx(15.0 / 50.0)


def test_grant_costs_and_weights_are_bounded() -> None:
    assert grant_cost_s(1000, 500.0, 2.0) == 2.0
    assert grant_cost_s(1000, None, 2.0) == 2.0  # unknown speed: the target chunk time
    assert weight_of({"x": 0.0}, "x") > 0
    assert weight_of({}, "anyone") == 1.0
    with pytest.raises(ValueError):
        FairSharePolicy(half_life_s=0.0)
