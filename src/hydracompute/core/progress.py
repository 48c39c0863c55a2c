"""A job's progress, throughput and ETA, counted in work rather than units where a kind can.

Counted in units, a Mandelbrot job whose dear tiles come last shows half done long before
half its time has passed, and an ETA far too short. A kind that counts its real work in its
live summary (:meth:`hydracompute.kinds.base.JobKind.work_done`: the iterations of the
accepted tiles) has its progress counted in work, against its estimated total; the others
in units.

A kind that also keeps the *estimated* work of the accepted units
(:meth:`~hydracompute.kinds.base.JobKind.work_estimated`) has its estimate corrected by its
finished chunks: the work left is the estimate of what is left, times the ratio of real to
estimated work of what is done (its chunks are spread over the job, so what is done is a
fair sample of what is left). The ratio is drawn towards 1 by a prior worth
:data:`PRIOR_SHARE` of the job, so that the first chunk or two do not swing it. Both sums
are stored with the job: every coordinator shows the same.

The ETA's rate counts, besides the work done, the part of the work in flight that its
leases should have computed by now (:func:`in_flight_done`: each lease's chunk in
proportion to the time since it was granted over the time it was expected to take, read
from the database, so every coordinator shows the same). Work is reported only when a
chunk ends, so without it the rate is too low by the work in flight; a fixed allowance of
half a chunk (``report_lag_s``) is right only once chunks are as long as their target, and
at the start of a job, while new workers' chunks grow from probes, it made the ETA at a
quarter of a 4-second job 71% short. The expected durations are stretched by how much
longer than expected the job's finished chunks took (:func:`duration_stretch`): workers
whose speeds were learnt on another Mandelbrot view are expected to finish too soon, by
the ratio of the two views' estimate errors, and the ETA was 6-24% short on such pools.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple

#: A running job never shows more than this, however its work done compares with the
#: estimated total (an estimate a little low would otherwise show 100% before the end).
MAX_RUNNING_PROGRESS = 0.999
#: The weight of the estimate itself in the ratio of real to estimated work, as a share of
#: the job's estimated work: at a quarter of a job, the finished chunks weigh 0.25 against
#: 0.02.
PRIOR_SHARE = 0.02


class LeaseSpan(NamedTuple):
    """An active lease of a job, as the ETA reads it: its chunk's units, when it was
    granted, and when its holder was expected to finish (``None``: not known)."""

    start: int
    stop: int
    issued_s: float
    expected_end_s: float | None


#: The most active leases of a job the ETA reads; a job with more in flight shows the ETA
#: of the fixed allowance (``report_lag_s``), whose chunks are then long settled.
MAX_SPANS = 1024


def in_flight_done(
    spans: Iterable[LeaseSpan],
    now: float,
    work_of: Callable[[int, int], float],
    stretch: float = 1.0,
) -> float:
    """The work the active leases ``spans`` should have computed by ``now``: each chunk's
    work (``work_of(start, stop)``) times the share of its expected duration, ``stretch``
    times as long as expected (see :func:`duration_stretch`), that has passed (at most all
    of it), counted once per chunk however many copies are out (its most advanced). A
    lease without an expected end counts nothing."""
    shares: dict[tuple[int, int], float] = {}
    for span in spans:
        if span.expected_end_s is None:
            continue
        duration = (span.expected_end_s - span.issued_s) * stretch
        share = 1.0 if duration <= 0 else min(1.0, max(0.0, now - span.issued_s) / duration)
        key = (span.start, span.stop)
        shares[key] = max(share, shares.get(key, 0.0))
    return sum(share * work_of(start, stop) for (start, stop), share in shares.items())


def duration_stretch(expected_s: float, reported_s: float, target_s: float) -> float:
    """How many times as long as expected a job's chunks take: the reported compute time
    of its accepted chunks over their expected durations (``Job.reported_compute_s`` and
    ``Job.expected_compute_s``), each drawn towards 1 by one chunk's ``target_s``.

    Expected durations come from the holders' speeds, learnt in the kind's estimated cost:
    learnt on another job of the kind, whose estimate erred by another factor, they are
    off by the ratio of the two jobs' errors until the holders have finished a chunk of
    this one. Measured on the job's own chunks, the stretch corrects that and anything
    else that makes its chunks slower or faster than expected."""
    if expected_s <= 0:
        return 1.0
    return (reported_s + target_s) / (expected_s + target_s)


@dataclass(frozen=True)
class Progress:
    """Fraction done (0 to 1), work done and total, work per second since submission, and
    the seconds left at that rate (``None`` when finished or not yet measurable)."""

    fraction: float
    work_done: float
    work_total: float
    throughput: float
    eta_s: float | None


def job_progress(
    *,
    units_done: int,
    total_units: int,
    work_total: float,
    work_done: float | None,
    elapsed_s: float,
    finished: bool,
    succeeded: bool,
    report_lag_s: float = 0.0,
    work_estimated_done: float | None = None,
    in_flight: float | None = None,
) -> Progress:
    """The progress of a job.

    Args:
        units_done, total_units: accepted units, and all of them.
        work_total: the kind's (estimated) work in the whole job.
        work_done: the kind's count of the accepted work, or ``None`` to count the share
            of ``work_total`` that the accepted units hold.
        elapsed_s: seconds since submission (to its end, if finished).
        finished: whether the job has ended; ``succeeded``: whether it ended done (its
            work done is then its total: the estimate gives way to the count).
        report_lag_s: how long ago, on average, the work counted as done was computed
            (half the target chunk time: a worker reports a chunk's work only at its end,
            so at any moment about half a chunk of each worker's work is done but not
            counted). The ETA's rate is the work done over the time it took; counted over
            the whole elapsed time, the rate is too low and the ETA too long by about
            that lag over the elapsed time (+30% at a quarter of a 12 s job).
        work_estimated_done: the estimated work of the accepted units (in the units of
            ``work_total``), when kept: the work left is then corrected by the ratio of
            ``work_done`` to it (see the module's docstring). Only read with ``work_done``.
        in_flight: the work the active leases should have computed by now (see
            :func:`in_flight_done`), as the kind estimates it (``units_of_work``), when
            known: corrected as the work left is, the ETA's rate then counts it over the
            whole elapsed time instead of allowing ``report_lag_s``.
    """
    by_units = units_done / total_units
    correction = 1.0
    if work_done is None:
        fraction = by_units
        done = by_units * work_total
    elif finished and succeeded:
        fraction, done, work_total = 1.0, work_done, work_done
    else:
        if work_estimated_done is not None and work_total > 0:
            correction = _ratio(work_total, work_done, work_estimated_done)
            work_total = work_done + max(0.0, work_total - work_estimated_done) * correction
        fraction = work_done / work_total if work_total > 0 else by_units
        fraction = min(fraction, MAX_RUNNING_PROGRESS if units_done < total_units else 1.0)
        done = work_done
    throughput = done / elapsed_s if elapsed_s > 0 else 0.0
    eta_s = None
    if finished or done <= 0:
        pass  # nothing measured yet: a probe's lease alone says little of the rate
    elif in_flight is not None and elapsed_s > 0:
        reached = min(done + in_flight * correction, work_total)
        eta_s = max(0.0, work_total - reached) / (reached / elapsed_s)
    elif elapsed_s > report_lag_s:
        eta_s = max(0.0, work_total - done) / (done / (elapsed_s - report_lag_s))
    return Progress(fraction, done, work_total, throughput, eta_s)


def _ratio(work_total: float, work_done: float, work_estimated_done: float) -> float:
    """Real to estimated work of the units done, drawn towards 1 by :data:`PRIOR_SHARE`."""
    prior = PRIOR_SHARE * work_total
    return (work_done + prior) / (work_estimated_done + prior)
