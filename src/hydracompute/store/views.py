"""Read-only views of a job's results for live displays: its history and chunk previews."""

from __future__ import annotations

from dataclasses import dataclass

from hydracompute.core.models import JSON, Job, JobState
from hydracompute.core.progress import (
    LeaseSpan,
    Progress,
    duration_stretch,
    in_flight_done,
    job_progress,
)
from hydracompute.errors import NotFound
from hydracompute.kinds import JobKind, Preview
from hydracompute.store.backend import StoredOutput
from hydracompute.store.pool import Store

#: Most points a history holds; long jobs are sampled evenly down to this.
MAX_HISTORY_POINTS = 500


def elapsed(job: Job, now: float) -> float:
    """Seconds since the job's submission, to its end if it has ended."""
    end = job.finished_s if job.finished_s is not None else now
    return max(0.0, end - job.created_s)


def progress_of(job: Job, kind: JobKind, now: float, spans: list[LeaseSpan] | None) -> Progress:
    """The job's progress and ETA at ``now`` (see :mod:`hydracompute.core.progress`), as
    every view shows it: ``spans`` are its leases in flight (:meth:`Store.lease_spans`;
    ``None``: too many to read, or not read)."""
    in_flight = None
    if spans is not None:
        stretch = duration_stretch(
            job.expected_compute_s, job.reported_compute_s, job.target_chunk_s
        )
        in_flight = in_flight_done(
            spans, now, lambda start, stop: kind.units_of_work(job.params, start, stop), stretch
        )
    return job_progress(
        units_done=job.units_done,
        total_units=job.total_units,
        work_total=kind.total_work(job.params),
        work_done=kind.work_done(job.params, job.live),
        work_estimated_done=kind.work_estimated(job.params, job.live),
        elapsed_s=elapsed(job, now),
        finished=job.state.finished,
        succeeded=job.state is JobState.DONE,
        report_lag_s=job.target_chunk_s / 2,
        in_flight=in_flight,
    )


def job_history(store: Store, job_id: str, max_points: int = MAX_HISTORY_POINTS) -> list[JSON]:
    """The job's live summary after each stored chunk, in chunk order, sampled down to at
    most ``max_points`` (the last one always kept): how a π estimate converged, say.

    Raises:
        NotFound: no such job.
    """
    job = store.get_job(job_id)
    kind = store.kinds.get(job.kind)
    points: list[JSON] = []
    live: JSON = {}
    with store.backend.transaction(read_only=True):
        # One output at a time: a large Mandelbrot job's outputs are gigabytes in all.
        count = len(store.backend.output_indices(job_id))
        step = max(1, -(-count // max_points))
        for position, stored in enumerate(store.backend.iter_outputs(job_id), start=1):
            live = kind.fold_live_chunk(job.params, live, stored.start, stored.stop, stored.output)
            if position % step == 0 or position == count:
                points.append(live)
    return points


def finished_chunks(store: Store, job_id: str) -> list[int]:
    """Indices of the job's finished chunks (for a page that starts drawing mid-job)."""
    store.get_job(job_id)
    with store.backend.transaction(read_only=True):
        return store.backend.output_indices(job_id)


@dataclass(frozen=True)
class PreviewSource:
    """What drawing a chunk's picture needs, read from the store."""

    kind: JobKind
    job_kind: str
    params: JSON
    output: StoredOutput

    def render(self) -> Preview:
        """The picture; CPU work that needs no store, so callers run it off the store thread.

        Raises:
            NotFound: the kind draws no picture.
        """
        preview = self.kind.preview(
            self.params, self.output.start, self.output.stop, self.output.output
        )
        if preview is None:
            raise NotFound(f"{self.job_kind} jobs draw no picture")
        return preview


def preview_source(store: Store, job_id: str, chunk_index: int) -> PreviewSource:
    """What a finished chunk's picture is drawn from.

    Raises:
        NotFound: no such job, or the chunk is not finished.
    """
    job = store.get_job(job_id)
    kind = store.kinds.get(job.kind)
    with store.backend.transaction(read_only=True):
        stored = store.backend.get_output(job_id, chunk_index)
    if stored is None:
        raise NotFound(f"job {job_id!r} has no finished chunk {chunk_index}")
    return PreviewSource(kind, job.kind, job.params, stored)
