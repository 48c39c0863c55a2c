"""The exact cleanest schedule (core/carbon_plan.py) against a plain min-cost flow."""

from __future__ import annotations

import random

import pytest

from hydracompute.core.carbon import may_take
from hydracompute.core.carbon_plan import (
    Due,
    Piece,
    Window,
    cleanest_schedule,
    deadline_guard_s,
    plan_limit,
)


def min_cost_flow(slots: int, pieces: list[Piece], work: list[Window]) -> tuple[float, float]:
    """(units done, least CO2) by successive shortest paths (Bellman-Ford) over the
    bipartite graph source → work → pieces → sink: no use of the windows' order."""
    source, sink = 0, 1
    first_work, first_piece = 2, 2 + len(work)
    nodes = first_piece + len(pieces)
    graph: list[list[int]] = [[] for _ in range(nodes)]
    edges: list[list[float]] = []  # [to, capacity, cost]

    def edge(a: int, b: int, capacity: float, cost: float) -> None:
        graph[a].append(len(edges))
        edges.append([b, capacity, cost])
        graph[b].append(len(edges))
        edges.append([a, 0.0, -cost])

    for j, w in enumerate(work):
        edge(source, first_work + j, w.units, 0.0)
        for k, p in enumerate(pieces):
            if w.first <= p.slot < w.end:
                edge(first_work + j, first_piece + k, w.units, 0.0)
    for k, p in enumerate(pieces):
        edge(first_piece + k, sink, p.units, p.gco2_per_kwh)
    done = cost = 0.0
    while True:
        dist = [float("inf")] * nodes
        via: list[int | None] = [None] * nodes
        dist[source] = 0.0
        for _ in range(nodes):
            changed = False
            for a in range(nodes):
                if dist[a] == float("inf"):
                    continue
                for e in graph[a]:
                    b, capacity, c = edges[e]
                    if capacity > 1e-12 and dist[a] + c < dist[int(b)] - 1e-12:
                        dist[int(b)] = dist[a] + c
                        via[int(b)] = e
                        changed = True
            if not changed:
                break
        if dist[sink] == float("inf"):
            return done, cost
        push, node = float("inf"), sink
        while node != source:
            e = via[node]
            assert e is not None
            push = min(push, edges[e][1])
            node = int(edges[e ^ 1][0])
        node = sink
        while node != source:
            e = via[node]
            assert e is not None
            edges[e][1] -= push
            edges[e ^ 1][1] += push
            node = int(edges[e ^ 1][0])
        done += push
        cost += push * dist[sink]


@pytest.mark.parametrize("seed", range(40))
def test_the_greedy_is_as_clean_as_a_min_cost_flow(seed: int) -> None:
    rng = random.Random(seed)
    slots = rng.randint(3, 10)
    zones = rng.randint(1, 3)
    pieces = [
        Piece(t, float(rng.randint(10, 500)), float(rng.randint(0, 4)))
        for t in range(slots)
        for _ in range(zones)
    ]
    length = rng.randint(1, slots)  # one relative deadline: agreeable windows
    work = []
    for _ in range(rng.randint(1, 6)):
        first = rng.randint(0, slots - length)
        work.append(Window(float(rng.randint(1, 5)), first, first + length))
    used = cleanest_schedule(slots, pieces, work)
    done, cost = min_cost_flow(slots, pieces, work)
    assert sum(used) == pytest.approx(done)
    assert sum(u * p.gco2_per_kwh for u, p in zip(used, pieces, strict=True)) == pytest.approx(cost)
    assert all(-1e-9 <= u <= p.units + 1e-9 for u, p in zip(used, pieces, strict=True))


def test_one_job_takes_the_cleanest_slots_of_its_window() -> None:
    costs = [300.0, 100.0, 400.0, 50.0, 10.0]
    pieces = [Piece(t, c, 1.0) for t, c in enumerate(costs)]
    # Slots 0..3 only: slot 4, the cleanest, is past the deadline.
    used = cleanest_schedule(5, pieces, [Window(2.0, 0, 4)])
    assert used == [0.0, 1.0, 0.0, 1.0, 0.0]


def test_windows_that_are_not_agreeable_are_refused() -> None:
    with pytest.raises(ValueError, match="agreeable"):
        cleanest_schedule(4, [Piece(0, 1.0, 1.0)], [Window(1.0, 0, 4), Window(1.0, 1, 2)])


HOUR = 3600.0


def test_work_waits_for_the_clean_hours_and_runs_in_them() -> None:
    # One zone of 10 units/s: dirty for 6 h, clean for 6 h; 2 h of its work due in 12 h.
    de = (10.0, [(0.0, 500.0), (6 * HOUR, 150.0), (12 * HOUR, 500.0)])
    work = [Due(10 * 2 * HOUR, 12 * HOUR)]
    held = plan_limit([de], work, now=0.0, step_s=900.0)
    assert held is not None and not may_take(held, 500)
    later = plan_limit([de], work, now=7 * HOUR, step_s=900.0)
    assert may_take(later, 150)


