"""The cleanest schedule of work with time windows: an exact offline optimum.

Time is cut into consecutive slots ``0 .. n-1``; each slot has capacity *pieces* (one per
grid zone: the units its cores compute in the slot, at the slot's intensity). Each piece of
*work* may use the slots ``first .. end-1`` (its arrival and its deadline). Which use of
the pieces does all the work within the windows and emits least?

When the windows are *agreeable* (sorted by arrival, their deadlines come in the same
order, as when every job has the same relative deadline), the usable sets form a
polymatroid, so the greedy is exact: take the pieces cleanest first and give each as much
as can still be matched to work. By Hall's condition on intervals of slots, a use ``u`` can
be matched if and only if for every ``s < e``::

    u(s .. e-1) <= A(e) - D(s)

where ``A(e)`` is the work that arrives before slot ``e`` and ``D(s)`` the work due by slot
``s`` (the work whose window meets ``s .. e-1``). With ``U`` the running sum of ``u``, the
most a piece in slot ``i`` can take is ``min_{e>i} (A(e) - U(e)) + min_{s<=i} (U(s) - D(s))``:
two range-minimum trees with range-add, ``O((pieces + work) log slots)``.

Used by ``bench/bench_carbon.py`` for the bound on what any schedule can save, and small
enough to plan a pool's next hours. Pure: no clock, no I/O.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

#: Work smaller than this (units) is taken as none (floating-point sums).
EPSILON_UNITS = 1e-9
#: Extra work planned beyond the work in hand (0.2: a fifth again), for workers that come
#: and go, chunks computed twice, and forecasts that err.
PLAN_MARGIN = 0.2
#: The share of the largest job of the recent load that the plan keeps room for, as if it
#: arrived at any moment beyond the expected load: work held back then leaves room for a
#: burst. (In the fluid model's year of Poisson arrivals, a half cut the deadlines missed
#: that carbon-blind dispatch met from 10 to 3 over three grids for 7 points of the
#: savings; a whole job, to 3 as well for 16 points; see docs/carbon.md.)
BURST_SHARE = 0.5
#: The shortest first slot, in seconds: a forecast's point less than this after now is taken
#: as now. (A forecast's first point a hair after now, as time shifted in floating point
#: gives, left a first slot of 1e-7 s in which no zone's cores could add anything, so every
#: zone was held back until the deadlines were lost.)
MIN_SLOT_S = 1.0


@dataclass(frozen=True)
class Piece:
    """Capacity: ``units`` in slot ``slot`` at ``gco2_per_kwh``."""

    slot: int
    gco2_per_kwh: float
    units: float


@dataclass(frozen=True)
class Window:
    """Work of ``units`` that may use the slots ``first .. end-1``."""

    units: float
    first: int
    end: int


class _MinAddTree:
    """Minimum over a range of an array, with adding a value to a range (bottom-up, with
    lazy adds pushed down the two boundary paths before a query)."""

    def __init__(self, values: Sequence[float]) -> None:
        size, height = 1, 0
        while size < len(values):
            size *= 2
            height += 1
        self.size, self.height = size, height
        self.low = [float("inf")] * (2 * size)
        self.pending = [0.0] * size
        self.low[size : size + len(values)] = list(values)
        for p in range(size - 1, 0, -1):
            self.low[p] = min(self.low[2 * p], self.low[2 * p + 1])

    def _apply(self, p: int, value: float) -> None:
        self.low[p] += value
        if p < self.size:
            self.pending[p] += value

    def _rebuild(self, p: int) -> None:
        low, pending = self.low, self.pending
        while p > 1:
            p //= 2
            low[p] = min(low[2 * p], low[2 * p + 1]) + pending[p]

    def _push(self, p: int) -> None:
        pending = self.pending
        for s in range(self.height, 0, -1):
            i = p >> s
            if pending[i] != 0.0:
                self._apply(2 * i, pending[i])
                self._apply(2 * i + 1, pending[i])
                pending[i] = 0.0

    def add_range(self, lo: int, hi: int, value: float) -> None:
        """Add ``value`` to positions ``lo .. hi-1``."""
        if lo >= hi:
            return
        left, right = lo + self.size, hi + self.size
        while left < right:
            if left & 1:
                self._apply(left, value)
                left += 1
            if right & 1:
                right -= 1
                self._apply(right, value)
            left //= 2
            right //= 2
        self._rebuild(lo + self.size)
        self._rebuild(hi - 1 + self.size)

    def min_range(self, lo: int, hi: int) -> float:
        """The least value at positions ``lo .. hi-1`` (infinity if none)."""
        best = float("inf")
        if lo >= hi:
            return best
        left, right = lo + self.size, hi + self.size
        self._push(left)
        self._push(right - 1)
        low = self.low
        while left < right:
            if left & 1:
                best = min(best, low[left])
                left += 1
            if right & 1:
                right -= 1
                best = min(best, low[right])
            left //= 2
            right //= 2
        return best


def cleanest_schedule(slots: int, pieces: Sequence[Piece], work: Sequence[Window]) -> list[float]:
    """The units each piece computes in a schedule of least CO2 that does all the work
    within its windows (as much of it as fits, when not all does).

    Args:
        slots: the number of slots; every piece's slot and window lies within them.
        pieces: the capacity, in any order (several per slot: one per zone).
        work: the work, its windows agreeable (raises ``ValueError`` if not).

    Returns:
        The units used of each piece, in the order of ``pieces``.
    """
    ordered = sorted(work, key=lambda w: (w.first, w.end))
    for before, after in itertools.pairwise(ordered):
        if after.end < before.end:
            raise ValueError("the windows are not agreeable (a later arrival is due sooner)")
    for w in ordered:
        if not 0 <= w.first <= w.end <= slots:
            raise ValueError(f"window {w.first}..{w.end} outside 0..{slots}")
    arrived = [0.0] * (slots + 1)  # A(e): work arriving before slot e
    due = [0.0] * (slots + 1)  # D(s): work due by slot s
    for w in ordered:
        if w.units > 0 and w.end > w.first:
            arrived[w.first + 1] += w.units
            due[w.end] += w.units
    for i in range(1, slots + 1):
        arrived[i] += arrived[i - 1]
        due[i] += due[i - 1]
    # ahead[e] = A(e) - U(e); behind[s] = U(s) - D(s); U is 0 before any piece is used.
    ahead = _MinAddTree(arrived)
    behind = _MinAddTree([-d for d in due])
    used = [0.0] * len(pieces)
    order = sorted(range(len(pieces)), key=lambda k: (pieces[k].gco2_per_kwh, pieces[k].slot))
    for k in order:
        piece = pieces[k]
        i = piece.slot
        if piece.units <= 0:
            continue
        room = ahead.min_range(i + 1, slots + 1) + behind.min_range(0, i + 1)
        take = min(piece.units, room)
        if take <= EPSILON_UNITS:
            continue
        used[k] = take
        ahead.add_range(i + 1, slots + 1, -take)
        behind.add_range(i + 1, slots + 1, take)
    return used


@dataclass(frozen=True)
class Due:
    """Work in hand: ``units`` to be done by ``deadline_s``."""

    units: float
    deadline_s: float


def served(capacity: Sequence[float], work: Sequence[Window]) -> float:
    """The most of ``work`` that ``capacity`` (units per slot) can do within the windows:
    earliest deadline first, which is the most for agreeable windows (work past its window
    is left undone)."""
    return _served(capacity, work, _by_first_slot(work))


def _by_first_slot(work: Sequence[Window]) -> dict[int, list[int]]:
    """The indices of ``work`` with something to do, by the first slot of their window."""
    starting: dict[int, list[int]] = {}
    for k, w in enumerate(work):
        if w.units > 0 and w.end > w.first:
            starting.setdefault(w.first, []).append(k)
    return starting


def _served(
    capacity: Sequence[float], work: Sequence[Window], starting: dict[int, list[int]]
) -> float:
    """:func:`served`, the work grouped by :func:`_by_first_slot` (once for many calls)."""
    queue: list[tuple[int, int]] = []  # (end, index of the work) in a heap
    left = [w.units for w in work]
    push, pop = heapq.heappush, heapq.heappop
    done = 0.0
    for i, room in enumerate(capacity):
        arriving = starting.get(i)
        if arriving is not None:
            for k in arriving:
                push(queue, (work[k].end, k))
        while queue and room > EPSILON_UNITS:
            end, k = queue[0]
            if end <= i:
                pop(queue)
                continue
            take = min(room, left[k])
            left[k] -= take
            room -= take
            done += take
            if left[k] <= EPSILON_UNITS:
                pop(queue)
    return done


def deadline_guard_s(chunk_s: float, lease_ttl_s: float, wait_s: float, cache_s: float) -> float:
    """The time a plan keeps in hand before each deadline: what stands between the moment
    the plan has the last unit of work done and its result in hand, which the plan's
    fluid capacity does not see.

    The last chunks are leased whole and take ``chunk_s`` (the job's chunk target, as the
    pool's load control sizes it) to come back; a holder that vanishes is noticed after a
    lease's lifetime ``lease_ttl_s`` and its chunk computed again (another ``chunk_s``);
    a held worker learns that it may take the work at its next exchange (``wait_s``, a
    long poll), and the limit it is judged by is up to ``cache_s`` old.
    """
    return 2 * chunk_s + lease_ttl_s + wait_s + cache_s


def plan_limit(
    zones: Sequence[tuple[float, Sequence[tuple[float, float]]]],
    due: Sequence[Due],
    now: float,
    step_s: float,
    margin: float = 0.0,
    guard_s: float = 0.0,
    arriving_units_per_s: float = 0.0,
    arriving_deadline_s: float = 0.0,
    burst_units: float = 0.0,
) -> float | None:
    """The highest intensity at which the pool's cores should compute now, so that a
    schedule of least CO2 (:func:`cleanest_schedule`) does the work in hand by its
    deadlines, with the work expected to arrive meanwhile; ``None``: every core (every
    zone is in that schedule now, or nothing is late to plan), whatever its grid, even a
    zone not in ``zones`` (its speed not learnt yet).

    A zone's cores now are in that schedule if and only if they add to the work the
    cleaner capacity alone can do (the greedy's test, exact for agreeable windows): so a
    zone is held back only while cleaner capacity — another zone now, or any zone later —
    is enough for all of it.

    Args:
        zones: per zone, its units per second and its forecast as ``(time_s, gco2_per_kwh)``
            points in time order (the first standing for all before it).
        due: the work in hand, with its deadlines.
        step_s: the longest slot.
        margin: extra work planned, as a share (workers leave, copies are computed twice,
            forecasts err).
        guard_s: time kept in hand before each deadline.
        arriving_units_per_s: work expected to arrive (the pool's recent load), each part
            due ``arriving_deadline_s`` after it arrives; planned as far as it falls
            within the last deadline in hand.
        burst_units: a job that may arrive at any moment, beyond the expected load (the
            largest lately): planned as arriving now, due ``arriving_deadline_s`` later, so
            that work held back leaves room for it.
    """
    zones = [z for z in zones if z[0] > 0 and z[1]]
    work_due = [d for d in due if d.units > 0]
    if not zones or not work_due:
        return None
    if any(d.deadline_s - guard_s <= now + MIN_SLOT_S for d in work_due):
        return None  # late already: everything runs
    horizon = max(d.deadline_s - guard_s for d in work_due)
    burst_end = now + arriving_deadline_s - guard_s
    burst = burst_units > 0 and burst_end > now + MIN_SLOT_S
    if burst:
        horizon = max(horizon, burst_end)
    arriving = arriving_units_per_s > 0 and arriving_deadline_s > 0
    cuts = {now, horizon}
    cuts.update(d.deadline_s - guard_s for d in work_due)
    if burst:
        cuts.add(burst_end)
    t = now + step_s
    while t < horizon:
        cuts.add(t)
        t += step_s
    for _, points in zones:
        cuts.update(p for p, _ in points if now + MIN_SLOT_S <= p < horizon)
    times = sorted(cuts)
    slots = len(times) - 1
    index = {t: i for i, t in enumerate(times)}
    # costs[z][i], units[z][i]: zone z's cores in slot i.
    costs = [_intensities(points, times[:-1]) for _, points in zones]
    units = [[speed * (times[i + 1] - times[i]) for i in range(slots)] for speed, _ in zones]
    windows = [Window(d.units * (1 + margin), 0, index[d.deadline_s - guard_s]) for d in work_due]
    if arriving:
        # Work arriving before the last deadline in hand, as far as it is due before it:
        # a part of it as large as the part of its window that falls there.
        for i in range(slots):
            until = min(times[i] + arriving_deadline_s, horizon)
            end = bisect.bisect_right(times, until) - 1
            if end > i:
                share = (times[end] - times[i]) / arriving_deadline_s
                units_then = arriving_units_per_s * (times[i + 1] - times[i]) * share
                windows.append(Window(units_then * (1 + margin), i, end))
    if burst:
        windows.append(Window(burst_units * (1 + margin), 0, index[burst_end]))
    # Which of the zones' cores now add to what cleaner capacity alone can do (the test
    # is monotone: if a zone's cores now do, so do every cleaner zone's).
    limit: float | None = -1.0  # below every grid: no zone now
    dirtiest = max(costs[z][0] for z in range(len(zones)))
    starting = _by_first_slot(windows)
    # All the work (a hair less, for the rounding of sums): what is served cannot exceed
    # it by the test's tolerance below.
    all_work = sum(windows[k].units for ks in starting.values() for k in ks) * (1 - 1e-12)
    # Per slot, each zone's (intensity, units) from the first zone: the sums below add
    # in the same order as a sum over the zones would.
    slot_pieces = [list(zip(c, u, strict=True)) for c, u in zip(costs, units, strict=True)]
    by_slot = list(zip(*slot_pieces, strict=True))
    for z in sorted(range(len(zones)), key=lambda z: costs[z][0], reverse=True):
        gco2 = costs[z][0]
        # Capacity cleaner than zone z now: a zone's cores in a slot at a lower intensity
        # (at the same intensity, only in a slot before now, which none is).
        cleaner = [sum([u for c, u in pieces if c < gco2]) for pieces in by_slot]
        without = _served(cleaner, windows, starting)
        if without >= all_work:
            continue  # cleaner capacity does it all: zone z's cores now add nothing
        cleaner[0] += units[z][0]
        if _served(cleaner, windows, starting) > without + EPSILON_UNITS * (1 + without):
            # Every zone planned now: workers of a zone of unknown speed may help too.
            limit = None if gco2 >= dirtiest else gco2
            break
    return limit


def _intensities(points: Sequence[tuple[float, float]], starts: Sequence[float]) -> list[float]:
    """The forecast's value at each of ``starts`` (in time order)."""
    values, k = [], 0
    for t in starts:
        while k + 1 < len(points) and points[k + 1][0] <= t:
            k += 1
        values.append(points[k][1])
    return values
