"""In-memory backend: a real implementation for tests and simulation, lost at exit.

Transactions are atomic through an undo log: every write records what it replaced, and a
failed block restores it. Records are copied in and out, as a database would
(:mod:`.memory_copies`).

Chunks, leases and candidates are indexed as the SQLite backend's tables are (by job and
state, by worker, by chunk, by deadline), so each primitive costs what it costs there rather
than a scan of every record: the simulator drives this backend with millions of leases.
An index is updated by every write and by every undo.
"""

from __future__ import annotations

import bisect
import collections
import copy
import functools
import heapq
import itertools
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, BinaryIO

from hydracompute.core.credit import CreditEntry
from hydracompute.core.fairshare import RunningJob, Usage
from hydracompute.core.lifecycle import Copy
from hydracompute.core.models import (
    Chunk,
    ChunkState,
    Credential,
    CredentialKind,
    Job,
    JobState,
    Lease,
    LeaseState,
    Worker,
)
from hydracompute.core.progress import LeaseSpan
from hydracompute.errors import StoreError
from hydracompute.store.backend import Backend, StoredOutput
from hydracompute.store.blobs import BlobStore, MemoryBlobStore
from hydracompute.store.memory_copies import clone as _clone
from hydracompute.store.memory_copies import discard as _discard
from hydracompute.store.memory_shared import MemoryShared
from hydracompute.store.payloads import artefact_blob_name, load_output, spill_output

_ABSENT = object()
ACTIVE = LeaseState.ACTIVE
_RUNNING_ONLY = frozenset({JobState.RUNNING})


def _remove_sorted(index: dict[str, list[int]], key: str, member: int) -> None:
    members = index.get(key)
    if members is not None:
        at = bisect.bisect_left(members, member)
        if at < len(members) and members[at] == member:
            del members[at]
        if not members:
            del index[key]


def _running_view(job: Job) -> tuple[object, ...]:
    """What :meth:`MemoryBackend.running_jobs` shows of a job."""
    return (job.state, job.kind, job.owner, job.priority, job.created_s)


def _replaced(record: Any, **changes: Any) -> Any:
    """A copy of a frozen dataclass record with ``changes`` (``dataclasses.replace`` runs
    its ``__init__`` again, three times slower: every accepted result appends two credit
    entries)."""
    twin = object.__new__(type(record))
    twin.__dict__.update(record.__dict__, **changes)
    return twin


def _deadline(lease: Lease) -> float | None:
    return lease.deadline_s


def _late(lease: Lease) -> float | None:
    return lease.late_s


def _negated_end(lease: Lease) -> float | None:
    return None if lease.expected_end_s is None else -lease.expected_end_s


class _TailOrders:
    """A job's active leases in the orders its tail is read in (:meth:`MemoryBackend.
    tail_chunks`): heaps of (key, lease id) by deadline (renewed longest ago first), by
    ``late_s`` and by ``expected_end_s`` negated (latest end first); and the leases of
    paused holders.

    Built from the job's active leases when its tail is first read (a job is read only
    once it has no work left to carve), then kept: an entry is pushed whenever a lease
    becomes active or its key changes (a write or an undo); an entry whose lease has ended
    or has another key now is dropped when met, and the orders are dropped (to be built
    again when next read) once they hold many more entries than the job has leased chunks
    (each renewal pushes one)."""

    __slots__ = ("deadlines", "ends", "lates", "paused")

    def __init__(self, leases: Iterable[Lease], paused: dict[str, None]) -> None:
        self.deadlines: list[tuple[float, str]] = []
        self.lates: list[tuple[float, str]] = []
        self.ends: list[tuple[float, str]] = []
        #: (chunk index, lease id) of the leases whose holder was paused (an entry whose
        #: holder resumed or whose lease ended is dropped when met)
        self.paused: list[tuple[int, str]] = []
        for lease in leases:
            self.add(lease)
            if lease.worker_id in paused:
                heapq.heappush(self.paused, (lease.chunk_index, lease.lease_id))

    def add(self, lease: Lease) -> None:
        lease_id = lease.lease_id
        heapq.heappush(self.deadlines, (lease.deadline_s, lease_id))
        if lease.late_s is not None:
            heapq.heappush(self.lates, (lease.late_s, lease_id))
        if lease.expected_end_s is not None:
            heapq.heappush(self.ends, (-lease.expected_end_s, lease_id))

    def size(self) -> int:
        return len(self.deadlines) + len(self.lates) + len(self.ends) + len(self.paused)

    @staticmethod
    def first(
        leases: dict[str, Lease],
        heap: list[tuple[float, str]],
        key_of: Callable[[Lease], float | None],
        limit: int,
        below: float,
    ) -> list[tuple[str, None]]:
        """The ids of up to ``limit`` active leases of smallest key, under ``below``."""
        taken: dict[str, float] = {}
        while heap and len(taken) < limit and heap[0][0] < below:
            key, lease_id = heapq.heappop(heap)
            lease = leases.get(lease_id)
            if lease is not None and lease.state is ACTIVE and key_of(lease) == key:
                taken[lease_id] = key  # (a second entry of the same is dropped)
        for lease_id, key in taken.items():
            heapq.heappush(heap, (key, lease_id))
        return [(lease_id, None) for lease_id in taken]


