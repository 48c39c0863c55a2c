"""Chunk sizing: learn each worker's speed, size chunks to the target time, shrink at the tail."""

from __future__ import annotations

import math

from hydracompute.kinds.costs import UnitCosts

#: At the tail, chunks never shrink below this fraction of a full-size chunk (0.05 s of work
#: with the default 2 s target). The smallest tail chunk bounds how long one core may wait
#: for another's last chunk at the very end of a job; 10% (0.2 s) cost a short Mandelbrot
#: job several percent.
MIN_TAIL_FRACTION = 0.025
#: How much of the work in flight the tail sizing counts. It is estimated from learnt
#: speeds, and a worker faster than its estimate makes it too high: counted in full, the
#: last chunks of a job come out as large as they can be and their timing errors become the
#: job's. Half of it keeps most of the round trips saved. Simulated (2 and 8 cores, chunk
#: times up to ±30% off their estimates, round trips of 0-20 ms; bench/bench_tail_sizing.py),
#: half was never more than 2.8% slower than the best of none, half and all, where all was
#: up to 5.9% slower and none up to 3.5%.
IN_FLIGHT_WEIGHT = 0.5
#: The longest chunk time load control ever asks for (the bound on a job's own target).
MAX_TARGET_S = 3600.0
#: When units differ in cost, a worker's chunks grow to the target at most this many times
#: its measured compute time (its speed's evidence) at a step. A speed learnt from a probe
#: alone may be far off then: the probe's few units may be estimated ten times dearer than they
#: are (a Mandelbrot view at max_iter 10^5 estimated at one point per tile), and the next
#: chunk, sized to the whole target at that speed, took 10-27 s instead of 2 in the
#: simulator (bench/bench_sim_tiling.py, 200 workers). Growing by steps, each chunk's
#: error is bounded by the few the worker has done.
GROWTH = 4.0


def updated_speed(
    old: float | None, old_evidence_s: float, units: float, compute_s: float, alpha: float
) -> tuple[float, float]:
    """Fold one measurement into a speed estimate; returns ``(speed, evidence_s)``.

    The estimate is a ratio of exponentially decayed sums, units over seconds, so each
    measurement weighs in proportion to the time it covers: a tiny probe chunk, whose timing
    is mostly noise, is outweighed by the first real chunk, while in the steady state (chunks
    of similar length) the newest measurement has weight about ``alpha``. ``compute_s`` is
    clamped below at a microsecond so a chunk timed at zero cannot make the speed infinite.
    """
    seconds = max(compute_s, 1e-6)
    if old is None:
        return units / seconds, seconds
    carried = (1.0 - alpha) * old_evidence_s
    evidence = seconds + carried
    return (units + old * carried) / evidence, evidence


def chunk_units(
    *,
    speed: float | None,
    target_s: float,
    probe_units: int,
    max_units: int,
    remaining: int,
    share: float,
    in_flight: float = 0.0,
    costs: UnitCosts | None = None,
    start: int = 0,
    min_s: float = 0.0,
    also_left: float = 0.0,
    evidence_s: float | None = None,
) -> int:
    """How many units the next chunk for one core of a worker should have.

    Args:
        speed: the worker's learnt units per second per core for this kind, or ``None``
            when it has not finished a chunk of this kind yet (it then gets a probe chunk
            of ``probe_units``: in cost, with ``costs``).
        target_s: how long a chunk should take.
        probe_units: size of the probe chunk.
        max_units: the kind's cap on one chunk.
        remaining: units not yet carved into chunks (at least 1).
        share: this core's fraction of the speed of every active core working on the
            kind, in (0, 1]; near the end of a job each core gets about its share of
            what is left, so that all finish together.
        in_flight: units that the job's granted leases are still expected to compute
            (see :mod:`hydracompute.core.inflight`). What is left is these and the
            uncarved units: counting only the uncarved ones, a core asking just after
            another took a chunk would get half as much as its share, the next a quarter,
            and so on, each one more round trip, and the last cores would wait for the
            first.
        costs: the job's unit costs (see :mod:`hydracompute.kinds.costs`), when its units
            differ in cost: ``speed`` and ``in_flight`` are then in cost, not units, and the
            chunk starting at unit ``start`` gets the units that fit the cost it should
            have. ``None``: every unit costs one.
        start: the first unit of the chunk (only read with ``costs``).
        min_s: the smallest tail chunk, in seconds (load control's floor).
        also_left: work left beside the ``remaining`` units, in the units ``speed``
            counts: what is still uncarved when the chunk is cut from a re-issued one
            (see :func:`split_units`).
        evidence_s: the compute seconds the worker's ``speed`` was learnt from (see
            :func:`updated_speed`); with ``costs`` (a speed in *estimated* cost, as far off
            as the estimate of the few units it was learnt from), a chunk is then sized to
            at most :data:`GROWTH` times that, so that sizes grow to the target by steps.
            ``None``, or units of equal cost: no bound (a probe measures the speed).

    Returns:
        A size between 1 and ``min(max_units, remaining)``.
    """
    if speed is None:
        # A probe of ``probe_units`` typical units: on a dear view (a Mandelbrot one at
        # max_iter 10^5, whose mean tile costs 20 typical ones) 16 tiles took a slow
        # worker 6 s, as long as the whole job on 200 workers.
        wanted = probe_units if costs is None else costs.units_within(start, probe_units)
    else:
        full = speed * target_s
        floor = speed * min(max(min_s, target_s * MIN_TAIL_FRACTION), target_s)
        if evidence_s is not None and costs is not None and not costs.uniform:
            full = min(full, speed * GROWTH * evidence_s)
            # The tail's floor grows by the same steps: a probe of 16² Mandelbrot tiles
            # estimated 1,000 times dearer than they were (timed at 24 µs) made the floor,
            # 5% of the target at that speed, a 4-Mpixel chunk that took 10.7 s.
            floor = min(floor, full)
        if costs is None or costs.uniform:
            wanted = math.ceil(_budget(full, floor, remaining + also_left, in_flight, share))
        else:
            left = costs.cost(start, start + remaining) + also_left
            wanted = costs.units_within(start, _budget(full, floor, left, in_flight, share))
    return max(1, min(wanted, max_units, remaining))


