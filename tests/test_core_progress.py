"""A job's progress and ETA, in work where the kind counts it (core/progress.py)."""

from __future__ import annotations

import pytest

from hydracompute.core.progress import (
    MAX_RUNNING_PROGRESS,
    LeaseSpan,
    duration_stretch,
    in_flight_done,
    job_progress,
)


def test_counted_in_units_when_the_kind_counts_no_work() -> None:
    p = job_progress(
        units_done=25,
        total_units=100,
        work_total=1000.0,
        work_done=None,
        elapsed_s=10.0,
        finished=False,
        succeeded=False,
    )
    assert (p.fraction, p.work_done, p.work_total) == (0.25, 250.0, 1000.0)
    assert p.throughput == 25.0
    assert p.eta_s == pytest.approx(30.0)


def test_counted_in_work_the_eta_holds_when_the_dear_units_come_last() -> None:
    # Half the units are in, but they were the cheap tenth of the work: a tenth is done.
    p = job_progress(
        units_done=50,
        total_units=100,
        work_total=1000.0,
        work_done=100.0,
        elapsed_s=10.0,
        finished=False,
        succeeded=False,
    )
    assert p.fraction == pytest.approx(0.1)
    assert p.eta_s == pytest.approx(90.0)  # in units it would say 10 s


def test_the_eta_counts_the_work_done_but_not_yet_reported() -> None:
    p = job_progress(
        units_done=50,
        total_units=100,
        work_total=1000.0,
        work_done=500.0,
        elapsed_s=11.0,
        finished=False,
        succeeded=False,
        report_lag_s=1.0,
    )
    assert p.eta_s == pytest.approx(10.0)  # 500 done in the 10 s before the lag
    early = job_progress(
        units_done=1,
        total_units=100,
        work_total=1000.0,
        work_done=5.0,
        elapsed_s=0.5,
        finished=False,
        succeeded=False,
        report_lag_s=1.0,
    )
    assert early.eta_s is None  # not measurable yet


def test_a_running_job_never_shows_done_and_a_done_job_shows_its_count() -> None:
    running = job_progress(
        units_done=99,
        total_units=100,
        work_total=1000.0,
        work_done=1020.0,
        elapsed_s=10.0,
        finished=False,
        succeeded=False,
    )
    assert running.fraction == MAX_RUNNING_PROGRESS
    assert running.eta_s == 0.0
    done = job_progress(
        units_done=100,
        total_units=100,
        work_total=1000.0,
        work_done=1020.0,
        elapsed_s=10.0,
        finished=True,
        succeeded=True,
    )
    assert (done.fraction, done.work_done, done.work_total, done.eta_s) == (
        1.0,
        1020.0,
        1020.0,
        None,
    )
    cancelled = job_progress(
        units_done=30,
        total_units=100,
        work_total=1000.0,
        work_done=200.0,
        elapsed_s=10.0,
        finished=True,
        succeeded=False,
    )
    assert cancelled.fraction == pytest.approx(0.2) and cancelled.eta_s is None


def test_the_work_left_learns_from_the_finished_chunks() -> None:
    # The accepted units were estimated at 250 but cost 300: what is left (750 estimated)
    # is taken to cost as much more, drawn a little towards the estimate by the prior.
    p = job_progress(
        units_done=25,
        total_units=100,
        work_total=1000.0,
        work_done=300.0,
        work_estimated_done=250.0,
        elapsed_s=10.0,
        finished=False,
        succeeded=False,
    )
    ratio = (300.0 + 20.0) / (250.0 + 20.0)
    assert p.work_total == pytest.approx(300.0 + 750.0 * ratio)
    assert p.fraction == pytest.approx(300.0 / p.work_total)
    assert p.eta_s == pytest.approx(750.0 * ratio / 30.0)
    # Without the estimate of the accepted units, the estimated total stands.
    plain = job_progress(
        units_done=25,
        total_units=100,
        work_total=1000.0,
        work_done=300.0,
        elapsed_s=10.0,
        finished=False,
        succeeded=False,
    )
    assert plain.work_total == 1000.0
    assert plain.eta_s == pytest.approx(700.0 / 30.0)


def test_an_exact_estimate_is_left_as_it_is() -> None:
    p = job_progress(
        units_done=50,
        total_units=100,
        work_total=1000.0,
        work_done=400.0,
        work_estimated_done=400.0,
        elapsed_s=8.0,
        finished=False,
        succeeded=False,
    )
    assert p.work_total == pytest.approx(1000.0)
    assert p.eta_s == pytest.approx(12.0)


