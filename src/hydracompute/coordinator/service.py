"""The coordinator's engine: one store, one thread that talks to it, and long-polling.

Store calls are blocking (SQLite commits with fsync), so they run on one dedicated thread,
one at a time, off the event loop; this also serialises every transaction. Workers waiting
for work sleep on an event that is replaced each time the store reports new work, here or
(through the change feed, see :mod:`.changes`) on another coordinator of the pool.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from hydracompute.carbon.cache import REFRESH_S, IntensityCache
from hydracompute.coordinator.artefacts import OpenArtefact, outputs_in_batches, render_into_blobs
from hydracompute.coordinator.capacity import PoolCapacity
from hydracompute.coordinator.changes import ChangeFeed, LocalFeed, PollingFeed
from hydracompute.coordinator.collector import CollectionSchedule, collect_on_schedule
from hydracompute.coordinator.events import EventHub, PoolSampler
from hydracompute.coordinator.metrics import CoordinatorMetrics
from hydracompute.coordinator.peers import Peers
from hydracompute.core.config import SchedulerConfig
from hydracompute.core.models import Job, JobState
from hydracompute.errors import HydraError, NotFound, StoreError
from hydracompute.kinds import ChunkOutput
from hydracompute.store import ExchangeOutcome, MemoryBackend, ResultReport, Store
from hydracompute.store.pool import EXPIRE_BATCH
from hydracompute.store.records import ExchangeRequest
from hydracompute.store.shared import Change
from hydracompute.store.workers import FORGET_BATCH

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
#: Held exchanges woken, oldest first, when work appears; each woken one that is given work
#: wakes as many more (the work may not be all taken), one given nothing wakes none. Waking
#: every held exchange would re-run thousands of exchanges for one released chunk in a
#: large idle pool. A new job submitted here wakes them all (some may not run its kind).
WAKE_BATCH = 4
#: Workers whose secret was verified, remembered at most (then forgotten, oldest first).
MAX_VERIFIED_WORKERS = 100_000
#: How often the pool's throughput is sampled for the dashboard.
SAMPLE_PERIOD_S = 2.0
#: Workers not heard from for this long are forgotten unless told otherwise (30 days).
DEFAULT_FORGET_WORKERS_AFTER_S = 30 * 86400.0
#: How often long-gone workers are looked for (at most; more often for short settings).
FORGET_PERIOD_S = 60.0
#: After a start, workers get this long (or the setting, if shorter) to come back before
#: any is forgotten: a coordinator stopped for weeks must not forget every worker at once.
FORGET_GRACE_S = 86400.0
#: How long the pool's capacity (what its online workers can run) is reused for job views.
CAPACITY_CACHE_S = 1.0
log = logging.getLogger("hydracompute.coordinator")
#: How often the carbon source is asked about the pool's zones.
CARBON_REFRESH_S = REFRESH_S


def log_job_end(job: Job) -> None:
    """One line at info level: a job ended, how, after how long."""
    took = (job.finished_s or job.created_s) - job.created_s
    why = f": {job.error}" if job.error else ""
    log.info("job %s (%s) %s after %.1f s%s", job.job_id, job.kind, job.state.value, took, why)


class Coordinator:
    """Wraps a :class:`Store` for asynchronous request handlers.

    Args:
        store: the state of record; the coordinator owns and closes it.
        clock: seconds since the epoch; injectable for tests.
        collection: while running, the process's garbage collection follows this schedule
            instead of Python's automatic one (see :mod:`.collector`); for a coordinator
            process, not one embedded in another program.
        forget_workers_after_s: workers not heard from for this long are removed from the
            pool (their leases released); ``None`` keeps them forever.
        url: the base URL workers reach this coordinator at, registered for the pool's
            listing of coordinators ("" if unknown).
        coordinator_id: this coordinator's id in that listing (a new one by default).
    """

    def __init__(
        self,
        store: Store,
        clock: Callable[[], float] = time.time,
        collection: CollectionSchedule | None = None,
        forget_workers_after_s: float | None = DEFAULT_FORGET_WORKERS_AFTER_S,
        url: str = "",
        coordinator_id: str | None = None,
    ) -> None:
        if forget_workers_after_s is not None and forget_workers_after_s <= 0:
            raise ValueError("forget_workers_after_s must be positive (or None: never)")
        self.store = store
        self.forget_workers_after_s = forget_workers_after_s
        #: When this coordinator started (its clock), for the grace before forgetting.
        self.started_s = clock()
        #: Workers that went silent (logged once) and have not been heard from since.
        self.silent_workers: set[str] = set()
        #: Workers last heard from before this (one lease lifetime ago) were looked at.
        self._silence_checked_s = self.started_s - store.config.lease_ttl_s
        #: (monotonic time, capacity) of the last look at what the online workers can run.
        self._capacity: tuple[float, PoolCapacity] | None = None
        self._background: set[asyncio.Future[None]] = set()
        self.collection = collection
        self.config: SchedulerConfig = store.config
        self.clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hydra-store")
        #: Held exchanges waiting for work, oldest first, and how many times work appeared.
        self._waiters: dict[asyncio.Future[None], None] = {}
        self._wakes = 0
        #: Set when the service shuts down: every held exchange answers.
        self._closed = asyncio.Event()
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
        self.peers = Peers(store, url, clock, coordinator_id)
        self.feed: ChangeFeed = (
            LocalFeed()  # nothing outside this process can share it
            if isinstance(store.backend, MemoryBackend)
            else PollingFeed(
                self.call,
                store.sharing,
                self.peers.coordinator_id,
                self._shared,
                wait=store.backend.change_waiter() or asyncio.sleep,
            )
        )

    def _shared(self) -> bool:
        return self.peers.shared

    def _deliver(self, change: Change) -> None:
        """A change another coordinator made: wake whoever waits for it here."""
        self.events.publish(set(change.jobs), change.chunks, change.ended)
        if change.work:
            self._wake_waiters()

    async def artefact(self, job_id: str, name: str) -> OpenArtefact:
        """A finished job's artefact, open for streaming: stored, or rendered now by its
        kind into the blob store first.

        Rendering (seconds for a large image) runs on a thread of its own, not the store
        thread, so exchanges go on meanwhile; it reads the job's outputs a few at a time
        through the store thread. Concurrent downloads render it once.

        Raises:
            NotFound: no such job or artefact (or the job has not finished).
            StoreError: the artefact could not be stored or read.
        """
        key = (job_id, name)
        lock, users = self._render_locks.get(key, (asyncio.Lock(), 0))
        self._render_locks[key] = (lock, users + 1)
        try:
            async with lock:
                found = await self.call(self.store.open_artefact, job_id, name)
                if found is None:
                    job = await self.call(self.store.get_job, job_id)
                    media_type = await asyncio.to_thread(self._render, job, name)
                    if media_type is None:
                        raise NotFound(f"job {job_id!r} has no artefact {name!r}")
                    await self.call(self.store.artefact_written, job_id, name, media_type)
                    found = await self.call(self.store.open_artefact, job_id, name)
                    if found is None:
                        raise StoreError(f"artefact {name!r} of job {job_id!r} was not kept")
                return OpenArtefact.of(*found)
        finally:
            lock, users = self._render_locks[key]
            if users == 1:
                del self._render_locks[key]
            else:
                self._render_locks[key] = (lock, users - 1)

    def _render(self, job: Job, name: str) -> str | None:
        """Render an artefact into the blob store (on a thread of its own); its media
        type, or ``None`` if the kind makes no such artefact."""

        def read(indices: Sequence[int]) -> list[ChunkOutput]:
            return self._executor.submit(self.store.outputs_at, job.job_id, indices).result()

        indices = self._executor.submit(self.store.output_indices, job.job_id).result()
        kind = self.store.kinds.get(job.kind)
        outputs = outputs_in_batches(indices, read)
        return render_into_blobs(self.store.blobs, kind, job, name, outputs)

    def forget_verified_worker(self, worker_id: str) -> None:
        """A removed worker's secret must be checked by the store again (which refuses it)."""
        self.verified_workers.pop(worker_id, None)

    def workers_changed(self) -> None:
        """A worker joined, rejoined, left or was removed: look at the capacity again at
        the next job view rather than reuse the last look."""
        if self._capacity is not None:
            self._capacity = (-float("inf"), self._capacity[1])

    async def capacity(self, max_age_s: float = CAPACITY_CACHE_S) -> PoolCapacity:
        """What the online workers can run, looked at again if older than ``max_age_s``.

        When it changes, every running job is published as changed, so that dashboards
        show their waiting reasons appear and go.
        """
        now = time.monotonic()
        cached = self._capacity
        if cached is not None and now - cached[0] <= max_age_s:
            return cached[1]
        workers = await self.call(self.store.list_workers)
        capacity = PoolCapacity.of(workers, self.clock(), self.config.lease_ttl_s)
        self._capacity = (now, capacity)
        if cached is not None and cached[1] != capacity and self.events.subscribers:
            running = await self.call(self.store.list_jobs, JobState.RUNNING, 10_000)
            self.events.publish({job.job_id for job in running})
        return capacity

    async def forget_gone_workers(self) -> int:
        """Remove the workers not heard from for ``forget_workers_after_s``; how many.

        Nothing is forgotten until the coordinator has run for ``FORGET_GRACE_S`` (or the
        setting, if shorter): workers could not be heard from while it was stopped.
        """
        after_s = self.forget_workers_after_s
        if after_s is None or self.clock() - self.started_s < min(after_s, FORGET_GRACE_S):
            return 0
        forgotten = 0
        while True:
            now = self.clock()
            gone = await self.call(self.store.forget_workers, now, after_s)
            if gone:
                self.workers_changed()
            for worker in gone:
                self.forget_verified_worker(worker.worker_id)
                self.silent_workers.discard(worker.worker_id)
                log.info(
                    "forgot worker %s (%s): not heard from for %.1f days",
                    worker.worker_id,
                    worker.name,
                    (now - worker.last_seen_s) / 86400,
                )
            forgotten += len(gone)
            if len(gone) < FORGET_BATCH:
                return forgotten

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in the background, kept referenced until it ends."""
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

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
            self._wake_waiters()

    def _wake_waiters(self, count: int = WAKE_BATCH, new_work: bool = True) -> None:
        """The ``count`` oldest held exchanges look for work again; with ``new_work``,
        also those looking now, once their look is over (it may have been too early)."""
        if new_work:
            self._wakes += 1
        while self._waiters and count > 0:
            waiter = next(iter(self._waiters))
            del self._waiters[waiter]
            if not waiter.done():
                waiter.set_result(None)
                count -= 1

    def wake_all_waiters(self) -> None:
        """Every held exchange looks for work again (a new job: any of them may run it)."""
        self._wake_waiters(len(self._waiters))

    async def _wait_for_work(self, seen: int, timeout_s: float) -> bool:
        """Wait until work appears after the ``seen``-th time (at once if it has), up to
        ``timeout_s``; whether it did."""
        if self._wakes != seen:
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[waiter] = None
        try:
            await asyncio.wait_for(waiter, timeout_s)
            return True
        except TimeoutError:
            return False
        finally:
            self._waiters.pop(waiter, None)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.started_s = self.clock()
        self._silence_checked_s = self.started_s - self.config.lease_ttl_s
        self._tasks = [
            asyncio.create_task(self._expire_forever()),
            asyncio.create_task(self._sample_forever()),
            asyncio.create_task(self._forget_forever()),
            asyncio.create_task(self._watch_silence_forever()),
            asyncio.create_task(self.peers.run(self.call)),
            asyncio.create_task(self.feed.run(self._deliver)),
        ]
        view = self.store.grid.view
        if isinstance(view, IntensityCache):
            self._tasks.append(asyncio.create_task(self._refresh_carbon_forever(view)))
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
        self._closed.set()
        self.wake_all_waiters()
        self.events.wake_all()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.collection is not None:
            gc.enable()  # also if the collecting task was cancelled before it ever ran
        self.release_waiters()
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self.peers.leave)
        except Exception:  # e.g. the store is unavailable: the entry expires by itself
            log.warning("could not remove this coordinator from the pool's list", exc_info=True)
        await loop.run_in_executor(self._executor, self.store.close)
        if isinstance(self.store.grid.view, IntensityCache):
            await self.store.grid.view.aclose()
        await asyncio.get_running_loop().run_in_executor(self._executor, self.store.close)
        self._executor.shutdown(wait=True)

    async def _refresh_carbon_forever(self, cache: IntensityCache) -> None:
        """Ask the carbon source about the pool's zones now and then, off the request
        path: exchanges read only what the cache holds."""
        while True:
            try:
                workers = await self.call(self.store.list_workers)
                zones = {w.grid_zone for w in workers if w.grid_zone}
                await cache.refresh(self.clock(), zones)
            except Exception:  # the last known values stand until the next round
                log.exception("refreshing carbon intensities failed")
            await asyncio.sleep(CARBON_REFRESH_S)

    async def _sample_forever(self) -> None:
        while True:
            await asyncio.sleep(SAMPLE_PERIOD_S)
            try:
                await self.call(self.sampler.sample, self.store, self.clock())
                if self.events.subscribers:  # open dashboards show why jobs wait
                    await self.capacity(max_age_s=0.0)
            except Exception:  # a failed sample only leaves a gap in a chart
                log.exception("sampling the pool's throughput failed")

    async def _forget_forever(self) -> None:
        if self.forget_workers_after_s is None:
            return
        period = min(FORGET_PERIOD_S, max(0.05, self.forget_workers_after_s / 4))
        while True:
            try:
                await self.forget_gone_workers()
            except Exception:  # keep looking even if one pass fails
                log.exception("forgetting long-gone workers failed")
            await asyncio.sleep(period)

    async def log_silent_workers(self) -> int:
        """Log, once each, the workers that went offline without leaving since the last
        look (not heard from for a lease lifetime); returns how many."""
        before = self.clock() - self.config.lease_ttl_s
        if before <= self._silence_checked_s:
            return 0
        gone = await self.call(self.store.workers_gone_silent, self._silence_checked_s, before)
        self._silence_checked_s = max(self._silence_checked_s, before)
        for worker in gone:
            if worker.worker_id in self.silent_workers:
                continue
            self.silent_workers.add(worker.worker_id)
            log.info(
                "worker %s (%s) went silent: not heard from for %.0f s; its chunks go to "
                "other workers",
                worker.worker_id,
                worker.name,
                self.config.lease_ttl_s,
            )
        if gone:
            self.workers_changed()
        return len(gone)

    def heard_from(self, worker_id: str) -> None:
        """A worker spoke: if it had gone silent, say once that it is back."""
        if worker_id in self.silent_workers:
            self.silent_workers.discard(worker_id)
            self.workers_changed()
            log.info("worker %s is back", worker_id)

    async def _watch_silence_forever(self) -> None:
        period = max(0.05, min(5.0, self.config.lease_ttl_s / 3))
        while True:
            await asyncio.sleep(period)
            try:
                await self.log_silent_workers()
            except Exception:  # keep watching even if one pass fails
                log.exception("looking for silent workers failed")

    async def _log_ended(self, job_ids: set[str]) -> None:
        """One line per job that ended in an exchange (done or failed)."""
        for job_id in sorted(job_ids):
            try:
                job = await self.call(self.store.get_job, job_id)
            except HydraError:
                continue
            log_job_end(job)

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
        seen = self._wakes
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
        if self.silent_workers:
            self.heard_from(worker_id)
        if outcome.ended_jobs:
            self._spawn(self._log_ended(set(outcome.ended_jobs)))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(wait_s, self.config.max_wait_s, self.config.heartbeat_s)
        while want > 0 and not outcome.leases and not outcome.abandon and not self._closing:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            if outcome.barred:  # it can be given nothing: held to the end, not looked at
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closed.wait(), remaining)
                break
            if not await self._wait_for_work(seen, remaining) or self._closing:
                break
            seen = self._wakes
            later = await self._batched(
                ExchangeRequest(worker_id, [], [], want, self.clock(), state, state_reason)
            )
            outcome.leases.extend(later.leases)
            self.metrics.granted(later.leases)
            self.events.publish(later.changed_jobs, ended=later.ended_jobs)
            if later.ended_jobs:
                self._spawn(self._log_ended(set(later.ended_jobs)))
            if later.leases:  # there may be more: the next oldest look too
                self._wake_waiters(new_work=False)
        return outcome
