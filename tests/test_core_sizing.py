"""Chunk sizing and lease timing: pure policies, clock passed in."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hydracompute.core.config import SchedulerConfig
from hydracompute.core.leases import (
    expected_duration_s,
    expected_end_s,
    is_expired,
    wants_backup,
)
from hydracompute.core.models import Lease, LeaseState
from hydracompute.core.sizing import (
    GROWTH,
    MAX_TARGET_S,
    MIN_TAIL_FRACTION,
    SPLIT_SLACK,
    chunk_units,
    load_controlled_target_s,
    split_units,
    updated_speed,
)
from hydracompute.kinds.costs import UnitCosts


def run_worker(true_speed: float, target_s: float, chunks: int, noise: float = 0.0) -> list[float]:
    """Durations of successive chunks of a simulated worker of constant speed."""
    rng = random.Random(7)
    speed: float | None = None
    evidence = 0.0
    durations = []
    for _ in range(chunks):
        units = chunk_units(
            speed=speed,
            target_s=target_s,
            probe_units=1,
            max_units=10**12,
            remaining=10**12,
            share=1.0,
        )
        took = units / true_speed * (1 + rng.uniform(-noise, noise))
        durations.append(took)
        speed, evidence = updated_speed(speed, evidence, units, took, alpha=0.5)
    return durations


@pytest.mark.parametrize("true_speed", [3.0, 1e3, 2.5e6, 1e9])
@pytest.mark.parametrize("target_s", [0.25, 2.0, 10.0])
def test_sizing_converges_to_the_target(true_speed: float, target_s: float) -> None:
    durations = run_worker(true_speed, target_s, chunks=6)
    # Whole units: a chunk cannot be shorter than one unit takes.
    floor = 1 / true_speed
    assert durations[-1] == pytest.approx(max(target_s, floor), rel=0.02, abs=floor)


def test_sizing_tolerates_noisy_timings() -> None:
    durations = run_worker(5e8, 2.0, chunks=30, noise=0.2)
    assert all(1.2 <= d <= 2.8 for d in durations[5:])


def test_probe_chunk_when_speed_unknown() -> None:
    assert (
        chunk_units(speed=None, target_s=2, probe_units=3, max_units=100, remaining=50, share=1.0)
        == 3
    )


def test_tail_chunks_shrink_to_a_fair_share() -> None:
    full = chunk_units(
        speed=100.0, target_s=2, probe_units=1, max_units=10**6, remaining=10**6, share=0.25
    )
    tail = chunk_units(
        speed=100.0, target_s=2, probe_units=1, max_units=10**6, remaining=400, share=0.25
    )
    assert full == 200
    assert tail == 100  # a quarter of what is left: everyone finishes together
    floor = chunk_units(
        speed=100.0, target_s=2, probe_units=1, max_units=10**6, remaining=16, share=0.25
    )
    assert floor == 5  # never below 2.5% of a full chunk (200 units)
    tiny = chunk_units(
        speed=100.0, target_s=2, probe_units=1, max_units=10**6, remaining=3, share=0.25
    )
    assert tiny == 3  # ... capped by what is left


@given(
    speed=st.one_of(st.none(), st.floats(1e-3, 1e12)),
    target_s=st.floats(0.01, 3600),
    probe=st.integers(1, 1000),
    max_units=st.integers(1, 10**9),
    remaining=st.integers(1, 10**15),
    share=st.floats(1e-6, 1.0),
)
def test_chunk_size_always_within_bounds(
    speed: float | None,
    target_s: float,
    probe: int,
    max_units: int,
    remaining: int,
    share: float,
) -> None:
    units = chunk_units(
        speed=speed,
        target_s=target_s,
        probe_units=probe,
        max_units=max_units,
        remaining=remaining,
        share=share,
    )
    assert 1 <= units <= min(max_units, remaining)
    if speed is not None and speed * target_s * MIN_TAIL_FRACTION >= 1:
        assert units >= min(max_units, remaining, int(speed * target_s * MIN_TAIL_FRACTION))


def test_speed_weighs_measurements_by_the_time_they_cover() -> None:
    assert updated_speed(None, 0.0, 100, 2.0, alpha=0.5) == (50.0, 2.0)
    # Equal durations: the newest measurement weighs alpha.
    assert updated_speed(50.0, 2.0, 200, 2.0, alpha=0.5) == (pytest.approx(250 / 3), 3.0)
    # A probe timed at almost nothing is outweighed by the first real chunk.
    probe, evidence = updated_speed(None, 0.0, 1, 0.0, alpha=0.5)
    assert probe == pytest.approx(1e6)
    speed, _ = updated_speed(probe, evidence, 1000, 1.0, alpha=0.5)
    assert speed == pytest.approx(1000, rel=1e-3)


def lease(issued: float, deadline: float, state: LeaseState = LeaseState.ACTIVE) -> Lease:
    return Lease("l", "j", 0, "w", issued_s=issued, deadline_s=deadline, state=state)


def test_expiry_is_strictly_after_the_deadline() -> None:
    assert not is_expired(lease(0, 10), now=10.0)
    assert is_expired(lease(0, 10), now=10.001)
    assert not is_expired(lease(0, 10, LeaseState.DONE), now=99.0)


def test_backup_only_for_overdue_active_leases() -> None:
    assert expected_duration_s(100, 50.0, 2.0) == 2.0
    assert expected_duration_s(100, None, 3.0) == 3.0
    assert not wants_backup(lease(0, 99), 100, 50.0, 2.0, 1.5, now=2.9)
    assert wants_backup(lease(0, 99), 100, 50.0, 2.0, 1.5, now=3.1)
    assert not wants_backup(lease(0, 99, LeaseState.DONE), 100, 50.0, 2.0, 1.5, now=30)


def test_at_the_tail_a_copy_races_a_paused_or_much_slower_holder() -> None:
    # 160 units at 10 units/s: the holder should end at 16 s.
    args = (lease(0, 99), 160, 10.0, 16.0, 1.5)
    # A worker as fast: no copy before the holder is late.
    assert not wants_backup(*args, now=1.0, taker_speed=10.0)
    # Four times as fast (4 s for a copy): while the holder has more than 6 s left.
    assert wants_backup(*args, now=9.9, taker_speed=40.0)
    assert not wants_backup(*args, now=10.1, taker_speed=40.0)
    # ... unless only copies of stragglers are given.
    assert not wants_backup(*args, now=9.9, taker_speed=40.0, race=False)
    # A paused holder computes nothing: a copy at once, to a worker it fits (24 s at most).
    assert wants_backup(*args, now=0.5, holder_paused=True)
    assert wants_backup(*args, now=0.5, taker_speed=7.0, holder_paused=True, race=False)
    assert not wants_backup(*args, now=0.5, taker_speed=6.0, holder_paused=True)
    # Same for a late holder: a worker 2.5 times slower would make the tail in its turn.
    assert wants_backup(*args, now=24.1, taker_speed=10.0, race=False)
    assert not wants_backup(*args, now=99.0, taker_speed=4.0)
    assert not wants_backup(lease(0, 99, LeaseState.DONE), 160, 10.0, 16.0, 1.5, 1.0, 40.0, True)
    # Copies go first to the chunks that would end last: a paused or late holder's, then
    # the latest expected end.
    assert expected_end_s(*args, now=1.0) == 16.0
    assert expected_end_s(*args, now=1.0, holder_paused=True) == math.inf
    assert expected_end_s(*args, now=24.1) == math.inf


def test_lease_ttl_is_three_heartbeats() -> None:
    assert SchedulerConfig(heartbeat_s=2.0).lease_ttl_s == 6.0
    with pytest.raises(ValueError, match="heartbeat_s"):
        SchedulerConfig(heartbeat_s=0)


def test_load_control_keeps_the_target_while_the_pool_is_small() -> None:
    # 2,000 results/s, half of it: 2,000 cores with 2 s chunks send exactly 1,000/s.
    assert load_controlled_target_s(2.0, 2_000, 2000.0, 0.5) == 2.0
    assert load_controlled_target_s(2.0, 10, 2000.0, 0.5) == 2.0


def test_load_control_grows_the_target_with_the_cores_online() -> None:
    # 100,000 four-core workers: 400,000 results per chunk time, 1,000 allowed per second.
    assert load_controlled_target_s(2.0, 400_000, 2000.0, 0.5) == pytest.approx(400.0)
    # the rate it implies is the allowed one
    cores, target = 50_000, load_controlled_target_s(2.0, 50_000, 1000.0, 0.25)
    assert cores / target == pytest.approx(250.0)
    # a job asking for longer chunks than load control needs keeps its own
    assert load_controlled_target_s(600.0, 400_000, 2000.0, 0.5) == 600.0


def test_load_control_is_bounded_and_can_be_off() -> None:
    assert load_controlled_target_s(2.0, 10**9, 2000.0, 0.5) == MAX_TARGET_S
    assert load_controlled_target_s(2.0, 10**9, 0.0, 0.5) == 2.0
    assert load_controlled_target_s(2.0, 10**9, 2000.0, 0.0) == 2.0
    assert load_controlled_target_s(2.0, 0, 2000.0, 0.5) == 2.0


def test_a_reissued_chunk_is_cut_to_fit_its_new_holder_in_equal_parts() -> None:
    # It fits, or nearly (within the slack): given whole.
    assert split_units(100, 100) == 100
    assert split_units(100, 400) == 100
    assert split_units(125, 100) == 125
    # Twice what fits: the worker gets half, the other half waits for the next.
    assert split_units(200, 100) == 100
    # 1.3 times: two parts of 65, not 100 and a sliver of 30.
    assert split_units(130, 100) == 65
    # A worker a tenth as fast (or a probe of one unit) gets a tenth (or one unit).
    assert split_units(1000, 100) == 100
    assert split_units(1000, 1) == 1
    assert split_units(1000, 0) == 1


@given(st.integers(1, 10**15), st.integers(1, 10**15))
def test_the_part_cut_fits_and_leaves_no_sliver(units: int, fit: int) -> None:
    head = split_units(units, fit)
    assert 1 <= head <= units
    if head < units:
        assert head <= fit
        # equal parts (to a unit): what is left is at least one more such part
        assert units - head >= head - 1
    else:
        assert units <= fit * (1 + SPLIT_SLACK)


def test_a_cut_chunk_is_sized_with_the_uncarved_work_counted() -> None:
    # Mid-job, a chunk given back is cut to a full chunk for the asking worker, not to its
    # tail share of the chunk alone.
    kwargs = {"speed": 100.0, "target_s": 2.0, "probe_units": 1, "max_units": 10**9}
    alone = chunk_units(remaining=1000, share=0.01, **kwargs)  # type: ignore[arg-type]
    with_rest = chunk_units(
        remaining=1000,
        share=0.01,
        also_left=10**6,
        **kwargs,  # type: ignore[arg-type]
    )
    assert alone < 200 and with_rest == 200


def test_chunks_grow_to_the_target_by_steps_from_the_evidence() -> None:
    """A speed learnt from a 0.05 s probe sizes the next chunk to at most GROWTH times
    that; with the evidence of a whole target's work, to the target."""
    costs = UnitCosts(10**6, [1.0, 3.0] * (10**6 // 2))  # units of 1 and 3: 2 a unit on average
    common = dict(target_s=2.0, probe_units=1, max_units=10**9, remaining=10**6, share=1.0)
    assert chunk_units(speed=100.0, evidence_s=0.05, costs=costs, **common) == 10  # 20 of cost
    assert chunk_units(speed=100.0, evidence_s=2.0, costs=costs, **common) == 100
    assert chunk_units(speed=100.0, costs=costs, **common) == 100  # no evidence: no bound
    # Units of equal cost: the probe measured the speed, no bound.
    assert chunk_units(speed=100.0, evidence_s=0.05, **common) == 200


def test_a_worker_whose_probe_misjudged_it_tenfold_grows_back_to_the_target() -> None:
    """Its probe's units were estimated ten times dearer than they were: sized on that
    speed at once, its next chunk would take ten targets; by steps it takes at most
    GROWTH times the probe's time, and the sizes settle at the target."""
    probe_units, true_speed, target_s = 4, 100.0, 2.0
    # The probe's units were estimated at 10 each; every other unit's estimate is right.
    costs = UnitCosts(10**6, [10.0] * probe_units + [1.0] * (10**6 - probe_units))
    took = probe_units / true_speed
    speed, evidence = updated_speed(None, 0.0, 10.0 * probe_units, took, alpha=0.5)
    durations, start = [], probe_units
    for _ in range(8):
        units = chunk_units(
            speed=speed,
            target_s=target_s,
            probe_units=probe_units,
            max_units=10**9,
            remaining=10**6 - start,
            share=1.0,
            costs=costs,
            start=start,
            evidence_s=evidence,
        )
        start += units
        took = units / true_speed
        durations.append(took)
        speed, evidence = updated_speed(speed, evidence, units, took, alpha=0.5)
    assert durations[0] <= GROWTH * probe_units / true_speed * 10 + 1e-9
    assert max(durations) <= 2 * target_s
    assert durations[-1] == pytest.approx(target_s, rel=0.05)


def test_a_probe_is_sized_in_cost_when_units_differ() -> None:
    """Sixteen typical units' worth: one dear unit, or sixteen cheap ones."""
    costs = UnitCosts(40, [20.0] * 20 + [1.0] * 20)
    common = dict(speed=None, target_s=2.0, probe_units=16, max_units=100, share=1.0)
    assert chunk_units(remaining=40, costs=costs, start=0, **common) == 1
    assert chunk_units(remaining=20, costs=costs, start=20, **common) == 16
