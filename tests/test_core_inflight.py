"""The work in flight that tail sizing counts: pure bookkeeping, clock passed in."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hydracompute.core.inflight import InFlight
from hydracompute.core.sizing import chunk_units


def test_a_lease_holds_its_work_until_its_expected_end() -> None:
    flight = InFlight()
    flight.granted("j", "l1", "w", speed=50.0, duration_s=2.0, now=10.0)  # 100 units
    assert flight.units("j", 10.0) == pytest.approx(100.0)
    assert flight.units("j", 11.5) == pytest.approx(25.0)
    assert flight.units("other", 11.5) == 0.0
    assert flight.units("j", 12.5) == 0.0
    assert len(flight) == 0  # gone once its end has passed: nothing kept for late leases


def test_a_returned_lease_holds_nothing_and_the_rest_stay() -> None:
    flight = InFlight()
    flight.granted("j", "l1", "w", speed=100.0, duration_s=1.0, now=0.0)
    flight.granted("j", "l2", "w", speed=100.0, duration_s=3.0, now=0.0)
    flight.returned("j", "l1")
    flight.returned("j", "l1")  # twice, or unknown: no effect
    flight.returned("j", "nope")
    assert flight.units("j", 0.5) == pytest.approx(250.0)
    flight.returned("j", "l2")
    assert flight.units("j", 0.5) == 0.0
    assert len(flight) == 0


def test_leases_without_a_known_speed_are_not_counted() -> None:
    flight = InFlight()
    flight.granted("j", "probe", "w", speed=0.0, duration_s=2.0, now=0.0)
    assert len(flight) == 0


@pytest.mark.parametrize("returned", [False, True])
def test_bookkeeping_stays_bounded_over_a_long_job(returned: bool) -> None:
    flight = InFlight()
    for k in range(100_000):  # one lease every 10 ms, each expected to take 2 s
        flight.granted("j", f"l{k}", f"w{k % 300}", speed=100.0, duration_s=2.0, now=k * 0.01)
        if returned and k >= 10:  # results arriving early
            flight.returned("j", f"l{k - 10}")
    assert len(flight) <= 201
    assert len(flight._ends) <= 201  # returned leases' heap entries leave on time too
    assert len(flight._workers) <= 201


def test_a_worker_no_longer_running_a_lease_settles_it() -> None:
    flight = InFlight()
    for lease in ("a1", "a2"):
        flight.granted("j", lease, "a", speed=100.0, duration_s=1.0, now=0.0)
    flight.granted("j", "b1", "b", speed=100.0, duration_s=1.0, now=0.0)
    flight.settle("a", ["a2"])  # a1 finished, its result on the way
    assert flight.units("j", 0.5) == pytest.approx(100.0)
    flight.settle("a", [])
    flight.settle("nobody", [])
    assert flight.units("j", 0.5) == pytest.approx(50.0)  # b1 alone


def test_changes_within_a_failed_block_are_undone() -> None:
    flight = InFlight()
    flight.granted("j", "kept", "w", speed=100.0, duration_s=1.0, now=0.0)
    flight.granted("j", "old", "w", speed=100.0, duration_s=0.5, now=0.0)
    with pytest.raises(RuntimeError), flight.undone_on_error():
        flight.returned("j", "kept")
        flight.granted("j", "new", "w", speed=100.0, duration_s=4.0, now=0.6)  # expires old
        raise RuntimeError("the exchange was refused")
    assert flight.units("j", 0.25) == pytest.approx(75.0 + 25.0)  # as before the block
    assert flight.units("j", 0.75) == pytest.approx(25.0)  # old expires as it would have
    with flight.undone_on_error():
        flight.returned("j", "kept")
    assert flight.units("j", 0.75) == 0.0


@given(
    st.lists(
        st.tuples(
            st.integers(0, 3),  # job
            st.integers(1, 10**6),  # units
            st.floats(1e-3, 1e6),  # speed
            st.floats(0, 100),  # granted at
            st.one_of(st.none(), st.floats(0, 200)),  # returned at
        ),
        max_size=40,
    ),
    st.floats(0, 300),
)
def test_units_in_flight_are_the_sum_over_the_leases_still_running(
    leases: list[tuple[int, int, float, float, float | None]], now: float
) -> None:
    flight = InFlight()
    events = []
    for n, (_, _, _, at, back) in enumerate(leases):
        events.append((at, 0, n))
        if back is not None and back >= at:
            events.append((back, 1, n))
    for t, what, n in sorted(e for e in events if e[0] <= now):
        job, units, speed, _, _ = leases[n]
        if what == 0:
            flight.granted(f"j{job}", f"l{n}", "w", speed, units / speed, t)
        else:
            flight.returned(f"j{job}", f"l{n}")
    for job in range(4):
        expected = sum(
            max(0.0, units - speed * (now - at))
            for (j, units, speed, at, back) in leases
            if j == job and at <= now and (back is None or back < at or back > now)
        )
        assert flight.units(f"j{job}", now) == pytest.approx(expected, rel=1e-6, abs=1e-3)


def makespan(job_units: int, speeds: list[float], count_in_flight: bool) -> tuple[float, int]:
    """A job's end and its number of chunks, cores of ``speeds`` asking whenever free."""
    flight, pool = InFlight(), sum(speeds)
    free = [0.0] * len(speeds)
    carved, chunks = 0, 0
    while carved < job_units:
        core = min(range(len(speeds)), key=free.__getitem__)
        now, speed = free[core], speeds[core]
        units = chunk_units(
            speed=speed,
            target_s=2.0,
            probe_units=1,
            max_units=10**9,
            remaining=job_units - carved,
            share=speed / pool,
            in_flight=flight.units("j", now) if count_in_flight else 0.0,
        )
        flight.granted("j", f"l{chunks}", f"c{core}", speed, units / speed, now)
        carved, chunks = carved + units, chunks + 1
        free[core] = now + units / speed
    return max(free), chunks


@pytest.mark.parametrize("speeds", [[100.0, 100.0], [100.0, 60.0, 30.0], [50.0] * 8])
def test_counting_the_work_in_flight_ends_a_job_sooner_in_fewer_chunks(
    speeds: list[float],
) -> None:
    job = int(sum(speeds) * 5)  # 5 s of the whole pool: a full chunk is 2 s
    ideal = job / sum(speeds)
    counted, counted_chunks = makespan(job, speeds, count_in_flight=True)
    uncounted, uncounted_chunks = makespan(job, speeds, count_in_flight=False)
    assert counted <= ideal * 1.02
    assert counted <= uncounted
    assert counted_chunks < uncounted_chunks