def test_the_cleaner_zone_takes_the_work_while_it_can_hold_it() -> None:
    fr, de = (10.0, [(0.0, 50.0)]), (10.0, [(0.0, 400.0)])
    # 6 h of one zone's work in 12 h: France alone holds it.
    limit = plan_limit([fr, de], [Due(10 * 6 * HOUR, 12 * HOUR)], now=0.0, step_s=900.0)
    assert may_take(limit, 50) and not may_take(limit, 400)
    # 18 h of one zone's work in 12 h: both zones are needed now.
    limit = plan_limit([fr, de], [Due(10 * 18 * HOUR, 12 * HOUR)], now=0.0, step_s=900.0)
    assert may_take(limit, 50) and may_take(limit, 400)


def test_work_expected_to_arrive_takes_its_share_of_the_clean_hours() -> None:
    # Clean hours at the end of the window: alone, the work waits for them; with as much
    # again arriving, due soon after it arrives, it runs now.
    de = (10.0, [(0.0, 300.0), (8 * HOUR, 100.0)])
    work = [Due(10 * 3 * HOUR, 12 * HOUR)]
    alone = plan_limit([de], work, now=0.0, step_s=900.0)
    assert not may_take(alone, 300)
    crowded = plan_limit(
        [de], work, now=0.0, step_s=900.0, arriving_units_per_s=9.0, arriving_deadline_s=HOUR
    )
    assert may_take(crowded, 300)


def test_a_forecast_point_a_hair_after_now_does_not_hold_every_zone_back() -> None:
    # A forecast whose first point falls a hair after now (a time shifted into a trace's
    # year and back, in floating point): 20 h of the zone's work due in 12 h needs its
    # cores now, whatever the forecast says later.
    now = 71034.926
    de = (10.0, [(now + 1.2e-10 * now, 464.0), (now + 65.0, 470.0), (now + 7 * HOUR, 150.0)])
    limit = plan_limit([de], [Due(10 * 20 * HOUR, now + 12 * HOUR)], now, step_s=900.0)
    assert may_take(limit, 464.0)
    # And two zones, the cleaner one not enough alone: both take the work now.
    fr = (10.0, [(now + 1e-7, 60.0), (now + 65.0, 59.0)])
    limit = plan_limit([fr, de], [Due(10 * 20 * HOUR, now + 12 * HOUR)], now, step_s=900.0)
    assert may_take(limit, 60.0) and may_take(limit, 464.0)


def test_room_kept_for_a_burst_lets_the_work_in_hand_run_before_it_would_crowd_it() -> None:
    # One zone, dirty for 6 h then clean: 2 h of its work due in 12 h waits for the clean
    # hours, unless a job of 5 h of its work may arrive now, due 12 h later: the clean
    # hours cannot hold both, so the work in hand runs now.
    de = (10.0, [(0.0, 500.0), (6 * HOUR, 150.0)])
    work = [Due(10 * 2 * HOUR, 12 * HOUR)]
    assert not may_take(plan_limit([de], work, 0.0, 900.0, arriving_deadline_s=12 * HOUR), 500)
    crowded = plan_limit(
        [de], work, 0.0, 900.0, arriving_deadline_s=12 * HOUR, burst_units=10 * 5 * HOUR
    )
    assert may_take(crowded, 500)
    # A burst that the clean hours hold with the work in hand changes nothing.
    light = plan_limit([de], work, 0.0, 900.0, arriving_deadline_s=12 * HOUR, burst_units=10.0)
    assert not may_take(light, 500)


def test_the_guard_counts_two_chunks_a_lease_a_poll_and_the_cache() -> None:
    assert deadline_guard_s(300.0, 180.0, 20.0, 30.0) == 830.0


def test_late_work_or_none_holds_nothing_back() -> None:
    de = (10.0, [(0.0, 500.0)])
    assert plan_limit([de], [Due(100.0, 50.0)], now=100.0, step_s=900.0) is None
    assert plan_limit([de], [], now=0.0, step_s=900.0) is None
    assert plan_limit([(0.0, [(0.0, 500.0)])], [Due(1.0, HOUR)], now=0.0, step_s=900.0) is None


@pytest.mark.parametrize("seed", range(25))
def test_followed_step_by_step_it_meets_the_deadline_as_cleanly_as_the_optimum(seed: int) -> None:
    """A pool following the limit every step, with a perfect forecast, does a job's work by
    its deadline and emits what the offline optimum does (whole slots of work)."""
    rng = random.Random(seed)
    steps, step = 24, 900.0
    zones = [
        (1.0, [(i * step, float(rng.randint(20, 600))) for i in range(steps)])
        for _ in range(rng.randint(1, 3))
    ]
    deadline_steps = rng.randint(2, steps)
    left = step * rng.randint(1, deadline_steps * len(zones))
    due_s = deadline_steps * step
    best = cleanest_schedule(
        steps,
        [Piece(i, points[i][1], step) for _, points in zones for i in range(steps)],
        [Window(left, 0, deadline_steps)],
    )
    optimum = sum(
        u * p for u, p in zip(best, [pt[1] for _, pts in zones for pt in pts], strict=True)
    )
    emitted = 0.0
    for i in range(steps):
        now = i * step
        if left <= 0:
            break
        limit = plan_limit(zones, [Due(left, due_s)], now, step)
        for _, points in zones:
            if may_take(limit, points[i][1]) and left > 0:
                done = min(step, left)
                left -= done
                emitted += done * points[i][1]
        assert left <= 0 or now + step < due_s, "the deadline was missed"
    assert left <= 1e-9
    assert emitted == pytest.approx(optimum)
