"""A job's progress, throughput and ETA, counted in work rather than units where a kind can.

Counted in units, a Mandelbrot job whose dear tiles come last shows half done long before
half its time has passed, and an ETA far too short. A kind that counts its real work in its
live summary (:meth:`hydracompute.kinds.base.JobKind.work_done`: the iterations of the
accepted tiles) has its progress counted in work, against its estimated total; the others
in units.
"""

from __future__ import annotations

from dataclasses import dataclass

#: A running job never shows more than this, however its work done compares with the
#: estimated total (an estimate a little low would otherwise show 100% before the end).
MAX_RUNNING_PROGRESS = 0.999


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
    """
    by_units = units_done / total_units
    if work_done is None:
        fraction = by_units
        done = by_units * work_total
    elif finished and succeeded:
        fraction, done, work_total = 1.0, work_done, work_done
    else:
        fraction = work_done / work_total if work_total > 0 else by_units
        fraction = min(fraction, MAX_RUNNING_PROGRESS if units_done < total_units else 1.0)
        done = work_done
    throughput = done / elapsed_s if elapsed_s > 0 else 0.0
    eta_s = None
    if not finished and done > 0 and elapsed_s > report_lag_s:
        eta_s = max(0.0, work_total - done) / (done / (elapsed_s - report_lag_s))
    return Progress(fraction, done, work_total, throughput, eta_s)