class MemoryBackend(MemoryShared, Backend):
    """Everything in memory, large payloads in ``blobs`` (by default in memory too)."""

    def __init__(self, blobs: BlobStore | None = None) -> None:
        self._blobs = MemoryBlobStore() if blobs is None else blobs
        self._lock = threading.RLock()
        self._undo: list[Callable[[], None]] | None = None
        #: The thread whose transaction is open (with ``_undo``).
        self._owner = 0
        self._workers: dict[str, Worker] = {}
        self._credentials: dict[str, Credential] = {}
        self._jobs: dict[str, Job] = {}
        self._chunks: dict[tuple[str, int], Chunk] = {}
        self._leases: dict[str, Lease] = {}
        #: (job id, chunk index) -> (start, stop, JSON text or "", blob name or None)
        self._outputs: dict[tuple[str, int], tuple[int, int, str, str | None]] = {}
        #: (job id, name) -> (media type, blob name)
        self._artefacts: dict[tuple[str, str], tuple[str, str]] = {}
        self._candidates: dict[tuple[str, int, str], Copy] = {}
        #: entry id -> entry (ids 1, 2, ...: a rolled-back entry's id is given again)
        self._credit: dict[int, CreditEntry] = {}
        self._usage: dict[str, Usage] = {}
        # Indexes (sets as insertion-ordered dicts).
        #: job id -> indices of its pending chunks, ascending (every exchange asking for work
        #: reads the first few; with verification there are thousands, waiting for copies)
        self._pending: dict[str, list[int]] = {}
        #: job id -> indices of its leased chunks (sorted when read, which is rare)
        self._leased: dict[str, dict[int, None]] = {}
        #: job id -> indices of its verified chunks, ascending
        self._verified: dict[str, list[int]] = {}
        #: worker id -> (job id, index) of the chunks accepted from it alone
        self._unverified: dict[str, dict[tuple[str, int], None]] = {}
        #: active leases by worker and by chunk
        self._active_by_worker: dict[str, dict[str, None]] = {}
        self._active_by_chunk: dict[tuple[str, int], dict[str, None]] = {}
        #: (deadline, lease id) of active leases; an entry whose lease has another deadline
        #: or is no longer active is dropped when met
        self._deadlines: list[tuple[float, str]] = []
        #: job id -> the orders its tail is read in, for the jobs whose tail was read
        #: (see :meth:`tail_chunks`)
        self._tail_orders: dict[str, _TailOrders] = {}
        #: ids of the workers their owners paused
        self._paused: dict[str, None] = {}
        #: (job id, index) -> candidate keys of that chunk
        self._candidates_by_chunk: dict[tuple[str, int], dict[tuple[str, int, str], None]] = {}
        #: worker id -> candidate keys of its copies (read when it is barred)
        self._candidates_by_worker: dict[str, dict[tuple[str, int, str], None]] = {}
        #: The running jobs as :meth:`running_jobs` lists them, or None to list them again:
        #: every exchange asking for work reads them, and most job writes (a result's
        #: progress) change nothing they show.
        self._running: list[RunningJob] | None = None
        #: (created_s, job id) of every job, ascending: read for the jobs submitted lately
        self._by_creation: list[tuple[float, str]] = []
        self._init_shared()

    def in_transaction(self) -> bool:
        return self._undo is not None and self._owner == threading.get_ident()

    @contextmanager
    def transaction(self, read_only: bool = False) -> Iterator[None]:
        with self._lock:
            if self._undo is not None:  # nested: a savepoint of the outer transaction
                mark = len(self._undo)
                try:
                    yield
                except BaseException:
                    for undo in reversed(self._undo[mark:]):
                        undo()
                    del self._undo[mark:]
                    raise
                return
            self._undo = []
            self._owner = threading.get_ident()
            try:
                yield
                self._blobs.sync()  # for a blob store that defers it
            except BaseException:
                for undo in reversed(self._undo):
                    undo()
                raise
            finally:
                self._undo = None

    def _put(
        self,
        table: dict[Any, Any],
        key: Any,
        value: Any,
        index: Callable[[Any, Any], None] | None = None,
    ) -> None:
        """Store a copy of ``value``; ``index(old, new)`` keeps an index up to date (and is
        called with the two swapped if the write is undone)."""
        old = table.get(key, _ABSENT)
        new = _clone(value)
        if self._undo is not None:

            def undo() -> None:
                if old is _ABSENT:
                    table.pop(key, None)
                else:
                    table[key] = old
                if index is not None:
                    index(new, None if old is _ABSENT else old)

            self._undo.append(undo)
        table[key] = new
        if index is not None:
            index(None if old is _ABSENT else old, new)

    def _delete(
        self, table: dict[Any, Any], key: Any, index: Callable[[Any, Any], None] | None = None
    ) -> None:
        old = table.pop(key, _ABSENT)
        if old is _ABSENT:
            return
        if index is not None:
            index(old, None)
        if self._undo is not None:

            def undo() -> None:
                table[key] = old
                if index is not None:
                    index(None, old)

            self._undo.append(undo)

    @staticmethod
    def _get(table: dict[Any, Any], key: Any) -> Any:
        value = table.get(key)
        return None if value is None else _clone(value)

    def paused_workers(self, worker_ids: Collection[str]) -> set[str]:
        paused = self._paused
        return {worker_id for worker_id in worker_ids if worker_id in paused}

    def get_worker(self, worker_id: str) -> Worker | None:
        return self._get(self._workers, worker_id)  # type: ignore[no-any-return]

    def put_worker(self, worker: Worker) -> None:
        self._put(self._workers, worker.worker_id, worker, self._index_worker)

    def _index_worker(self, old: Worker | None, new: Worker | None) -> None:
        if new is not None and new.state == "paused":
            if new.worker_id not in self._paused:
                self._paused[new.worker_id] = None
                for lease_id in self._active_by_worker.get(new.worker_id, ()):
                    lease = self._leases[lease_id]
                    orders = self._tail_orders.get(lease.job_id)
                    if orders is not None:
                        heapq.heappush(orders.paused, (lease.chunk_index, lease_id))
        elif old is not None:
            self._paused.pop(old.worker_id, None)

    def list_workers(self) -> list[Worker]:
        workers = sorted(self._workers.values(), key=lambda w: w.enrolled_s)
        return copy.deepcopy(workers)

    def pool_tokens(self, seen_since: float) -> int:
        return len(
            {
                w.token_id
                for w in self._workers.values()
                if w.online(seen_since, lease_ttl_s=0.0) and not w.barred
            }
        )

    def delete_worker(self, worker_id: str) -> None:
        self._delete(self._workers, worker_id)

    def workers_seen_before(
        self, seen_before: float, limit: int, seen_since: float | None = None
    ) -> list[Worker]:
        since = float("-inf") if seen_since is None else seen_since
        found = [w for w in self._workers.values() if since <= w.last_seen_s < seen_before]
        found.sort(key=lambda w: (w.last_seen_s, w.worker_id))
        return copy.deepcopy(found[:limit])

    def pool_speed(self, kind: str, seen_since: float) -> float:
        return sum(
            w.speeds.get(kind, 0.0) * w.cores
            for w in self._workers.values()
            if w.online(seen_since, lease_ttl_s=0.0)  # seen since then, not left or revoked
        )

    def zone_speeds(self, kind: str, seen_since: float) -> dict[str, float]:
        speeds: dict[str, float] = {}
        for w in self._workers.values():
            if w.online(seen_since, lease_ttl_s=0.0) and not w.barred:
                speed = w.speeds.get(kind, 0.0) * w.cores
                if speed > 0:
                    speeds[w.grid_zone] = speeds.get(w.grid_zone, 0.0) + speed
        return speeds

    def pool_cores(self, seen_since: float) -> int:
        return sum(
            w.cores
            for w in self._workers.values()
            if w.online(seen_since, lease_ttl_s=0.0) and not w.barred
        )

    def get_credential(self, cred_id: str) -> Credential | None:
        return self._get(self._credentials, cred_id)  # type: ignore[no-any-return]

    def put_credential(self, credential: Credential) -> None:
        self._put(self._credentials, credential.cred_id, credential)

    def list_credentials(self, kind: CredentialKind) -> list[Credential]:
        found = [c for c in self._credentials.values() if c.kind is kind]
        return copy.deepcopy(sorted(found, key=lambda c: (c.created_s, c.cred_id)))

    def get_job(self, job_id: str) -> Job | None:
        return self._get(self._jobs, job_id)  # type: ignore[no-any-return]

    def put_job(self, job: Job) -> None:
        self._put(self._jobs, job.job_id, job, self._index_job)

    def _index_job(self, old: Job | None, new: Job | None) -> None:
        if old is None or new is None or old.created_s != new.created_s:
            if old is not None:
                key = (old.created_s, old.job_id)
                at = bisect.bisect_left(self._by_creation, key)
                if at < len(self._by_creation) and self._by_creation[at] == key:
                    del self._by_creation[at]
            if new is not None:
                bisect.insort(self._by_creation, (new.created_s, new.job_id))
        if old is None or new is None or _running_view(old) != _running_view(new):
            self._running = None
            if new is None or new.state is not JobState.RUNNING:  # (built again if read)
                job_id = (old or new).job_id  # type: ignore[union-attr]
                self._tail_orders.pop(job_id, None)

    def list_jobs(
        self,
        states: frozenset[JobState] | None,
        limit: int,
        owner: str | None = None,
        created_since: float | None = None,
    ) -> list[Job]:
        if states == _RUNNING_ONLY:  # the running ones, as running_jobs lists them
            newest: Iterable[Job] = (self._jobs[r.job_id] for r in reversed(self.running_jobs()))
        else:
            order = self._by_creation
            first = 0 if created_since is None else bisect.bisect_left(order, (created_since,))
            newest = (self._jobs[job_id] for _, job_id in reversed(order[first:]))
        found: list[Job] = []
        for job in newest:
            if len(found) >= limit:
                break
            if (
                (states is None or job.state in states)
                and (owner is None or job.owner == owner)
                and (created_since is None or job.created_s >= created_since)
            ):
                found.append(_clone(job))
        return found

    def count_jobs(self) -> dict[JobState, int]:
        counts = collections.Counter(j.state for j in self._jobs.values())
        return {state: counts[state] for state in JobState}

    def running_jobs(self) -> list[RunningJob]:
        if self._running is None:
            jobs = [j for j in self._jobs.values() if j.state is JobState.RUNNING]
            jobs.sort(key=lambda j: (j.created_s, j.job_id))
            self._running = [RunningJob(j.job_id, j.kind, j.owner, j.priority) for j in jobs]
        return list(self._running)  # its items are frozen

    def owner_usage(self) -> dict[str, Usage]:
        return dict(self._usage)  # its values are frozen

    def put_owner_usage(self, usage: dict[str, Usage]) -> None:
        for owner, value in usage.items():
            self._put(self._usage, owner, value)

    def get_chunk(self, job_id: str, index: int) -> Chunk | None:
        return self._get(self._chunks, (job_id, index))  # type: ignore[no-any-return]

    def put_chunk(self, chunk: Chunk) -> None:
        self._put(self._chunks, (chunk.job_id, chunk.index), chunk, self._index_chunk)

    def _index_chunk(self, old: Chunk | None, new: Chunk | None) -> None:
        if old is not None:
            key = (old.job_id, old.index)
            if old.state is ChunkState.PENDING:
                _remove_sorted(self._pending, old.job_id, old.index)
            elif old.state is ChunkState.LEASED:
                _discard(self._leased, old.job_id, old.index)
            if old.verified and old.state is ChunkState.DONE:
                verified = self._verified[old.job_id]
                at = bisect.bisect_left(verified, old.index)
                if at < len(verified) and verified[at] == old.index:
                    del verified[at]
            if old.unverified_by:
                self._unverified[old.unverified_by].pop(key, None)
        if new is not None:
            key = (new.job_id, new.index)
            if new.state is ChunkState.PENDING:
                pending = self._pending.setdefault(new.job_id, [])
                at = bisect.bisect_left(pending, new.index)
                if at == len(pending) or pending[at] != new.index:
                    pending.insert(at, new.index)
            elif new.state is ChunkState.LEASED:
                self._leased.setdefault(new.job_id, {})[new.index] = None
            if new.verified and new.state is ChunkState.DONE:
                bisect.insort(self._verified.setdefault(new.job_id, []), new.index)
            if new.unverified_by:
                self._unverified.setdefault(new.unverified_by, {})[key] = None

    def pending_chunks(self, job_id: str, limit: int, not_held_by: str = "") -> list[Chunk]:
        found = []
        for index in self._pending.get(job_id, ()):
            chunk = self._chunks[(job_id, index)]
            if not_held_by not in chunk.holders:
                found.append(_clone(chunk))
                if len(found) >= limit:
                    break
        return found

    def verified_chunk(self, job_id: str, max_units: int) -> Chunk | None:
        for index in reversed(self._verified.get(job_id, ())):
            chunk = self._chunks[(job_id, index)]
            if chunk.units <= max_units:
                return _clone(chunk)  # type: ignore[no-any-return]
        return None

    def unverified_chunks(self, worker_id: str) -> list[Chunk]:
        keys = sorted(self._unverified.get(worker_id, ()))
        return [_clone(self._chunks[key]) for key in keys]

    def leased_chunks(self, job_id: str, limit: int | None = None) -> list[Chunk]:
        indices = sorted(self._leased.get(job_id, ()))[:limit]
        return [_clone(self._chunks[(job_id, index)]) for index in indices]

    def tail_chunks(
        self, job_id: str, now: float, silent_deadline_s: float, limit: int, race: bool = True
    ) -> list[Chunk]:
        found: dict[str, None] = {}
        orders = self._tail_orders.get(job_id)
        if orders is None:
            leases_of_job = self._active_leases_of_job(job_id)
            orders = self._tail_orders[job_id] = _TailOrders(leases_of_job, self._paused)
        leases = self._leases
        found.update(orders.first(leases, orders.deadlines, _deadline, limit, silent_deadline_s))
        found.update(orders.first(leases, orders.lates, _late, limit, now))
        if race:  # latest expected end first: keys are its negation
            found.update(orders.first(leases, orders.ends, _negated_end, limit, -now))
        # Paused holders' leases, lowest chunk index first (entries of holders that
        # resumed, or of leases that ended, dropped; a holder paused again pushes anew).
        heap, paused, held = orders.paused, self._paused, dict[str, int]()
        while heap and len(held) < limit:
            index, lease_id = heapq.heappop(heap)
            lease = leases.get(lease_id)
            if lease is not None and lease.state is ACTIVE and lease.worker_id in paused:
                held[lease_id] = index
        for lease_id, index in held.items():
            heapq.heappush(heap, (index, lease_id))
        found.update(dict.fromkeys(held))
        indices = sorted({leases[lease_id].chunk_index for lease_id in found})
        chunks = (self._chunks[(job_id, index)] for index in indices)
        return [_clone(c) for c in chunks if c.state is ChunkState.LEASED]

    def _active_leases_of_job(self, job_id: str) -> Iterator[Lease]:
        by_chunk = self._active_by_chunk
        for index in self._leased.get(job_id, ()):
            for lease_id in by_chunk.get((job_id, index), ()):
                yield self._leases[lease_id]

    def _tail_push(self, orders: _TailOrders, lease: Lease, renewal: bool) -> None:
        """Keep a job's tail orders (:class:`_TailOrders`) up to date with ``lease``."""
        if renewal:
            heapq.heappush(orders.deadlines, (lease.deadline_s, lease.lease_id))
        else:
            orders.add(lease)
        if orders.size() > 12 * len(self._leased.get(lease.job_id, ())) + 192:
            del self._tail_orders[lease.job_id]  # built again when next read

    def get_lease(self, lease_id: str) -> Lease | None:
        return self._get(self._leases, lease_id)  # type: ignore[no-any-return]

    def put_lease(self, lease: Lease) -> None:
        self._put(self._leases, lease.lease_id, lease, self._index_lease)

    def _index_lease(self, old: Lease | None, new: Lease | None) -> None:
        if (
            old is not None
            and new is not None
            and old.state is ACTIVE
            and new.state is ACTIVE
            and old.worker_id == new.worker_id
        ):  # a renewal: only its deadline changed
            if old.deadline_s != new.deadline_s:
                heapq.heappush(self._deadlines, (new.deadline_s, new.lease_id))
                orders = self._tail_orders.get(new.job_id)
                if orders is not None:
                    self._tail_push(orders, new, True)
            return
        if old is not None and old.state is LeaseState.ACTIVE:
            _discard(self._active_by_worker, old.worker_id, old.lease_id)
            _discard(self._active_by_chunk, (old.job_id, old.chunk_index), old.lease_id)
        if new is not None and new.state is LeaseState.ACTIVE:
            self._active_by_worker.setdefault(new.worker_id, {})[new.lease_id] = None
            chunk = (new.job_id, new.chunk_index)
            self._active_by_chunk.setdefault(chunk, {})[new.lease_id] = None
            orders = self._tail_orders.get(new.job_id)
            if orders is not None:
                self._tail_push(orders, new, False)
                if new.worker_id in self._paused:
                    heapq.heappush(orders.paused, (new.chunk_index, new.lease_id))
            if (
                old is None
                or old.state is not LeaseState.ACTIVE
                or old.deadline_s != new.deadline_s
            ):
                heapq.heappush(self._deadlines, (new.deadline_s, new.lease_id))

    def _leases_sorted(self, lease_ids: Iterable[str]) -> list[Lease]:
        leases = [self._leases[lease_id] for lease_id in lease_ids]
        leases.sort(key=lambda x: (x.issued_s, x.lease_id))
        return [_clone(lease) for lease in leases]

    def active_leases_of_chunk(self, job_id: str, index: int) -> list[Lease]:
        return self._leases_sorted(self._active_by_chunk.get((job_id, index), ()))

    def active_leases_of_worker(self, worker_id: str) -> list[Lease]:
        return self._leases_sorted(self._active_by_worker.get(worker_id, ()))

    def count_active_leases(self, worker_id: str) -> int:
        return len(self._active_by_worker.get(worker_id, ()))

    def lease_spans(self, job_id: str, limit: int) -> list[LeaseSpan]:
        # A chunk that wants another copy (verification) is pending with its first out.
        spans: list[LeaseSpan] = []
        by_chunk = self._active_by_chunk
        for index in itertools.chain(self._leased.get(job_id, ()), self._pending.get(job_id, ())):
            for lease_id in by_chunk.get((job_id, index), ()):
                if len(spans) == limit:
                    return spans
                lease = self._leases[lease_id]
                if lease.spot_check:
                    continue
                chunk = self._chunks[(job_id, index)]
                spans.append(
                    LeaseSpan(chunk.start, chunk.stop, lease.issued_s, lease.expected_end_s)
                )
        return spans

    def active_lease_counts(self) -> dict[str, int]:
        return {w: len(ids) for w, ids in self._active_by_worker.items() if ids}

    def overdue_leases(self, now: float, limit: int) -> list[Lease]:
        # Entries are taken off the heap and the ones still valid put back: the caller may
        # roll back whatever it does with them.
        # An undone write may have pushed a lease's entry twice: each is kept once.
        heap, valid = self._deadlines, dict[str, float]()
        while heap and heap[0][0] < now:
            deadline, lease_id = heapq.heappop(heap)
            lease = self._leases.get(lease_id)
            if lease is not None and (lease.state, lease.deadline_s) == (ACTIVE, deadline):
                valid[lease_id] = deadline
        for lease_id, deadline in valid.items():
            heapq.heappush(heap, (deadline, lease_id))
        return self._leases_sorted(valid)[:limit]

    def earliest_lease_deadline(self) -> float | None:
        heap = self._deadlines
        while heap:
            deadline, lease_id = heap[0]
            lease = self._leases.get(lease_id)
            if lease is not None and (lease.state, lease.deadline_s) == (ACTIVE, deadline):
                return deadline
            # Stale (renewed or ended); an undone write pushes its lease's entry again.
            heapq.heappop(heap)
        return None

    def put_candidate(self, job_id: str, chunk_index: int, copy: Copy) -> None:
        key = (job_id, chunk_index, copy.lease_id)
        self._put(self._candidates, key, copy, functools.partial(self._index_candidate, key))

    def _index_candidate(self, key: tuple[str, int, str], old: Any, new: Any) -> None:
        if old is not None:
            _discard(self._candidates_by_worker, old.worker_id, key)
        if new is None:
            _discard(self._candidates_by_chunk, key[:2], key)
        else:
            self._candidates_by_chunk.setdefault(key[:2], {})[key] = None
            self._candidates_by_worker.setdefault(new.worker_id, {})[key] = None

    def candidates(self, job_id: str, chunk_index: int) -> list[Copy]:
        keys = sorted(self._candidates_by_chunk.get((job_id, chunk_index), ()))
        return [_clone(self._candidates[key]) for key in keys]

    def candidates_of_worker(self, worker_id: str) -> list[tuple[str, int, Copy]]:
        keys = sorted(self._candidates_by_worker.get(worker_id, ()))
        return [(k[0], k[1], _clone(self._candidates[k])) for k in keys]

    def delete_candidates(self, job_id: str, chunk_index: int, lease_id: str = "") -> None:
        for key in list(self._candidates_by_chunk.get((job_id, chunk_index), ())):
            if not lease_id or key[2] == lease_id:
                self._delete(self._candidates, key, functools.partial(self._index_candidate, key))

    def delete_job_candidates(self, job_id: str) -> None:
        for key in [k for k in self._candidates if k[0] == job_id]:
            self._delete(self._candidates, key, functools.partial(self._index_candidate, key))

    def append_credit(self, entries: Sequence[CreditEntry]) -> None:
        for entry in entries:
            entry_id = len(self._credit) + 1
            self._put(self._credit, entry_id, _replaced(entry, entry_id=entry_id))

    def credit_entries(
        self,
        worker_id: str | None = None,
        job_id: str | None = None,
        chunk_index: int | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[CreditEntry]:
        return [
            e
            for e in self._credit.values()
            if (worker_id is None or e.worker_id == worker_id)
            and (job_id is None or e.job_id == job_id)
            and (chunk_index is None or e.chunk_index == chunk_index)
            and (since is None or e.time_s >= since)
            and (until is None or e.time_s < until)
        ]

    @property
    def blobs(self) -> BlobStore:
        return self._blobs

    def put_output(self, output: StoredOutput) -> None:
        text, blob = spill_output(self._blobs, output.job_id, output.chunk_index, output.output)
        row = (output.start, output.stop, text, blob)
        self._put(self._outputs, (output.job_id, output.chunk_index), row)

    def delete_output(self, job_id: str, chunk_index: int) -> None:
        self._delete(self._outputs, (job_id, chunk_index))

    def delete_artefacts(self, job_id: str) -> None:
        for key in [k for k in self._artefacts if k[0] == job_id]:
            self._delete(self._artefacts, key)

    def output_indices(self, job_id: str) -> list[int]:
        return sorted(index for job, index in self._outputs if job == job_id)

    def _output(self, job_id: str, chunk_index: int) -> StoredOutput | None:
        row = self._outputs.get((job_id, chunk_index))
        if row is None:
            return None
        start, stop, text, blob = row
        output = load_output(self._blobs, job_id, text, blob)
        return StoredOutput(job_id, chunk_index, start, stop, output)

    def get_output(self, job_id: str, chunk_index: int) -> StoredOutput | None:
        return self._output(job_id, chunk_index)

    def iter_outputs(self, job_id: str) -> Iterator[StoredOutput]:
        for index in self.output_indices(job_id):
            found = self._output(job_id, index)
            if found is not None:
                yield found

    def artefact_written(self, job_id: str, name: str, media_type: str) -> None:
        self._put(self._artefacts, (job_id, name), (media_type, artefact_blob_name(name)))

    def open_artefact(self, job_id: str, name: str) -> tuple[str, BinaryIO] | None:
        found = self._artefacts.get((job_id, name))
        if found is None:
            return None
        media_type, blob = found
        file = self._blobs.open(job_id, blob)
        if file is None:
            raise StoreError(f"the artefact blob {job_id}/{blob} is missing from the blob store")
        return media_type, file
