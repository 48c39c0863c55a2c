"""SQLite backend: the embedded default, one file in WAL mode.

Every transaction is ``BEGIN IMMEDIATE … COMMIT`` with ``synchronous=FULL``, so once a
transaction's block has ended its writes survive a crash of the process or the machine:
this is what lets the coordinator acknowledge a result only after it is durable.
The schema evolves by numbered migrations recorded in ``PRAGMA user_version``.
"""

from __future__ import annotations

import contextlib
import io
import os
import sqlite3
import stat
import threading
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from hydracompute.core.fairshare import RunningJob, Usage
from hydracompute.core.models import (
    Chunk,
    ChunkState,
    Credential,
    CredentialKind,
    Job,
    JobState,
    Lease,
    Worker,
)
from hydracompute.errors import StoreError, StoreUnavailable
from hydracompute.store.backend import Backend, StoredOutput
from hydracompute.store.blobs import BlobStore, FolderBlobStore, MemoryBlobStore
from hydracompute.store.payloads import artefact_blob_name, spill_output
from hydracompute.store.sql_common import SQLCommon, tail_chunks_args, tail_chunks_where
from hydracompute.store.sqlite_migrations import MIGRATIONS
from hydracompute.store.sqlite_rows import (
    CHUNKS,
    CREDENTIALS,
    JOBS,
    LEASES,
    WORKERS,
    Table,
)
from hydracompute.store.sqlite_shared import SQLiteShared

#: Rows kept in memory per remembered table at most (then forgotten, the longest since
#: written or read from the file first): about two leases per core of the pool are in play
#: at once.
MAX_REMEMBERED_ROWS = 20_000


#: How long a transaction waits for another connection's write lock before giving up (the
#: coordinator then answers 503 with Retry-After: the request changed nothing).
BUSY_TIMEOUT_S = 10.0

_TAIL_CHUNKS = {race: tail_chunks_where(race, "?") for race in (False, True)}


def store_error(exc: sqlite3.Error) -> StoreError:
    """The store error for an SQLite error: :class:`StoreUnavailable` if the file stayed
    locked by another connection (or could not be opened) and a retry may succeed."""
    text = str(exc)
    if isinstance(exc, sqlite3.OperationalError) and (
        "locked" in text or "busy" in text or "unable to open" in text
    ):
        return StoreUnavailable(f"the SQLite database is unavailable: {text}")
    return StoreError(f"SQLite error: {text}")


def keep_private(path: Path) -> None:
    """Make the database file (created if missing) and its ``-wal`` and ``-shm`` files
    readable by their owner only: the database holds the pool's CA key, join token and
    session secret (see :mod:`hydracompute.coordinator.pool_secrets`). SQLite gives the
    files it creates the database file's mode."""
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
    for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        with contextlib.suppress(FileNotFoundError):
            mode = stat.S_IMODE(file.stat().st_mode)
            if mode & 0o077:
                file.chmod(mode & 0o700)


def blob_folder_of(path: str | Path) -> Path:
    """The blob folder beside a database file: ``NAME.db`` keeps its blobs in
    ``NAME.db-blobs/`` (as SQLite keeps ``NAME.db-wal`` beside it)."""
    return Path(f"{path}-blobs")


