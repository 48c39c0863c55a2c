"""PostgreSQL backend: several coordinators sharing one database.

Correct under concurrency by row locks, not by anything kept in a coordinator's memory
beyond one transaction (what a transaction holds, see ``session.py``, ends with it):

- In a write transaction (any not opened ``read_only``) a record read to be written back —
  a worker, job, chunk, lease or credential read by key, a worker's or chunk's active
  leases, the chunks of a barred worker — is read ``FOR UPDATE``: a second coordinator
  reading it waits until the first commits, then reads what the first wrote. No update is
  lost, a job's chunks are carved once (its row is locked while ``next_unit`` moves), a
  result is counted once (its lease is locked while its state changes). Once locked, a
  row is held by the transaction and read again from there.
- Work to hand out is claimed with ``FOR UPDATE SKIP LOCKED`` (pending chunks, leased ones
  for backups, overdue leases to expire): a row another coordinator is changing is left to
  it rather than waited for.
- A batch of exchanges locks its rows up front, in one round trip and one order (jobs,
  workers, leases, chunks: :meth:`PostgresBackend.lock_exchanges`). Rows locked later (a
  replica partner's worker row, a chunk's other leases) may still meet another
  coordinator's in the other order: PostgreSQL detects the deadlock, and the
  :class:`~hydracompute.store.pool.Store` retries the whole transaction
  (:class:`~hydracompute.errors.StoreConflict`).

Every write is durable at its transaction's commit (``synchronous_commit`` as the server
has it, on by default). Large payloads go to :class:`PostgresBlobStore`, in the same
database, so every coordinator reaches them.
"""

from __future__ import annotations

from collections.abc import Collection
from contextlib import AbstractContextManager
from typing import Any, BinaryIO

from hydracompute.core.fairshare import RunningJob, Usage
from hydracompute.core.models import (
    Chunk,
    Credential,
    CredentialKind,
    Job,
    JobState,
    Lease,
    Worker,
)
from hydracompute.errors import StoreError
from hydracompute.store.backend import Backend, StoredOutput
from hydracompute.store.blobs import BlobStore
from hydracompute.store.payloads import artefact_blob_name, spill_output
from hydracompute.store.postgres.blobs import PostgresBlobStore
from hydracompute.store.postgres.connection import Connections
from hydracompute.store.postgres.rows import (
    CHUNKS,
    CREDENTIALS,
    JOBS,
    LEASES,
    WORKERS,
    Held,
    keep,
)
from hydracompute.store.postgres.schema import migrate
from hydracompute.store.postgres.shared import PostgresShared
from hydracompute.store.sql_common import SQLCommon, tail_chunks_args, tail_chunks_where
from hydracompute.store.sqlite_rows import Table

_TAIL_CHUNKS = {race: tail_chunks_where(race, "%s") for race in (False, True)}

USAGE_UPSERT = (
    "INSERT INTO owner_usage VALUES (%s, %s, %s) ON CONFLICT (owner) DO UPDATE SET "
    "usage_s = excluded.usage_s, as_of_s = excluded.as_of_s"
)
OUTPUT_UPSERT = (
    "INSERT INTO outputs VALUES (%s, %s, %s, %s, %s, %s) "
    "ON CONFLICT (job_id, chunk_index) DO UPDATE SET start = excluded.start, "
    "stop = excluded.stop, output = excluded.output, blob = excluded.blob"
)
#: Connections each backend keeps at most: the store thread's, and blob readers'.
POOL_SIZE = 8


