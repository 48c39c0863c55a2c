"""In-memory backend: a real implementation for tests and simulation, lost at exit.

Transactions are atomic through an undo log: every write records what it replaced, and a
failed block restores it. Records are copied in and out, as a database would.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, BinaryIO

from hydracompute.core.credit import CreditEntry
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
from hydracompute.errors import StoreError
from hydracompute.store.backend import Backend, StoredOutput
from hydracompute.store.blobs import BlobStore, MemoryBlobStore
from hydracompute.store.payloads import artefact_blob_name, load_output, spill_output

_ABSENT = object()


class MemoryBackend(Backend):
    """Everything in memory, large payloads in ``blobs`` (by default in memory too)."""

    def __init__(self, blobs: BlobStore | None = None) -> None:
        self._blobs = MemoryBlobStore() if blobs is None else blobs
        self._lock = threading.RLock()
        self._undo: list[Callable[[], None]] | None = None
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

    @contextmanager
    def transaction(self) -> Iterator[None]:
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
            try:
                yield
                self._blobs.sync()  # for a blob store that defers it
            except BaseException:
                for undo in reversed(self._undo):
                    undo()
                raise
            finally:
                self._undo = None

    def _put(self, table: dict[Any, Any], key: Any, value: Any) -> None:
        old = table.get(key, _ABSENT)
        if self._undo is not None:

            def undo() -> None:
                if old is _ABSENT:
                    table.pop(key, None)
                else:
                    table[key] = old

            self._undo.append(undo)
        table[key] = copy.deepcopy(value)

    def _delete(self, table: dict[Any, Any], key: Any) -> None:
        old = table.pop(key, _ABSENT)
        if old is not _ABSENT and self._undo is not None:
            self._undo.append(lambda: table.__setitem__(key, old))

    @staticmethod
    def _get(table: dict[Any, Any], key: Any) -> Any:
        value = table.get(key)
        return None if value is None else copy.deepcopy(value)

    def get_worker(self, worker_id: str) -> Worker | None:
        return self._get(self._workers, worker_id)  # type: ignore[no-any-return]

    def put_worker(self, worker: Worker) -> None:
        self._put(self._workers, worker.worker_id, worker)

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
        self._put(self._jobs, job.job_id, job)

    def list_jobs(
        self, states: frozenset[JobState] | None, limit: int, owner: str | None = None
    ) -> list[Job]:
        jobs = [
            j
            for j in self._jobs.values()
            if (states is None or j.state in states) and (owner is None or j.owner == owner)
        ]
        jobs.sort(key=lambda j: (j.created_s, j.job_id), reverse=True)
        return copy.deepcopy(jobs[:limit])

    def count_jobs(self) -> dict[JobState, int]:
        counts = collections.Counter(j.state for j in self._jobs.values())
        return {state: counts[state] for state in JobState}

    def running_jobs(self) -> list[tuple[str, str]]:
        jobs = [j for j in self._jobs.values() if j.state is JobState.RUNNING]
        jobs.sort(key=lambda j: (j.created_s, j.job_id))
        return [(j.job_id, j.kind) for j in jobs]

    def get_chunk(self, job_id: str, index: int) -> Chunk | None:
        return self._get(self._chunks, (job_id, index))  # type: ignore[no-any-return]

    def put_chunk(self, chunk: Chunk) -> None:
        self._put(self._chunks, (chunk.job_id, chunk.index), chunk)

    def _chunks_of(self, job_id: str, state: ChunkState) -> list[Chunk]:
        chunks = [c for c in self._chunks.values() if c.job_id == job_id and c.state is state]
        return copy.deepcopy(sorted(chunks, key=lambda c: c.index))

    def pending_chunks(self, job_id: str, limit: int, not_held_by: str = "") -> list[Chunk]:
        chunks = self._chunks_of(job_id, ChunkState.PENDING)
        return [c for c in chunks if not_held_by not in c.holders][:limit]

    def verified_chunk(self, job_id: str, max_units: int) -> Chunk | None:
        found = [
            c
            for c in self._chunks_of(job_id, ChunkState.DONE)
            if c.verified and c.units <= max_units
        ]
        return found[-1] if found else None

    def unverified_chunks(self, worker_id: str) -> list[Chunk]:
        found = [c for c in self._chunks.values() if c.unverified_by == worker_id]
        return copy.deepcopy(sorted(found, key=lambda c: (c.job_id, c.index)))

    def leased_chunks(self, job_id: str) -> list[Chunk]:
        return self._chunks_of(job_id, ChunkState.LEASED)

    def get_lease(self, lease_id: str) -> Lease | None:
        return self._get(self._leases, lease_id)  # type: ignore[no-any-return]

    def put_lease(self, lease: Lease) -> None:
        self._put(self._leases, lease.lease_id, lease)

    def _active_leases(self, keep: Callable[[Lease], bool]) -> list[Lease]:
        leases = [x for x in self._leases.values() if x.state is LeaseState.ACTIVE and keep(x)]
        return copy.deepcopy(sorted(leases, key=lambda x: (x.issued_s, x.lease_id)))

    def active_leases_of_chunk(self, job_id: str, index: int) -> list[Lease]:
        return self._active_leases(lambda x: x.job_id == job_id and x.chunk_index == index)

    def active_leases_of_worker(self, worker_id: str) -> list[Lease]:
        return self._active_leases(lambda x: x.worker_id == worker_id)

    def count_active_leases(self, worker_id: str) -> int:
        return sum(
            x.state is LeaseState.ACTIVE and x.worker_id == worker_id for x in self._leases.values()
        )

    def active_lease_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for lease in self._leases.values():
            if lease.state is LeaseState.ACTIVE:
                counts[lease.worker_id] = counts.get(lease.worker_id, 0) + 1
        return counts

    def overdue_leases(self, now: float, limit: int) -> list[Lease]:
        return self._active_leases(lambda x: x.deadline_s < now)[:limit]

    def put_candidate(self, job_id: str, chunk_index: int, copy: Copy) -> None:
        self._put(self._candidates, (job_id, chunk_index, copy.lease_id), copy)

    def candidates(self, job_id: str, chunk_index: int) -> list[Copy]:
        found = [c for k, c in self._candidates.items() if k[:2] == (job_id, chunk_index)]
        return copy.deepcopy(sorted(found, key=lambda c: c.lease_id))

    def candidates_of_worker(self, worker_id: str) -> list[tuple[str, int, Copy]]:
        found = [(k[0], k[1], c) for k, c in self._candidates.items() if c.worker_id == worker_id]
        return copy.deepcopy(sorted(found, key=lambda f: (f[0], f[1], f[2].lease_id)))

    def delete_candidates(self, job_id: str, chunk_index: int, lease_id: str = "") -> None:
        for key in [k for k in self._candidates if k[:2] == (job_id, chunk_index)]:
            if not lease_id or key[2] == lease_id:
                self._delete(self._candidates, key)

    def delete_job_candidates(self, job_id: str) -> None:
        for key in [k for k in self._candidates if k[0] == job_id]:
            self._delete(self._candidates, key)

    def append_credit(self, entries: Sequence[CreditEntry]) -> None:
        for entry in entries:
            entry_id = len(self._credit) + 1
            self._put(self._credit, entry_id, dataclasses.replace(entry, entry_id=entry_id))

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