class SQLiteBackend(SQLiteShared, SQLCommon, Backend):
    """Backend on one SQLite file (``":memory:"`` for a throw-away database), with its
    large payloads in ``blobs`` (by default the folder :func:`blob_folder_of` the file, or
    memory for a throw-away database)."""

    def __init__(
        self,
        path: str | Path,
        blobs: BlobStore | None = None,
        busy_timeout_s: float = BUSY_TIMEOUT_S,
    ) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            keep_private(Path(self.path))
        if blobs is None:
            in_memory = self.path == ":memory:"
            blobs = MemoryBlobStore() if in_memory else FolderBlobStore(blob_folder_of(path))
        self._blobs = blobs
        self._lock = threading.RLock()
        self._depth = 0
        #: The thread whose transaction is open (while ``_depth`` > 0).
        self._owner = 0
        #: The running jobs, read on every exchange that asks for work, kept until a job
        #: starts or stops running, a transaction is rolled back, or another connection
        #: changes the file (``data_version``); the owners' usage likewise.
        self._running: dict[str, RunningJob] | None = None  # by job id, oldest first
        self._usage: dict[str, Usage] | None = None
        self._running_version = -1
        #: Rows of the remembered tables as last written or read from the file, by table and
        #: key, in that order (the oldest are forgotten first); and the running jobs known
        #: to have no pending chunk (most exchanges ask; a job leaves the set when it stops
        #: running). Both are forgotten with the running jobs.
        self._rows: dict[str, dict[tuple[Any, ...], list[Any]]] = {
            table.name: {} for table in (WORKERS, CHUNKS, LEASES)
        }
        self._no_pending: set[str] = set()
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
            self._migrate()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite database {self.path}: {exc}") from exc

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        current = self.schema_version
        if current > len(MIGRATIONS):
            raise StoreError(
                f"database schema version {current} is newer than this Hydra Compute "
                f"({len(MIGRATIONS)}); upgrade hydracompute"
            )
        for version in range(current + 1, len(MIGRATIONS) + 1):
            with self.transaction():
                for statement in MIGRATIONS[version - 1].split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {version}")

    def in_transaction(self) -> bool:
        return self._depth > 0 and self._owner == threading.get_ident()

    @contextmanager
    def transaction(self, read_only: bool = False) -> Iterator[None]:
        # One writer at a time holds the file (BEGIN IMMEDIATE): nothing to lock row by row.
        with self._lock:
            if self._depth:  # nested: a savepoint, so that a failure undoes only its part
                savepoint = f"nested_{self._depth}"
                self._depth += 1
                try:
                    self._db.execute(f"SAVEPOINT {savepoint}")
                    try:
                        yield
                    except BaseException:
                        self._forget()
                        self._db.execute(f"ROLLBACK TO {savepoint}")
                        self._db.execute(f"RELEASE {savepoint}")
                        raise
                    self._db.execute(f"RELEASE {savepoint}")
                except sqlite3.Error as exc:
                    raise store_error(exc) from exc
                finally:
                    self._depth -= 1
                return
            self._depth = 1
            self._owner = threading.get_ident()
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._follow_other_connections()
                try:
                    yield
                    self._blobs.sync()  # the blobs its rows name, on the disk first
                except BaseException:
                    self._forget()
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                # A failed COMMIT (I/O error, disk full) can leave the transaction open.
                self._forget()
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise store_error(exc) from exc
            finally:
                self._depth = 0

    def close(self) -> None:
        with self._lock:
            self._db.close()
        self._blobs.close()

    @property
    def blobs(self) -> BlobStore:
        return self._blobs

    def _forget(self) -> None:
        """Drop what is remembered of the file: a rollback undid writes it remembers, or
        another connection changed the file."""
        self._running = None
        self._usage = None
        for rows in self._rows.values():
            rows.clear()
        self._no_pending.clear()

    def _put(self, table: Table, obj: Any) -> None:
        row = table.row(obj)
        self._db.execute(table.upsert, row)
        if table.remembered:
            self._remember(table, table.key_of(obj), row)

    def _one(self, table: Table, *key: Any) -> Any:
        if not table.remembered:
            found = self._db.execute(table.select_key, key).fetchone()
            return None if found is None else table.record(found)
        with self._lock:
            self._look_at_file()
            row = self._rows[table.name].get(key)
            if row is None:
                found = self._db.execute(table.select_key, key).fetchone()
                if found is None:
                    return None
                row = self._remember(table, key, list(found))
        return table.record(row)

    def _remember(self, table: Table, key: tuple[Any, ...], row: list[Any]) -> list[Any]:
        """Keep ``row`` as the current one of ``key`` (the row as written, or as read)."""
        rows = self._rows[table.name]
        rows.pop(key, None)
        rows[key] = row  # last: dict order is the order of writes and reads from the file
        if len(rows) > MAX_REMEMBERED_ROWS:
            del rows[next(iter(rows))]
        return row

    def _many(self, table: Table, where: str, *args: Any) -> list[Any]:
        rows = self._db.execute(f"{table.select} {where}", args).fetchall()
        return [table.record(row) for row in rows]

    def paused_workers(self, worker_ids: Collection[str]) -> set[str]:
        ids = list(worker_ids)
        if not ids:
            return set()
        marks = ", ".join("?" * len(ids))
        query = f"SELECT worker_id FROM workers WHERE state = 'paused' AND worker_id IN ({marks})"
        return {str(row[0]) for row in self._db.execute(query, ids)}

    def get_worker(self, worker_id: str) -> Worker | None:
        return self._one(WORKERS, worker_id)  # type: ignore[no-any-return]

    def put_worker(self, worker: Worker) -> None:
        self._put(WORKERS, worker)

    def list_workers(self) -> list[Worker]:
        return self._many(WORKERS, "ORDER BY enrolled_s")

    def pool_tokens(self, seen_since: float) -> int:
        row = self._db.execute(
            "SELECT COUNT(DISTINCT token_id) FROM workers "
            "WHERE NOT \"left\" AND NOT revoked AND barred = '' AND last_seen_s >= ?",
            (seen_since,),
        ).fetchone()
        return int(row[0])

    def delete_worker(self, worker_id: str) -> None:
        self._db.execute("DELETE FROM workers WHERE worker_id = ?", (worker_id,))
        self._rows[WORKERS.name].pop((worker_id,), None)

    def workers_seen_before(
        self, seen_before: float, limit: int, seen_since: float | None = None
    ) -> list[Worker]:
        since = float("-inf") if seen_since is None else seen_since
        where = "WHERE last_seen_s < ? AND last_seen_s >= ? ORDER BY last_seen_s, worker_id LIMIT ?"
        return self._many(WORKERS, where, seen_before, since, limit)

    def pool_speed(self, kind: str, seen_since: float) -> float:
        # Summed by SQLite: decoding every worker's row in Python once a second took tens
        # of milliseconds of the store thread with thousands of workers.
        row = self._db.execute(
            "SELECT TOTAL(json_extract(speeds, '$.\"' || ? || '\"') * cores) FROM workers "
            'WHERE NOT "left" AND NOT revoked AND last_seen_s >= ?',
            (kind, seen_since),
        ).fetchone()
        return float(row[0])

    def zone_speeds(self, kind: str, seen_since: float) -> dict[str, float]:
        rows = self._db.execute(
            "SELECT grid_zone, TOTAL(json_extract(speeds, '$.\"' || ? || '\"') * cores) "
            "FROM workers WHERE NOT \"left\" AND NOT revoked AND barred = '' "
            "AND last_seen_s >= ? GROUP BY grid_zone",
            (kind, seen_since),
        ).fetchall()
        return {str(zone): float(speed) for zone, speed in rows if speed > 0}

    def pool_cores(self, seen_since: float) -> int:
        row = self._db.execute(
            "SELECT TOTAL(cores) FROM workers "
            "WHERE NOT \"left\" AND NOT revoked AND barred = '' AND last_seen_s >= ?",
            (seen_since,),
        ).fetchone()
        return int(row[0])

    def get_credential(self, cred_id: str) -> Credential | None:
        return self._one(CREDENTIALS, cred_id)  # type: ignore[no-any-return]

    def put_credential(self, credential: Credential) -> None:
        self._put(CREDENTIALS, credential)

    def list_credentials(self, kind: CredentialKind) -> list[Credential]:
        return self._many(CREDENTIALS, "WHERE kind = ? ORDER BY created_s, cred_id", kind.value)

    def get_job(self, job_id: str) -> Job | None:
        return self._one(JOBS, job_id)  # type: ignore[no-any-return]

    def put_job(self, job: Job) -> None:
        self._put(JOBS, job)
        if job.state is not JobState.RUNNING:
            self._no_pending.discard(job.job_id)
        running = self._running
        if running is not None and (job.state is JobState.RUNNING) != (job.job_id in running):
            self._running = None

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
            conditions.append(f"state IN ({', '.join('?' for _ in states)})")
            args.extend(s.value for s in states)
        if owner is not None:
            conditions.append("owner = ?")
            args.append(owner)
        if created_since is not None:
            conditions.append("created_s >= ?")
            args.append(created_since)
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        order = "ORDER BY created_s DESC, job_id DESC LIMIT ?"
        return self._many(JOBS, f"{where} {order}", *args, limit)

    def _look_at_file(self) -> None:
        """Outside a transaction, :meth:`_follow_other_connections` (inside one, its start
        did)."""
        if not self._depth:
            self._follow_other_connections()

    def _follow_other_connections(self) -> None:
        """Forget the running jobs if another connection changed the file since this one
        last looked (checked once per transaction: no other writer gets in during one)."""
        version = int(self._db.execute("PRAGMA data_version").fetchone()[0])
        if version != self._running_version:
            self._forget()
            self._running_version = version

    def count_jobs(self) -> dict[JobState, int]:
        counts = dict(self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state"))
        return {state: int(counts.get(state.value, 0)) for state in JobState}

    def running_jobs(self) -> Collection[RunningJob]:
        with self._lock:
            self._look_at_file()
            if self._running is None:
                rows = self._db.execute(
                    "SELECT job_id, kind, owner, priority FROM jobs WHERE state = 'running' "
                    "ORDER BY created_s, job_id"
                ).fetchall()
                self._running = {str(row[0]): RunningJob(*row) for row in rows}
            return self._running.values()  # a view: the dict is replaced, never changed

    def owner_usage(self) -> dict[str, Usage]:
        with self._lock:
            self._look_at_file()
            if self._usage is None:
                rows = self._db.execute("SELECT owner, usage_s, as_of_s FROM owner_usage")
                self._usage = {str(owner): Usage(u, t) for owner, u, t in rows}
            return dict(self._usage)

    def put_owner_usage(self, usage: dict[str, Usage]) -> None:
        self._db.executemany(
            "INSERT INTO owner_usage VALUES (?, ?, ?) ON CONFLICT (owner) DO UPDATE SET "
            "usage_s = excluded.usage_s, as_of_s = excluded.as_of_s",
            [(owner, u.usage_s, u.as_of_s) for owner, u in usage.items()],
        )
        if self._usage is not None:
            self._usage.update(usage)

    def owner_weights(self) -> dict[str, float]:
        rows = self._db.execute(
            "SELECT cred_id, weight FROM credentials WHERE kind = 'api_key' AND weight != 1"
        )
        return {str(cred_id): float(weight) for cred_id, weight in rows}

    def get_chunk(self, job_id: str, index: int) -> Chunk | None:
        return self._one(CHUNKS, job_id, index)  # type: ignore[no-any-return]

    def put_chunk(self, chunk: Chunk) -> None:
        self._put(CHUNKS, chunk)
        if chunk.state is ChunkState.PENDING:
            self._no_pending.discard(chunk.job_id)

    def pending_chunks(self, job_id: str, limit: int, not_held_by: str = "") -> list[Chunk]:
        with self._lock:
            self._look_at_file()
            if job_id in self._no_pending:
                return []
            # INDEXED BY: without statistics the planner prefers the primary key (it also
            # gives the order), which means reading every chunk of the job.
            where = "INDEXED BY pending_chunks WHERE job_id = ? AND state = 'pending' "
            if not_held_by:
                where += "AND json_extract(holders, '$.\"' || ? || '\"') IS NULL "
                args: tuple[Any, ...] = (job_id, not_held_by, limit)
            else:
                args = (job_id, limit)
            chunks = self._many(CHUNKS, where + 'ORDER BY "index" LIMIT ?', *args)
            if not chunks and not not_held_by:
                self._no_pending.add(job_id)
            return chunks

    def verified_chunk(self, job_id: str, max_units: int) -> Chunk | None:
        where = (
            "INDEXED BY verified_chunks WHERE job_id = ? AND verified AND stop - start <= ? "
            'ORDER BY "index" DESC LIMIT 1'
        )
        found = self._many(CHUNKS, where, job_id, max_units)
        return found[0] if found else None

    def unverified_chunks(self, worker_id: str) -> list[Chunk]:
        where = "WHERE unverified_by = ? AND unverified_by != '' ORDER BY job_id, \"index\""
        return self._many(CHUNKS, where, worker_id)

    def leased_chunks(self, job_id: str, limit: int | None = None) -> list[Chunk]:
        where = "INDEXED BY leased_chunks WHERE job_id = ? AND state = 'leased' "
        return self._many(CHUNKS, where + 'ORDER BY "index" LIMIT ?', job_id, limit or -1)

    def tail_chunks(
        self, job_id: str, now: float, silent_deadline_s: float, limit: int, race: bool = True
    ) -> list[Chunk]:
        args = tail_chunks_args(job_id, now, silent_deadline_s, limit, race)
        return self._many(CHUNKS, _TAIL_CHUNKS[race], *args)

    def get_lease(self, lease_id: str) -> Lease | None:
        return self._one(LEASES, lease_id)  # type: ignore[no-any-return]

    def put_lease(self, lease: Lease) -> None:
        self._put(LEASES, lease)

    def active_leases_of_chunk(self, job_id: str, index: int) -> list[Lease]:
        where = (
            "WHERE job_id = ? AND chunk_index = ? AND state = 'active' ORDER BY issued_s, lease_id"
        )
        return self._many(LEASES, where, job_id, index)

    def active_leases_of_worker(self, worker_id: str) -> list[Lease]:
        where = "WHERE worker_id = ? AND state = 'active' ORDER BY issued_s, lease_id"
        return self._many(LEASES, where, worker_id)

    def count_active_leases(self, worker_id: str) -> int:
        row = self._db.execute(
            "SELECT COUNT(*) FROM leases WHERE worker_id = ? AND state = 'active'", (worker_id,)
        ).fetchone()
        return int(row[0])

    def active_lease_counts(self) -> dict[str, int]:
        rows = self._db.execute(
            "SELECT worker_id, COUNT(*) FROM leases WHERE state = 'active' GROUP BY worker_id"
        ).fetchall()
        return {str(worker_id): int(count) for worker_id, count in rows}

    def overdue_leases(self, now: float, limit: int) -> list[Lease]:
        where = "WHERE state = 'active' AND deadline_s < ? ORDER BY issued_s, lease_id LIMIT ?"
        return self._many(LEASES, where, now, limit)

    def put_output(self, output: StoredOutput) -> None:
        text, blob = spill_output(self._blobs, output.job_id, output.chunk_index, output.output)
        self._db.execute(
            "INSERT OR REPLACE INTO outputs VALUES (?, ?, ?, ?, ?, ?)",
            (output.job_id, output.chunk_index, output.start, output.stop, text, blob),
        )

    def artefact_written(self, job_id: str, name: str, media_type: str) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO artefacts VALUES (?, ?, ?, ?, ?)",
            (job_id, name, media_type, b"", artefact_blob_name(name)),
        )

    def open_artefact(self, job_id: str, name: str) -> tuple[str, BinaryIO] | None:
        row = self._db.execute(
            "SELECT media_type, blob, data FROM artefacts WHERE job_id = ? AND name = ?",
            (job_id, name),
        ).fetchone()
        if row is None:
            return None
        media_type, blob, data = row
        if blob is None:  # stored in the row before blobs existed
            return media_type, io.BytesIO(data)
        file = self._blobs.open(job_id, blob)
        if file is None:
            raise StoreError(f"the artefact blob {job_id}/{blob} is missing from the blob store")
        return media_type, file