def test_work_in_flight_counts_the_share_of_each_chunk_its_lease_has_had() -> None:
    def work(start: int, stop: int) -> float:
        return 10.0 * (stop - start)

    spans = [
        LeaseSpan(0, 4, issued_s=0.0, expected_end_s=4.0),  # half its time: 20 of 40
        LeaseSpan(4, 6, issued_s=1.0, expected_end_s=2.0),  # past its end: all 20
        LeaseSpan(6, 8, issued_s=1.0, expected_end_s=None),  # no expectation: nothing
        LeaseSpan(8, 9, issued_s=3.0, expected_end_s=5.0),  # not yet begun by now: nothing
        # A backup copy of the first chunk, issued later: the chunk counts once, as far as
        # its most advanced copy.
        LeaseSpan(0, 4, issued_s=1.5, expected_end_s=2.5),
    ]
    assert in_flight_done(spans, 2.0, work) == pytest.approx(20.0 + 20.0)
    assert in_flight_done([], 2.0, work) == 0.0


def test_work_in_flight_is_stretched_by_how_late_the_jobs_chunks_were() -> None:
    # Chunks took twice as long as expected: at 2 s, a chunk expected to end at 4 s is a
    # quarter done, not half.
    spans = [LeaseSpan(0, 4, issued_s=0.0, expected_end_s=4.0)]
    assert in_flight_done(spans, 2.0, lambda start, stop: 10.0 * (stop - start), 2.0) == 10.0
    # Reported over expected compute time, each drawn towards 1 by one target chunk.
    assert duration_stretch(expected_s=4.0, reported_s=12.0, target_s=2.0) == 14.0 / 6.0
    assert duration_stretch(expected_s=0.0, reported_s=0.0, target_s=2.0) == 1.0
    assert duration_stretch(expected_s=8.0, reported_s=2.0, target_s=2.0) == 0.4


def test_the_eta_counts_the_work_in_flight_while_chunks_grow_from_probes() -> None:
    # Two workers of 1 unit/s on a job of 8: it ends at 4 s. At 1 s each has done chunks
    # of 0.2 and 0.3 and holds one of 1.2 issued at 0.5: 1 unit done, 1 more computed but
    # not yet reported. Half a 1.6 s target allowed for instead (0.8 s) puts the rate
    # at 5/s and the ETA at 1.4 s instead of 3.
    spans = [LeaseSpan(k, k + 1, issued_s=0.5, expected_end_s=1.7) for k in (0, 1)]
    common = {
        "units_done": 1,
        "total_units": 8,
        "work_total": 8.0,
        "work_done": None,
        "elapsed_s": 1.0,
        "finished": False,
        "succeeded": False,
        "report_lag_s": 0.8,
    }
    allowed = job_progress(**common)  # type: ignore[arg-type]
    assert allowed.eta_s == pytest.approx(1.4)
    counted = job_progress(
        **common,  # type: ignore[arg-type]
        in_flight=in_flight_done(spans, 1.0, lambda start, stop: 1.2 * (stop - start)),
    )
    assert counted.eta_s == pytest.approx(3.0)
    assert counted.fraction == pytest.approx(1 / 8)  # progress still counts what is in


def test_work_in_flight_is_corrected_as_the_work_left_is() -> None:
    # The accepted chunks cost twice their estimate (the prior aside): so does what is in
    # flight, and the ETA's rate counts it at that.
    p = job_progress(
        units_done=50,
        total_units=100,
        work_total=1000.0,
        work_done=1000.0,
        work_estimated_done=500.0,
        elapsed_s=10.0,
        finished=False,
        succeeded=False,
        in_flight=100.0,
    )
    ratio = (1000.0 + 20.0) / (500.0 + 20.0)
    reached = 1000.0 + 100.0 * ratio
    assert p.work_total == pytest.approx(1000.0 + 500.0 * ratio)
    assert p.eta_s == pytest.approx((p.work_total - reached) / (reached / 10.0))


def test_no_eta_before_the_first_result_even_with_work_in_flight() -> None:
    p = job_progress(
        units_done=0,
        total_units=100,
        work_total=1000.0,
        work_done=None,
        elapsed_s=0.05,
        finished=False,
        succeeded=False,
        in_flight=0.01,
    )
    assert p.eta_s is None
