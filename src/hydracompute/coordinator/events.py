"""Live updates for dashboards: which jobs changed, which chunks finished, the pool's pulse.

Exchanges publish here; every open event stream (one per browser tab) collects what changed
since it last wrote, so a stream sends each change at most once per flush, however many
exchanges produced it — a dashboard costs the same with 10 workers or 1,000.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from hydracompute.core.models import JSON, Job, JobState
from hydracompute.store import Store
from hydracompute.store.records import FinishedChunk

#: Finished chunks a stream keeps for its job page between flushes; beyond that the page is
#: told to reload the picture (a slow client never makes the coordinator buffer more).
MAX_PENDING_CHUNKS = 4096
#: Pool samples kept (at one per sampling period).
HISTORY_POINTS = 300
#: Throughput is averaged over this long: chunks finish in bursts of a few seconds.
WINDOW_S = 10.0


@dataclass(eq=False)  # compared and hashed by identity: one per stream
class Subscription:
    """What one event stream has not sent yet."""

    job_id: str | None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    jobs: set[str] = field(default_factory=set)
    chunks: list[FinishedChunk] = field(default_factory=list)
    overflowed: bool = False


class EventHub:
    def __init__(self) -> None:
        self._subscriptions: set[Subscription] = set()
        self._end_waiters: dict[str, set[asyncio.Event]] = {}

    @contextlib.contextmanager
    def job_end(self, job_id: str) -> Iterator[asyncio.Event]:
        """An event set once ``job_id`` finishes (published as ended) or :meth:`wake_all`
        runs; register before reading the job, so that an end in between is not missed."""
        event = asyncio.Event()
        self._end_waiters.setdefault(job_id, set()).add(event)
        try:
            yield event
        finally:
            waiters = self._end_waiters.get(job_id, set())
            waiters.discard(event)
            if not waiters:
                self._end_waiters.pop(job_id, None)

    def wake_all(self) -> None:
        """Release every :meth:`job_end` waiter (the service is shutting down)."""
        for waiters in self._end_waiters.values():
            for event in waiters:
                event.set()

    def subscribe(self, job_id: str | None) -> Subscription:
        """A new stream; one for a job's page starts with that job's current state, so a
        change made while the page was loading (the job finishing, say) is not missed."""
        subscription = Subscription(job_id)
        if job_id is not None:
            subscription.jobs.add(job_id)
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    def publish(
        self, jobs: set[str], chunks: Sequence[FinishedChunk] = (), ended: Iterable[str] = ()
    ) -> None:
        """``jobs`` changed, ``chunks`` finished, and the jobs ``ended`` finished."""
        for job_id in ended:
            for event in self._end_waiters.get(job_id, ()):
                event.set()
        if not jobs and not chunks:
            return
        for subscription in self._subscriptions:
            subscription.jobs |= jobs
            for chunk in chunks:
                if chunk.job_id != subscription.job_id:
                    continue
                if len(subscription.chunks) < MAX_PENDING_CHUNKS:
                    subscription.chunks.append(chunk)
                else:
                    subscription.overflowed = True
            subscription.wake.set()

    @property
    def subscribers(self) -> int:
        return len(self._subscriptions)


@dataclass
class PoolSampler:
    """Throughput per kind, in the kind's own work (samples/s, pixels/s), over time.

    Each sample compares every job's progress with the previous sample; jobs that finished
    in between are counted up to their end.
    """

    history: collections.deque[JSON] = field(
        default_factory=lambda: collections.deque(maxlen=HISTORY_POINTS)
    )
    #: Work done by each running job at the previous sample.
    _seen: dict[str, float] = field(default_factory=dict)
    #: (time, work done so far per kind), over the last window.
    _totals: collections.deque[tuple[float, dict[str, float]]] = field(
        default_factory=collections.deque
    )

    def sample(self, store: Store, now: float) -> JSON:
        """Take one sample (on the store thread); returns it, also appended to history."""
        jobs = {j.job_id: j for j in store.list_jobs(JobState.RUNNING, 10_000)}
        for job_id in set(self._seen) - set(jobs):
            jobs[job_id] = store.get_job(job_id)
        work: dict[str, float] = {}
        work_by_job = {job_id: _work_done(store, job) for job_id, job in jobs.items()}
        for job_id, job in jobs.items():
            earlier = self._seen.get(job_id, work_by_job[job_id])
            work[job.kind] = work.get(job.kind, 0.0) + work_by_job[job_id] - earlier
        self._seen = {
            job_id: work_by_job[job_id] for job_id, j in jobs.items() if not j.state.finished
        }
        totals = dict(self._totals[-1][1]) if self._totals else {}
        for name, done in work.items():
            totals[name] = totals.get(name, 0.0) + done
        self._totals.append((now, totals))
        while len(self._totals) > 2 and now - self._totals[1][0] >= WINDOW_S:
            self._totals.popleft()
        since, before = self._totals[0]
        elapsed = now - since
        point: JSON = {
            "t": now,
            "throughput": {
                kind: (total - before.get(kind, 0.0)) / elapsed if elapsed > 0 else 0.0
                for kind, total in totals.items()
            },
        }
        self.history.append(point)
        return point


def _work_done(store: Store, job: Job) -> float:
    """The job's work done, as its progress counts it (see :mod:`hydracompute.core.progress`)."""
    kind = store.kinds.get(job.kind)
    counted = kind.work_done(job.params, job.live)
    if counted is not None:
        return counted
    return job.units_done * kind.total_work(job.params) / job.total_units
