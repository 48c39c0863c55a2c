"""The coordinator's engine: one store, one thread that talks to it, and long-polling.

Store calls are blocking (SQLite commits with fsync), so they run on one dedicated thread,
one at a time, off the event loop; this also serialises every transaction. Workers waiting
for work sleep on an event that is replaced each time the store reports new work.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from hydracompute.coordinator.collector import CollectionSchedule, collect_on_schedule
from hydracompute.coordinator.events import EventHub, PoolSampler
from hydracompute.coordinator.metrics import CoordinatorMetrics
from hydracompute.core.config import SchedulerConfig
from hydracompute.errors import HydraError, NotFound
from hydracompute.kinds import Artefact
from hydracompute.store import ExchangeOutcome, ResultReport, Store
from hydracompute.store.pool import EXPIRE_BATCH
from hydracompute.store.records import ExchangeRequest

T = TypeVar("T")
#: An exchange waiting for the store thread: its request, its answer, its body's size.
_Pending = tuple[ExchangeRequest, "asyncio.Future[ExchangeOutcome]", int]
#: Most exchanges recorded in one transaction (one commit, one fsync). A busy pool's
#: exchanges share pages (their jobs', the ends of the lease, chunk and output tables), and
#: each commit writes every page it changed: with 1,000 workers exchanging without pause,
#: batches of up to 512 gave 3,400 results/s where batches of up to 64 gave 2,400-2,600
#: (bench/bench_coordinator.py). Batches are only this large when that many are waiting.
MAX_BATCH = 512
#: Request bodies one batch takes at most (after its first exchange, whatever its size):
#: Mandelbrot results are megabytes each.
MAX_BATCH_BYTES = 32 * 2**20
#: Batches the store thread records in a row before other store calls get their turn.
DRAIN_BATCHES = 1
#: Workers whose secret was verified, remembered at most (then forgotten, oldest first).
MAX_VERIFIED_WORKERS = 100_000
#: How often the pool's throughput is sampled for the dashboard.
SAMPLE_PERIOD_S = 2.0
log = logging.getLogger("hydracompute.coordinator")


class Coordinator:
    """Wraps a :class:`Store` for asynchronous request handlers.

    Args:
        store: the state of record; the coordinator owns and closes it.
        clock: seconds since the epoch; injectable for tests.
        collection: while running, the process's garbage collection follows this schedule
            instead of Python's automatic one (see :mod:`.collector`); for a coordinator
            process, not one embedded in another program.
    """

    def __init__(
        self,
        store: Store,
        clock: Callable[[], float] = time.time,
        collection: CollectionSchedule | None = None,
    ) -> None:
        self.store = store
        self.collection = collection
        self.config: SchedulerConfig = store.config
        self.clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hydra-store")
        self._work_event = asyncio.Event()
        self._seen_version = store.work_version
        self._tasks: list[asyncio.Task[None]] = []
        #: Exchanges waiting for the store thread (each with the size of its request's
        #: body), and whether it is taking them.
        self._pending: collections.deque[_Pending] = collections.deque()
        self._pending_lock = threading.Lock()
        self._draining = False
        self._closing = False
        self.events = EventHub()
        self.sampler = PoolSampler()
        #: (monotonic time, view) of the last pool summary, shared by dashboards.
        self.pool_view_cache: tuple[float, Any] | None = None
        #: worker id -> SHA-256 of the secret the store accepted for it. A worker's secret
        #: never changes; revocation is checked by the store in every exchange.
        self.verified_workers: dict[str, str] = {}
        #: (job id, artefact name) -> (its lock, requests using it), while any does.
        self._render_locks: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}
        self.metrics = CoordinatorMetrics(store, clock)

    async def artefact(self, job_id: str, name: str) -> Artefact:
        """A finished job's artefact: stored, or rendered now by its kind and then stored.

        Rendering (seconds for a large image) runs on a thread of its own, not the store
        thread, so exchanges go on meanwhile; concurrent downloads render it once.

        Raises:
            NotFound: no such job or artefact (or the job has not finished).
        """
        key = (job_id, name)
        lock, users = self._render_locks.get(key, (asyncio.Lock(), 0))
        self._render_locks[key] = (lock, users + 1)
        try:
            async with lock:
                found = await self.call(self.store.artefact, job_id, name)
                if isinstance(found, Artefact):
                    return found
                job = await self.call(self.store.get_job, job_id)
                kind = self.store.kinds.get(job.kind)
                rendered = await asyncio.to_thread(kind.render, job.params, found, name)
                if rendered is None:
                    raise NotFound(f"job {job_id!r} has no artefact {name!r}")
                try:
                    await self.call(self.store.store_artefact, job_id, name, rendered)
                except HydraError:  # e.g. larger than the database takes: serve it anyway
                    log.exception("storing artefact %s of job %s failed", name, job_id)
                return rendered
        finally:
            lock, users = self._render_locks[key]
            if users == 1:
                del self._render_locks[key]
            else:
                self._render_locks[key] = (lock, users - 1)

    def remember_verified_worker(self, worker_id: str, digest: str) -> None:
        self.verified_workers.pop(worker_id, None)
        self.verified_workers[worker_id] = digest  # last: dict order is recency
        if len(self.verified_workers) > MAX_VERIFIED_WORKERS:
            del self.verified_workers[next(iter(self.verified_workers))]

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a store method on the store thread and wake waiters if work appeared."""
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))
        self._check_new_work()
        return result

    def _check_new_work(self) -> None:
        if self.store.work_version != self._seen_version:
            self._seen_version = self.store.work_version
            self._work_event.set()
            self._work_event = asyncio.Event()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._tasks = [
            asyncio.create_task(self._expire_forever()),
            asyncio.create_task(self._sample_forever()),
        ]
        if self.collection is not None:
            gc.disable()  # now, not when the task first runs
            self._tasks.append(asyncio.create_task(collect_on_schedule(self.collection)))

    def release_waiters_soon(self) -> None:
        """:meth:`release_waiters` from any thread or a signal handler."""
        loop = getattr(self, "_loop", None)
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.release_waiters)

    @property
    def is_closing(self) -> bool:
        """Shutting down: nothing is held any more."""
        return self._closing

    def release_waiters(self) -> None:
        """Answer every held exchange now and hold no more (the service is shutting down)."""
        self._closing = True
        self._work_event.set()
        self.events.wake_all()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.collection is not None:
            gc.enable()  # also if the collecting task was cancelled before it ever ran
        self.release_waiters()
        await asyncio.get_running_loop().run_in_executor(self._executor, self.store.close)
        self._executor.shutdown(wait=True)

    async def _sample_forever(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_PERIOD_S)
            try:
                await self.call(self.sampler.sample, self.store, self.clock())
            except Exception:  # a failed sample only leaves a gap in a chart
                log.exception("sampling the pool's throughput failed")

    async def _expire_forever(self) -> None:
        period = min(1.0, self.config.heartbeat_s / 2)
        while True:
            await asyncio.sleep(period)
            expired = 0
            try:
                while True:
                    batch = await self.call(self.store.expire_leases, self.clock())
                    expired += batch
                    if batch < EXPIRE_BATCH:
                        break
            except Exception:  # keep expiring even if one pass fails
                log.exception("expiring leases failed")
            if expired:
                self.events.publish(set())
                log.info("expired %d lease(s); their chunks are available again", expired)

    async def _batched(self, request: ExchangeRequest, body_bytes: int = 0) -> ExchangeOutcome:
        """Run an exchange in the next batch: exchanges that arrive while the store thread
        is busy are recorded together and made durable by one commit (one fsync), and each
        is answered only after that commit.

        Args:
            body_bytes: the size of the request's body (a batch takes at most
                ``MAX_BATCH_BYTES`` of them).

        Raises:
            HydraError: this exchange was refused (the others of its batch are not affected).
        """
        future: asyncio.Future[ExchangeOutcome] = asyncio.get_running_loop().create_future()
        with self._pending_lock:
            self._pending.append((request, future, body_bytes))
            start, self._draining = not self._draining, True
        if start:
            self._executor.submit(self._drain)
        return await future

    def _drain(self) -> None:
        """On the store thread: record pending exchanges, a batch at a time, until none is
        left, and hand each batch's answers to the event loop.

        The store thread takes the next batch itself, as soon as the last one is durable,
        rather than waiting for the event loop to answer the last one first (the loop is
        busiest exactly then). After ``DRAIN_BATCHES`` batches it queues itself again, behind
        any other store call waiting meanwhile.
        """
        for _ in range(DRAIN_BATCHES):
            with self._pending_lock:
                batch = self._take_batch()
                if not batch:
                    self._draining = False
                    return
            answers: list[ExchangeOutcome | Exception]
            try:
                began = time.perf_counter()
                answers = self.store.exchange_many([request for request, _, _ in batch])
                self.metrics.exchange_batch(time.perf_counter() - began)
            except Exception as exc:  # the commit failed: nothing in the batch was recorded
                log.error("recording a batch of %d exchanges failed: %s", len(batch), exc)
                # Without its traceback, which holds this frame and so the whole batch.
                answers = [exc.with_traceback(None)] * len(batch)
            try:
                batch[0][1].get_loop().call_soon_threadsafe(self._answer, batch, answers)
            except RuntimeError:  # the event loop is closed: nobody is waiting any more
                return
        try:
            self._executor.submit(self._drain)
        except RuntimeError:  # shutting down: the next exchange, if any, starts again
            with self._pending_lock:
                self._draining = False

    def _take_batch(self) -> list[_Pending]:
        """The next batch, oldest first: up to ``MAX_BATCH`` exchanges and
        ``MAX_BATCH_BYTES`` of bodies, and always the first waiting (under the lock)."""
        pending, size = self._pending, 0
        batch: list[_Pending] = []
        while pending and len(batch) < MAX_BATCH:
            size += pending[0][2]
            if batch and size > MAX_BATCH_BYTES:
                break
            batch.append(pending.popleft())
        return batch

    def _answer(self, batch: list[_Pending], answers: list[ExchangeOutcome | Exception]) -> None:
        self._check_new_work()
        for (_, future, _), answer in zip(batch, answers, strict=True):
            if future.done():  # its request was abandoned; what it did stands
                continue
            if isinstance(answer, Exception):
                future.set_exception(answer)
            else:
                future.set_result(answer)

    async def exchange(
        self,
        worker_id: str,
        results: Sequence[ResultReport],
        running: Sequence[str],
        want: int,
        wait_s: float,
        state: str = "running",
        state_reason: str = "",
        body_bytes: int = 0,
    ) -> ExchangeOutcome:
        """One exchange; with nothing to lease, hold it up to ``wait_s`` for new work.

        Results and renewals are recorded (durably) before anything is awaited.
        ``body_bytes`` is the size of the request's body, for batching.
        """
        event = self._work_event
        began = time.perf_counter()
        try:
            outcome = await self._batched(
                ExchangeRequest(
                    worker_id, list(results), list(running), want, self.clock(), state, state_reason
                ),
                body_bytes,
            )
        except HydraError as exc:
            self.metrics.refused(exc)
            raise
        self.metrics.recorded(results, outcome, time.perf_counter() - began)
        self.events.publish(outcome.changed_jobs, outcome.finished, outcome.ended_jobs)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(wait_s, self.config.max_wait_s, self.config.heartbeat_s)
        while want > 0 and not outcome.leases and not outcome.abandon and not self._closing:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                await asyncio.wait_for(event.wait(), remaining)
            except TimeoutError:
                break
            if self._closing:
                break
            event = self._work_event
            later = await self._batched(
                ExchangeRequest(worker_id, [], [], want, self.clock(), state, state_reason)
            )
            outcome.leases.extend(later.leases)
            self.metrics.granted(later.leases)
            self.events.publish(later.changed_jobs, ended=later.ended_jobs)
        return outcome