class PostgresBackend(PostgresShared, SQLCommon, Backend):
    """Backend on a PostgreSQL database (``conninfo``: a ``postgresql://`` URL or libpq
    key=value string), in ``schema`` (created if missing, migrated on open), with its large
    payloads in the same database unless ``blobs`` is given.

    Raises:
        StoreError: the server cannot be reached, or its schema is newer than this code.
    """

    shared = True
    PARAM = "%s"

    def __init__(
        self,
        conninfo: str,
        schema: str = "public",
        blobs: BlobStore | None = None,
        pool_size: int = POOL_SIZE,
    ) -> None:
        self.schema = schema
        self._conninfo = conninfo
        self._db = Connections(conninfo, schema, max_size=pool_size)
        try:
            with self._db.connection() as conn:
                self.schema_version = migrate(conn, schema)
        except BaseException:
            self._db.close()
            raise
        self._blobs = PostgresBlobStore(self._db) if blobs is None else blobs

    def transaction(self, read_only: bool = False) -> AbstractContextManager[None]:
        return self._db.transaction(read_only)

    def in_transaction(self) -> bool:
        return self._db.in_transaction

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
        self._blobs.close()
        self._db.close()

    @property
    def blobs(self) -> BlobStore:
        return self._blobs

    # helpers: one record by key, many by a condition, locked when read to be written back,
    # and kept in the transaction's Held rows (see session.py)

    def _held(self) -> Held | None:
        """What the thread's write transaction holds (``None`` outside one)."""
        session = self._db.session()
        return session.held if session is not None and session.locking else None

    def _lock(self, skip_locked: bool = False) -> str:
        if not self._db.locking:
            return ""
        return " FOR UPDATE SKIP LOCKED" if skip_locked else " FOR UPDATE"

    def _one(self, table: Table, *key: Any) -> Any:
        held = self._held()
        if held is not None:
            row = held.table(table.name).get(key)
            if row is not None:
                return table.record(row)
        found = self._db.execute(table.select_key + self._lock(), key).fetchone()
        if found is None:
            return None
        if held is not None:
            keep(held, table, list(found))
        return table.record(found)

    def _many(self, table: Table, where: str, *args: Any, lock: str = "") -> list[Any]:
        rows = self._db.execute(f"{table.select} {where}{lock}", args).fetchall()
        held = self._held() if lock else None
        if held is not None:
            for row in rows:  # locked, and as this transaction wrote them (all were sent)
                keep(held, table, list(row))
        return [table.record(row) for row in rows]

    def _put(self, table: Table, obj: Any) -> None:
        row = table.row(obj)
        session = self._db.session()
        if session is None:
            self._db.execute(table.upsert, row)
            return
        session.write(table.upsert, table.key_of(obj), row)
        if session.locking:
            keep(session.held, table, row, replace=True)

    def _scalar(self, query: str, *args: Any) -> Any:
        row = self._db.execute(query, args).fetchone()
        return None if row is None else row[0]

    # workers

    def paused_workers(self, worker_ids: Collection[str]) -> set[str]:
        if not worker_ids:
            return set()
        query = "SELECT worker_id FROM workers WHERE state = 'paused' AND worker_id = ANY(%s)"
        return {str(row[0]) for row in self._db.execute(query, (sorted(worker_ids),))}

    def get_worker(self, worker_id: str) -> Worker | None:
        return self._one(WORKERS, worker_id)  # type: ignore[no-any-return]

    def put_worker(self, worker: Worker) -> None:
        self._put(WORKERS, worker)

    def list_workers(self) -> list[Worker]:
        return self._many(WORKERS, "ORDER BY enrolled_s, worker_id")

    def pool_tokens(self, seen_since: float) -> int:
        return int(
            self._scalar(
                'SELECT COUNT(DISTINCT token_id) FROM workers WHERE "left" = 0 '
                "AND revoked = 0 AND barred = '' AND last_seen_s >= %s",
                seen_since,
            )
        )

    def delete_worker(self, worker_id: str) -> None:
        self._db.execute("DELETE FROM workers WHERE worker_id = %s", (worker_id,))

    def workers_seen_before(
        self, seen_before: float, limit: int, seen_since: float | None = None
    ) -> list[Worker]:
        since = float("-inf") if seen_since is None else seen_since
        where = (
            "WHERE last_seen_s < %s AND last_seen_s >= %s ORDER BY last_seen_s, worker_id LIMIT %s"
        )
        return self._many(WORKERS, where, seen_before, since, limit, lock=self._lock())

    def pool_speed(self, kind: str, seen_since: float) -> float:
        total = self._scalar(
            "SELECT SUM((speeds::jsonb ->> %s)::float8 * cores) FROM workers "
            'WHERE "left" = 0 AND revoked = 0 AND last_seen_s >= %s',
            kind,
            seen_since,
        )
        return float(total or 0.0)

    def zone_speeds(self, kind: str, seen_since: float) -> dict[str, float]:
        rows = self._db.execute(
            "SELECT grid_zone, SUM((speeds::jsonb ->> %s)::float8 * cores) FROM workers "
            "WHERE \"left\" = 0 AND revoked = 0 AND barred = '' AND last_seen_s >= %s "
            "GROUP BY grid_zone",
            (kind, seen_since),
        ).fetchall()
        return {str(zone): float(speed) for zone, speed in rows if speed and speed > 0}

    def pool_cores(self, seen_since: float) -> int:
        total = self._scalar(
            "SELECT SUM(cores) FROM workers "
            "WHERE \"left\" = 0 AND revoked = 0 AND barred = '' AND last_seen_s >= %s",
            seen_since,
        )
        return int(total or 0)

    # credentials

    def get_credential(self, cred_id: str) -> Credential | None:
        return self._one(CREDENTIALS, cred_id)  # type: ignore[no-any-return]

    def put_credential(self, credential: Credential) -> None:
        self._put(CREDENTIALS, credential)

    def list_credentials(self, kind: CredentialKind) -> list[Credential]:
        return self._many(CREDENTIALS, "WHERE kind = %s ORDER BY created_s, cred_id", kind.value)

    # jobs

    def get_job(self, job_id: str) -> Job | None:
        return self._one(JOBS, job_id)  # type: ignore[no-any-return]

    def put_job(self, job: Job) -> None:
        self._put(JOBS, job)

    def list_jobs(
        self,
        states: frozenset[JobState] | None,
        limit: int,
        owner: str | None = None,
        created_since: float | None = None,
    ) -> list[Job]:
        conditions: list[str] = []
        args: list[Any] = []
        if states is not None:
            conditions.append("state = ANY(%s)")
            args.append([s.value for s in states])
        if owner is not None:
            conditions.append("owner = %s")
            args.append(owner)
        if created_since is not None:
            conditions.append("created_s >= %s")
            args.append(created_since)
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        return self._many(
            JOBS, f"{where} ORDER BY created_s DESC, job_id DESC LIMIT %s", *args, limit
        )

    def count_jobs(self) -> dict[JobState, int]:
        rows = self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        counts = {str(state): int(count) for state, count in rows}
        return {state: counts.get(state.value, 0) for state in JobState}

    def lock_jobs(self, job_ids: Collection[str]) -> None:
        if job_ids and self._db.locking:
            self._many(
                JOBS, "WHERE job_id = ANY(%s) ORDER BY job_id", sorted(job_ids), lock=" FOR UPDATE"
            )

    def lock_exchanges(
        self,
        worker_ids: Collection[str],
        lease_ids: Collection[str],
        reported: Collection[str],
        want_work: bool,
    ) -> None:
        # One round trip: every row the exchanges will read to write back, in the lock
        # order (jobs, workers, leases, chunks; each by key), held for the exchanges to
        # read without asking again; and the wanting workers' active leases, counted.
        session = self._db.session()
        if session is None or not session.locking:
            return
        leases, workers = sorted(set(lease_ids)), sorted(set(worker_ids))
        in_leases = "IN (SELECT {} FROM leases WHERE lease_id = ANY(%s))"
        queries: list[tuple[str, Any]] = [
            (
                f"{JOBS.select} WHERE job_id {in_leases.format('job_id')} "
                "OR (%s AND state = 'running') ORDER BY job_id FOR UPDATE",
                (leases, want_work),
            ),
            (
                f"{WORKERS.select} WHERE worker_id = ANY(%s) ORDER BY worker_id FOR UPDATE",
                (workers,),
            ),
            (f"{LEASES.select} WHERE lease_id = ANY(%s) ORDER BY lease_id FOR UPDATE", (leases,)),
            (
                f'{CHUNKS.select} WHERE (job_id, "index") '
                f"{in_leases.format('job_id, chunk_index')} "
                'ORDER BY job_id, "index" FOR UPDATE',
                (sorted(set(reported)),),
            ),
            (
                "SELECT worker_id, lease_id FROM leases WHERE worker_id = ANY(%s) "
                "AND state = 'active'",
                (workers if want_work else [],),
            ),
        ]
        jobs, *locked, active = [c.fetchall() for c in session.send_many(queries)]
        held = session.held
        for row in jobs:
            keep(held, JOBS, list(row))
        if want_work:  # every running job is among them
            running = [JOBS.record(row) for row in jobs]
            running = [job for job in running if job.state is JobState.RUNNING]
            running.sort(key=lambda job: (job.created_s, job.job_id))
            held.set_running([RunningJob(j.job_id, j.kind, j.owner, j.priority) for j in running])
            ids: dict[str, set[str]] = {worker_id: set() for worker_id in workers}
            for worker_id, lease_id in active:
                ids[worker_id].add(lease_id)
            for worker_id, leases_of_worker in ids.items():
                held.track_active(worker_id, leases_of_worker)
        for table, rows in zip((WORKERS, LEASES, CHUNKS), locked, strict=True):
            for row in rows:
                keep(held, table, list(row))

    def jobs_of_leases(self, lease_ids: Collection[str]) -> set[str]:
        if not lease_ids:
            return set()
        rows = self._db.execute(
            "SELECT DISTINCT job_id FROM leases WHERE lease_id = ANY(%s)", (list(lease_ids),)
        ).fetchall()
        return {str(row[0]) for row in rows}

    def running_jobs(self) -> Collection[RunningJob]:
        # Held for the transaction: a job it has not locked that starts meanwhile waits
        # for its next one; one it finishes is read again after its write.
        held = self._held()
        if held is not None and held.running is not None:
            return list(held.running)
        rows = self._db.execute(
            "SELECT job_id, kind, owner, priority FROM jobs WHERE state = 'running' "
            "ORDER BY created_s, job_id"
        ).fetchall()
        running = [RunningJob(str(j), str(k), str(o), int(p)) for j, k, o, p in rows]
        if held is not None:
            held.set_running(list(running))
        return running

    def owner_usage(self) -> dict[str, Usage]:
        # Read to be charged and written back: locked, so two coordinators charge in turn.
        held = self._held()
        if held is not None and held.usage is not None:
            return dict(held.usage)
        query = "SELECT owner, usage_s, as_of_s FROM owner_usage" + self._lock()
        rows = self._db.execute(query).fetchall()
        usage = {str(owner): Usage(float(u), float(t)) for owner, u, t in rows}
        if held is not None:
            held.set_usage(dict(usage))
        return usage

    def put_owner_usage(self, usage: dict[str, Usage]) -> None:
        rows = [(owner, u.usage_s, u.as_of_s) for owner, u in usage.items()]
        session = self._db.session()
        if session is None:
            self._db.executemany(USAGE_UPSERT, rows)
            return
        for row in rows:
            session.write(USAGE_UPSERT, (row[0],), row)
        if session.locking and session.held.usage is not None:
            session.held.set_usage({**session.held.usage, **usage})

    def owner_weights(self) -> dict[str, float]:
        rows = self._db.execute(
            "SELECT cred_id, weight FROM credentials WHERE kind = 'api_key' AND weight <> 1"
        ).fetchall()
        return {str(cred_id): float(weight) for cred_id, weight in rows}

    # chunks

    def get_chunk(self, job_id: str, index: int) -> Chunk | None:
        return self._one(CHUNKS, job_id, index)  # type: ignore[no-any-return]

    def put_chunk(self, chunk: Chunk) -> None:
        self._put(CHUNKS, chunk)

    def pending_chunks(self, job_id: str, limit: int, not_held_by: str = "") -> list[Chunk]:
        held = self._held()
        if held is not None and held.exhausted & {(job_id, ""), (job_id, not_held_by)}:
            return self._held_pending(held, job_id, limit, not_held_by)
        found = self._claim_pending(job_id, limit, not_held_by)
        if held is not None and len(found) < limit:
            # Every free one is claimed: until this transaction ends, its own are all
            # there are (those another coordinator frees meanwhile wait for the next).
            held.exhaust(job_id, not_held_by)
        return found

    @staticmethod
    def _held_pending(held: Held, job_id: str, limit: int, not_held_by: str) -> list[Chunk]:
        rows = held.table(CHUNKS.name)
        found: list[Chunk] = []
        for index in sorted(held.pending.get(job_id, ())):
            chunk: Chunk = CHUNKS.record(rows[(job_id, index)])
            if not (not_held_by and not_held_by in chunk.holders):
                found.append(chunk)
                if len(found) == limit:
                    break
        return found

    def _claim_pending(self, job_id: str, limit: int, not_held_by: str) -> list[Chunk]:
        where = "WHERE job_id = %s AND state = 'pending' "
        args: list[Any] = [job_id]
        if not_held_by:
            where += "AND NOT (holders::jsonb ? %s) "
            args.append(not_held_by)
        lock = self._lock(skip_locked=True)
        return self._many(CHUNKS, where + 'ORDER BY "index" LIMIT %s', *args, limit, lock=lock)

    def verified_chunk(self, job_id: str, max_units: int) -> Chunk | None:
        where = (
            "WHERE job_id = %s AND verified <> 0 AND stop - start <= %s "
            'ORDER BY "index" DESC LIMIT 1'
        )
        found = self._many(CHUNKS, where, job_id, max_units)
        return found[0] if found else None

    def unverified_chunks(self, worker_id: str) -> list[Chunk]:
        where = "WHERE unverified_by = %s AND unverified_by <> '' ORDER BY job_id, \"index\""
        return self._many(CHUNKS, where, worker_id, lock=self._lock())

    def leased_chunks(self, job_id: str, limit: int | None = None) -> list[Chunk]:
        where = "WHERE job_id = %s AND state = 'leased' ORDER BY \"index\" LIMIT %s"
        return self._many(CHUNKS, where, job_id, limit, lock=self._lock(skip_locked=True))

    def tail_chunks(
        self, job_id: str, now: float, silent_deadline_s: float, limit: int, race: bool = True
    ) -> list[Chunk]:
        args = tail_chunks_args(job_id, now, silent_deadline_s, limit, race)
        lock = self._lock(skip_locked=True)
        return self._many(CHUNKS, _TAIL_CHUNKS[race], *args, lock=lock)

    # leases

    def get_lease(self, lease_id: str) -> Lease | None:
        return self._one(LEASES, lease_id)  # type: ignore[no-any-return]

    def put_lease(self, lease: Lease) -> None:
        self._put(LEASES, lease)

    def active_leases_of_chunk(self, job_id: str, index: int) -> list[Lease]:
        where = (
            "WHERE job_id = %s AND chunk_index = %s AND state = 'active' "
            "ORDER BY issued_s, lease_id"
        )
        return self._many(LEASES, where, job_id, index, lock=self._lock())

    def active_leases_of_worker(self, worker_id: str) -> list[Lease]:
        where = "WHERE worker_id = %s AND state = 'active' ORDER BY issued_s, lease_id"
        return self._many(LEASES, where, worker_id, lock=self._lock())

    def count_active_leases(self, worker_id: str) -> int:
        held = self._held()
        if held is None:
            return int(
                self._scalar(
                    "SELECT COUNT(*) FROM leases WHERE worker_id = %s AND state = 'active'",
                    worker_id,
                )
            )
        # Counted once, then kept by _keep: while this transaction holds the worker's row
        # no other grants it a lease (another's expiry may end one: the count only errs
        # high, and the worker is granted less until the next exchange).
        if worker_id not in held.active:
            rows = self._db.execute(
                "SELECT lease_id FROM leases WHERE worker_id = %s AND state = 'active'",
                (worker_id,),
            ).fetchall()
            held.track_active(worker_id, {str(row[0]) for row in rows})
        return len(held.active[worker_id])

    def active_lease_counts(self) -> dict[str, int]:
        rows = self._db.execute(
            "SELECT worker_id, COUNT(*) FROM leases WHERE state = 'active' GROUP BY worker_id"
        ).fetchall()
        return {str(worker_id): int(count) for worker_id, count in rows}

    def overdue_leases(self, now: float, limit: int) -> list[Lease]:
        where = "WHERE state = 'active' AND deadline_s < %s ORDER BY issued_s, lease_id LIMIT %s"
        return self._many(LEASES, where, now, limit, lock=self._lock(skip_locked=True))

    # outputs and artefacts (the candidates, reading outputs and the ledger: SQLCommon)

    def put_output(self, output: StoredOutput) -> None:
        text, blob = spill_output(self._blobs, output.job_id, output.chunk_index, output.output)
        row = (output.job_id, output.chunk_index, output.start, output.stop, text, blob)
        session = self._db.session()
        if session is None:
            self._db.execute(OUTPUT_UPSERT, row)
        else:
            session.write(OUTPUT_UPSERT, row[:2], row)

    def artefact_written(self, job_id: str, name: str, media_type: str) -> None:
        self._db.execute(
            "INSERT INTO artefacts VALUES (%s, %s, %s, %s) ON CONFLICT (job_id, name) "
            "DO UPDATE SET media_type = excluded.media_type, blob = excluded.blob",
            (job_id, name, media_type, artefact_blob_name(name)),
        )

    def open_artefact(self, job_id: str, name: str) -> tuple[str, BinaryIO] | None:
        row = self._db.execute(
            "SELECT media_type, blob FROM artefacts WHERE job_id = %s AND name = %s",
            (job_id, name),
        ).fetchone()
        if row is None:
            return None
        media_type, blob = row
        file = self._blobs.open(job_id, blob)
        if file is None:
            raise StoreError(f"the artefact blob {job_id}/{blob} is missing from the blob store")
        return media_type, file
