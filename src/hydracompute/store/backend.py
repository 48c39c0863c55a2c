"""The primitives a storage backend implements; the rules live in :mod:`hydracompute.store.pool`.

Every primitive runs inside :meth:`Backend.transaction`: either everything written in a
transaction becomes durable when the block ends, or (on an exception) nothing does. Getters
return copies: changing a record has no effect until it is put back.
"""

from __future__ import annotations

import abc
from collections.abc import Collection, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import BinaryIO

from hydracompute.core.credit import (
    CreditEntry,
    CreditTotal,
    Grouping,
    ZoneTotal,
    totals,
    zone_totals,
)
from hydracompute.core.fairshare import RunningJob, Usage
from hydracompute.core.lifecycle import Copy
from hydracompute.core.models import (
    JSON,
    Chunk,
    Credential,
    CredentialKind,
    Job,
    JobState,
    Lease,
    Worker,
)
from hydracompute.core.progress import LeaseSpan
from hydracompute.store.blobs import BlobStore
from hydracompute.store.payloads import artefact_blob_name
from hydracompute.store.shared import SharedPrimitives


@dataclass(frozen=True)
class StoredOutput:
    job_id: str
    chunk_index: int
    start: int
    stop: int
    output: JSON


class Backend(SharedPrimitives):
    """Storage primitives over jobs, chunks, leases, workers, outputs and artefacts, and what
    the coordinators of one pool share (:class:`SharedPrimitives`)."""

    #: Whether several writers share the database, so that writes lock rows (see
    #: :meth:`lock_jobs`); a backend with one writer at a time skips that work.
    shared = False

    @abc.abstractmethod
    def transaction(self, read_only: bool = False) -> AbstractContextManager[None]:
        """A block whose writes are all committed (durably) at its end, or all rolled back.

        Nested in another, it is a savepoint: a failure inside rolls back only what the inner
        block wrote, and nothing is durable before the outermost block ends.

        A block that writes reads each record it will write back with a lock where the
        database is shared (PostgreSQL: ``FOR UPDATE``), so that two coordinators never
        lose each other's updates; ``read_only`` (for the outermost block; a nested one
        is what its outer one is) says it writes nothing, and so locks nothing.

        Raises:
            StoreConflict: another transaction on a shared database got in the way
                (a deadlock): nothing was written, and the whole may be tried again.
        """

    @abc.abstractmethod
    def in_transaction(self) -> bool:
        """Whether the calling thread is inside :meth:`transaction` (where an error must
        reach the outermost block before the whole can be tried again)."""

    def close(self) -> None:
        """Release files and connections."""

    # workers
    @abc.abstractmethod
    def get_worker(self, worker_id: str) -> Worker | None: ...

    @abc.abstractmethod
    def put_worker(self, worker: Worker) -> None: ...

    @abc.abstractmethod
    def list_workers(self) -> list[Worker]: ...

    @abc.abstractmethod
    def pool_tokens(self, seen_since: float) -> int:
        """How many different join tokens the workers seen since ``seen_since`` that have
        neither left nor been revoked or barred enrolled with (volunteers online)."""

    @abc.abstractmethod
    def delete_worker(self, worker_id: str) -> None:
        """Forget a worker's record (nothing happens if there is none); its leases stay,
        naming a worker that no longer exists."""

    @abc.abstractmethod
    def paused_workers(self, worker_ids: Collection[str]) -> set[str]:
        """Those of ``worker_ids`` whose owner has paused them (``Worker.state``), read in
        one go: a job's tail asks it of the holders of every chunk it looks at."""

    @abc.abstractmethod
    def workers_seen_before(
        self, seen_before: float, limit: int, seen_since: float | None = None
    ) -> list[Worker]:
        """Workers last seen before ``seen_before`` (and, if given, at or after
        ``seen_since``), longest unseen first, at most ``limit``."""

    @abc.abstractmethod
    def pool_speed(self, kind: str, seen_since: float) -> float:
        """Units per second on ``kind`` of every core of the workers seen since
        ``seen_since`` that have neither left nor been revoked (each worker's learnt speed
        per core times its cores)."""

    @abc.abstractmethod
    def zone_speeds(self, kind: str, seen_since: float) -> dict[str, float]:
        """Units per second on ``kind`` of the cores of each grid zone (``""``: workers that
        gave none) among the workers seen since ``seen_since`` that have neither left nor
        been revoked or barred; zones of no speed are absent."""

    @abc.abstractmethod
    def pool_cores(self, seen_since: float) -> int:
        """Cores of the workers seen since ``seen_since`` that have neither left nor been
        revoked or barred (the cores that may send results; for load control)."""

    # credentials
    @abc.abstractmethod
    def get_credential(self, cred_id: str) -> Credential | None: ...

    @abc.abstractmethod
    def put_credential(self, credential: Credential) -> None: ...

    @abc.abstractmethod
    def list_credentials(self, kind: CredentialKind) -> list[Credential]:
        """Credentials of one kind, oldest first."""

    # jobs
    @abc.abstractmethod
    def get_job(self, job_id: str) -> Job | None: ...

    @abc.abstractmethod
    def put_job(self, job: Job) -> None: ...

    @abc.abstractmethod
    def list_jobs(
        self,
        states: frozenset[JobState] | None,
        limit: int,
        owner: str | None = None,
        created_since: float | None = None,
    ) -> list[Job]:
        """Jobs in any of ``states`` (all if ``None``) submitted by ``owner`` (anyone if
        ``None``) at ``created_since`` or later (whenever if ``None``), newest first, at
        most ``limit``."""

    def count_jobs(self) -> dict[JobState, int]:
        """How many jobs are in each state (every state, 0 if none); backends count in the
        database rather than reading the jobs, as this default does."""
        return {state: len(self.list_jobs(frozenset({state}), 2**62)) for state in JobState}

    def lock_jobs(self, job_ids: Collection[str]) -> None:
        """Where the database is shared, lock these jobs' rows (in one fixed order) until
        the transaction ends: a write that will touch a job takes its lock before any
        other, so that two coordinators wait for each other instead of deadlocking (a
        worker's row, then a job's, against that job's, then the worker's). A backend with
        one writer at a time has nothing to do."""

    def lock_exchanges(
        self,
        worker_ids: Collection[str],
        lease_ids: Collection[str],
        reported: Collection[str],
        want_work: bool,
    ) -> None:
        """Where the database is shared, lock before anything else what exchanges of
        ``worker_ids`` will change: the jobs of the leases ``lease_ids`` they report on
        or renew (``reported``: those with results) and, if ``want_work``, every running
        job (see :meth:`lock_jobs`). A backend may read more rows up front, in the same
        order (PostgreSQL: the workers, leases and chunks, held for the transaction)."""
        jobs = self.jobs_of_leases(lease_ids) if lease_ids else set()
        if want_work:
            jobs.update(job.job_id for job in self.running_jobs())
        self.lock_jobs(jobs)

    def jobs_of_leases(self, lease_ids: Collection[str]) -> set[str]:
        """The jobs of the leases that exist among ``lease_ids``, read without a lock
        (a lease never changes job); backends read them in one query."""
        leases = (self.get_lease(lease_id) for lease_id in lease_ids)
        return {lease.job_id for lease in leases if lease is not None}

    @abc.abstractmethod
    def running_jobs(self) -> Collection[RunningJob]:
        """The running jobs (id, kind, owner and priority only, as this is read on every
        exchange that asks for work), oldest first."""

    # submitters' usage, for the fair share (see hydracompute.core.fairshare)
    @abc.abstractmethod
    def owner_usage(self) -> dict[str, Usage]:
        """Every owner's usage as last written (read on every exchange that asks for work:
        a backend may keep it in memory while no other connection writes)."""

    @abc.abstractmethod
    def put_owner_usage(self, usage: dict[str, Usage]) -> None:
        """Write these owners' usage (the others' stays as it is)."""

    def owner_weights(self) -> dict[str, float]:
        """The weight of every API key whose weight is not 1."""
        keys = self.list_credentials(CredentialKind.API_KEY)
        return {k.cred_id: k.weight for k in keys if k.weight != 1.0}

    # chunks
    @abc.abstractmethod
    def get_chunk(self, job_id: str, index: int) -> Chunk | None: ...

    @abc.abstractmethod
    def put_chunk(self, chunk: Chunk) -> None: ...

    @abc.abstractmethod
    def pending_chunks(self, job_id: str, limit: int, not_held_by: str = "") -> list[Chunk]:
        """Pending chunks of a job, lowest index first; with ``not_held_by``, only those
        of which that worker holds no copy (see ``Chunk.holders``)."""

    @abc.abstractmethod
    def verified_chunk(self, job_id: str, max_units: int) -> Chunk | None:
        """A done chunk of the job whose output is verified, of at most ``max_units``
        units (the one of highest index), or ``None``."""

    @abc.abstractmethod
    def unverified_chunks(self, worker_id: str) -> list[Chunk]:
        """Chunks whose output was accepted alone from ``worker_id`` (``unverified_by``)."""

    @abc.abstractmethod
    def leased_chunks(self, job_id: str, limit: int | None = None) -> list[Chunk]:
        """Chunks of a job that have at least one active lease, by index, at most
        ``limit`` (all if ``None``)."""

    @abc.abstractmethod
    def tail_chunks(
        self, job_id: str, now: float, silent_deadline_s: float, limit: int, race: bool = True
    ) -> list[Chunk]:
        """Leased chunks of a job that may want a backup copy or be taken back at its tail
        (see ``Exchange._backups``), by index: those of at most ``limit`` active leases whose
        holder is paused (``Worker.state``; by chunk index), of the ``limit`` renewed longest ago
        if their deadline is before ``silent_deadline_s`` (their holders have gone
        silent), of the ``limit`` whose ``late_s`` came first if before ``now``, and with
        ``race``, of the ``limit`` whose ``expected_end_s`` is latest if after ``now``.

        Read from indexes, never a scan of the job's leases: every exchange at a job's
        tail that finds no other work asks, and a job of a large pool has hundreds of
        thousands of chunks in play. A lease without ``expected_end_s`` and ``late_s``
        (granted before they were kept) is found only through its holder; one without
        ``expected_end_s`` alone is never raced, only found once late, silent or
        paused."""

    # leases
    @abc.abstractmethod
    def get_lease(self, lease_id: str) -> Lease | None: ...

    @abc.abstractmethod
    def put_lease(self, lease: Lease) -> None: ...

    @abc.abstractmethod
    def active_leases_of_chunk(self, job_id: str, index: int) -> list[Lease]: ...

    @abc.abstractmethod
    def active_leases_of_worker(self, worker_id: str) -> list[Lease]: ...

    @abc.abstractmethod
    def count_active_leases(self, worker_id: str) -> int:
        """How many active leases the worker holds (read on every exchange that asks for
        work, so only counted)."""

    @abc.abstractmethod
    def lease_spans(self, job_id: str, limit: int) -> list[LeaseSpan]:
        """At most ``limit`` active leases of a job that are not spot checks, with their
        chunk's units (for the ETA: see :func:`hydracompute.core.progress.in_flight_done`);
        which ones, when there are more, is unspecified."""

    @abc.abstractmethod
    def active_lease_counts(self) -> dict[str, int]:
        """Active leases per worker id (workers holding none are absent)."""

    @abc.abstractmethod
    def overdue_leases(self, now: float, limit: int) -> list[Lease]:
        """Active leases whose deadline is before ``now``."""

    @abc.abstractmethod
    def earliest_lease_deadline(self) -> float | None:
        """The earliest deadline of the active leases (``None``: none is active): no lease
        is overdue before it."""

    # copies reported and waiting for agreement
    @abc.abstractmethod
    def put_candidate(self, job_id: str, chunk_index: int, copy: Copy) -> None: ...

    @abc.abstractmethod
    def candidates(self, job_id: str, chunk_index: int) -> list[Copy]:
        """The chunk's candidate copies, by lease id (the order their leases were issued)."""

    @abc.abstractmethod
    def candidates_of_worker(self, worker_id: str) -> list[tuple[str, int, Copy]]:
        """``(job_id, chunk_index, copy)`` of every candidate the worker reported."""

    @abc.abstractmethod
    def delete_candidates(self, job_id: str, chunk_index: int, lease_id: str = "") -> None:
        """Forget the chunk's candidates (only the copy of ``lease_id``, if given)."""

    @abc.abstractmethod
    def delete_job_candidates(self, job_id: str) -> None:
        """Forget every candidate of a job (it has ended without them)."""

    # the credit ledger (append-only: entries are never changed nor deleted)
    @abc.abstractmethod
    def append_credit(self, entries: Sequence[CreditEntry]) -> None:
        """Add entries to the ledger, numbered after every entry already in it (their
        ``entry_id`` is ignored; numbers may be skipped, as a rolled-back entry's is by a
        database sequence shared by several coordinators)."""

    @abc.abstractmethod
    def credit_entries(
        self,
        worker_id: str | None = None,
        job_id: str | None = None,
        chunk_index: int | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[CreditEntry]:
        """Entries matching every filter given (times: ``since <= time_s < until``), in
        ledger order."""

    def credit_totals(
        self,
        by: Grouping,
        since: float | None = None,
        until: float | None = None,
        worker_id: str | None = None,
    ) -> list[CreditTotal]:
        """The matching entries summed per worker or volunteer, largest credit first;
        backends sum in the database rather than reading every entry, as this default
        does."""
        return totals(self.credit_entries(worker_id, since=since, until=until), by)

    def credit_by_zone(self, job_id: str | None = None) -> list[ZoneTotal]:
        """The ledger's entries (only ``job_id``'s, if given) summed per grid zone;
        backends sum in the database rather than reading every entry, as this default
        does."""
        return zone_totals(self.credit_entries(job_id=job_id))

    def recent_credit(self, volunteer: str, limit: int) -> list[CreditEntry]:
        """The volunteer's ``limit`` latest entries (grants and corrections), newest
        first; backends read only those rather than every entry, as this default does."""
        mine = [e for e in self.credit_entries() if e.volunteer == volunteer]
        return mine[::-1][:limit]

    # outputs and artefacts
    @abc.abstractmethod
    def put_output(self, output: StoredOutput) -> None: ...

    @abc.abstractmethod
    def delete_output(self, job_id: str, chunk_index: int) -> None: ...

    @abc.abstractmethod
    def delete_artefacts(self, job_id: str) -> None:
        """Forget a job's artefacts (its answer changed): they are rendered again."""

    @abc.abstractmethod
    def get_output(self, job_id: str, chunk_index: int) -> StoredOutput | None: ...

    @abc.abstractmethod
    def output_indices(self, job_id: str) -> list[int]:
        """Indices of the chunks of a job that have a stored output, ascending."""

    @abc.abstractmethod
    def iter_outputs(self, job_id: str) -> Iterator[StoredOutput]:
        """Every stored output of a job, in chunk order."""

    # Large payloads (outputs over a size, artefacts) live in the blob store: see
    # hydracompute.store.payloads. Its blobs are written at once, not with the transaction.

    @property
    @abc.abstractmethod
    def blobs(self) -> BlobStore:
        """Where this backend keeps large payloads."""

    @abc.abstractmethod
    def artefact_written(self, job_id: str, name: str, media_type: str) -> None:
        """Record that the blob :func:`~hydracompute.store.payloads.artefact_blob_name`
        ``(name)`` of the job, already written whole, is its artefact ``name``."""

    @abc.abstractmethod
    def open_artefact(self, job_id: str, name: str) -> tuple[str, BinaryIO] | None:
        """``(media_type, file open for reading)`` of a job's artefact, or ``None``; the
        caller closes the file. Reading it needs no transaction.

        Raises:
            StoreError: the artefact's blob is missing.
        """

    def put_artefact(self, job_id: str, name: str, media_type: str, data: bytes) -> None:
        """Keep ``data`` as the job's artefact ``name`` (in the blob store)."""
        self.blobs.put(job_id, artefact_blob_name(name), data)
        self.artefact_written(job_id, name, media_type)

    def get_artefact(self, job_id: str, name: str) -> tuple[str, bytes] | None:
        """``(media_type, data)`` of a job's artefact, or ``None`` (all in memory: stream
        large ones with :meth:`open_artefact`)."""
        found = self.open_artefact(job_id, name)
        if found is None:
            return None
        media_type, file = found
        with file:
            return media_type, file.read()