#: A re-issued chunk at most this much larger than what its new holder should be given is
#: given whole: cutting a sliver off would cost a result and a round trip for little.
SPLIT_SLACK = 0.25


def split_units(units: int, fit: int) -> int:
    """How many units of a re-issued chunk of ``units`` go to a worker whose own chunk
    would have ``fit`` units; the rest stays a chunk of its own, waiting for another worker.

    A chunk given back or expired was sized for its first holder and for the moment it was
    carved: given whole to whichever worker asks next, a slower one or one asking at the
    end of the job, it takes longer than any other chunk and the job waits for it. It is
    given whole if it fits (within :data:`SPLIT_SLACK`); otherwise it is cut into the
    fewest equal parts that fit and the worker gets the first (the rest is cut again for
    the next worker that asks, to fit that one). Equal parts, so no sliver is left over.

    Returns:
        A size between 1 and ``units``; ``units`` when the chunk is not cut.
    """
    fit = max(fit, 1)
    if units <= fit * (1.0 + SPLIT_SLACK):
        return units
    parts = math.ceil(units / fit)
    return math.ceil(units / parts)


def _budget(full: float, floor: float, remaining: float, in_flight: float, share: float) -> float:
    """The work the next chunk should have: a full chunk, or this core's share of what is
    left at the tail, never less than ``floor`` (the smallest tail chunk)."""
    tail = (remaining + IN_FLIGHT_WEIGHT * in_flight) * share
    return max(min(full, tail), floor)


def load_controlled_target_s(
    target_s: float, cores_online: int, capacity_results_per_s: float, load_share: float
) -> float:
    """The chunk time that keeps the pool's result rate within its coordinator's means.

    Every busy core returns one result per chunk, so a pool of ``cores_online`` cores with
    chunks of ``t`` seconds sends ``cores_online / t`` results per second. The target grows
    past ``target_s`` just enough for that rate to stay within ``load_share`` of
    ``capacity_results_per_s`` (the results per second the coordinator can record); it
    never shrinks below ``target_s``, and never grows past :data:`MAX_TARGET_S`. A capacity
    or share of zero turns load control off.

    With the defaults (2 s, 2,000 results/s, half of it), a pool of up to 2,000 cores keeps
    2 s chunks; 100,000 four-core workers get 400 s chunks (1,000 results/s), where 2 s
    chunks would have asked for 200,000 results/s.
    """
    allowed_per_s = capacity_results_per_s * load_share
    if allowed_per_s <= 0 or cores_online <= 0:
        return target_s
    return min(max(target_s, cores_online / allowed_per_s), max(target_s, MAX_TARGET_S))


def load_controlled_floor_s(cores_online: int, capacity_results_per_s: float) -> float:
    """The shortest chunk time that keeps ``cores_online`` cores within the coordinator's
    whole capacity (0 when load control is off): the tail of a job shrinks its chunks so
    that every core finishes together, and 0.025 of the target on every core of a large
    pool would ask for forty times the rate load control allowed."""
    if capacity_results_per_s <= 0 or cores_online <= 0:
        return 0.0
    return cores_online / capacity_results_per_s
