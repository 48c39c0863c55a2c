"""The PostgreSQL backend's tables as records (SQLite's row mapping, with ``%s``
placeholders), and what a write transaction holds of them (:class:`Held`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from hydracompute.core.fairshare import RunningJob, Usage
from hydracompute.core.models import (
    Chunk,
    ChunkState,
    Credential,
    Job,
    Lease,
    LeaseState,
    Worker,
)
from hydracompute.store.sqlite_rows import Table

WORKERS = Table("workers", Worker, ("worker_id",), mark="%s")
CREDENTIALS = Table("credentials", Credential, ("cred_id",), mark="%s")
JOBS = Table("jobs", Job, ("job_id",), mark="%s")
CHUNKS = Table("chunks", Chunk, ("job_id", "index"), mark="%s")
LEASES = Table("leases", Lease, ("lease_id",), mark="%s")
Key = tuple[Any, ...]


_MISSING = object()


class Held:
    """What a write transaction holds: the rows it locked or wrote, its unsent writes, and
    figures the backend derives from its rows.

    Every change goes through a method that, inside a nested block, logs how to undo it:
    a refused block is undone by replaying its log backwards. (Copying everything held
    when each block began cost time in the square of a batch's size: a batch of 500
    exchanges holds some 2,500 rows, copied 500 times.)
    """

    def __init__(self) -> None:
        #: Rows by table name, then key: as the database has them once the writes are sent.
        self.rows: dict[str, dict[Key, list[Any]]] = {}
        #: Writes not sent: ``(statement, key)`` → parameters (the last per key).
        self.unsent: dict[tuple[str, Key], Sequence[Any]] = {}
        #: Rows to insert, not sent: ``(statement, parameters)`` in order.
        self.appended: list[tuple[str, Sequence[Any]]] = []
        #: The running jobs as this transaction left them (``None``: read them).
        self.running: list[RunningJob] | None = None
        #: Every owner's usage, read locked (``None``: not read yet).
        self.usage: dict[str, Usage] | None = None
        #: Active lease ids of the workers whose leases were counted (by worker id).
        self.active: dict[str, set[str]] = {}
        #: Indices of the held chunks that are pending, by job.
        self.pending: dict[str, set[int]] = {}
        #: ``(job_id, not_held_by)`` whose free pending chunks this transaction has all
        #: claimed (a claim came back short): it looks no further until it ends.
        self.exhausted: set[tuple[str, str]] = set()
        #: The undo logs of the open nested blocks, innermost last.
        self._logs: list[list[Callable[[], Any]]] = []

    # nested blocks

    def enter(self) -> None:
        self._logs.append([])

    def leave(self, ok: bool) -> None:
        """End the innermost block: its changes kept (undone with its parent's, if that is
        refused), or undone."""
        log = self._logs.pop()
        if ok:
            if self._logs:
                self._logs[-1].extend(log)
            return
        for undo in reversed(log):
            undo()

    def _set_item(self, mapping: dict[Any, Any], key: Any, value: Any) -> None:
        if self._logs:
            old = mapping.get(key, _MISSING)
            if old is _MISSING:
                self._logs[-1].append(lambda: mapping.pop(key, None))
            else:
                self._logs[-1].append(lambda: mapping.__setitem__(key, old))
        mapping[key] = value

    def _add(self, members: set[Any], member: Any, present: bool) -> None:
        if (member in members) == present:
            return
        if present:
            members.add(member)
            undo = members.discard
        else:
            members.discard(member)
            undo = members.add
        if self._logs:
            self._logs[-1].append(lambda: undo(member))

    # changes

    def table(self, name: str) -> dict[Key, list[Any]]:
        """The rows held of a table (change them with :meth:`put_row`)."""
        found = self.rows.get(name)
        if found is None:  # kept for good: an empty table undoes nothing
            found = self.rows[name] = {}
        return found

    def put_row(self, name: str, key: Key, row: list[Any]) -> None:
        self._set_item(self.table(name), key, row)

    def write(self, statement: str, key: Key, row: Sequence[Any]) -> None:
        self._set_item(self.unsent, (statement, key), row)

    def append(self, statement: str, rows: Sequence[Sequence[Any]]) -> None:
        appended = self.appended
        if self._logs:
            length = len(appended)
            self._logs[-1].append(lambda: appended.__delitem__(slice(length, None)))
        appended.extend((statement, row) for row in rows)

    def sent(self) -> None:
        """The unsent writes were sent (in a block, after its savepoint: undone with it,
        they are unsent again)."""
        if self._logs and (self.unsent or self.appended):
            unsent, appended = dict(self.unsent), list(self.appended)
            self._logs[-1].append(lambda: self._unsend(unsent, appended))
        self.unsent.clear()
        self.appended.clear()

    def _unsend(
        self,
        unsent: dict[tuple[str, Key], Sequence[Any]],
        appended: list[tuple[str, Sequence[Any]]],
    ) -> None:
        self.unsent.clear()
        self.unsent.update(unsent)
        self.appended[:] = appended

    def set_running(self, running: list[RunningJob] | None) -> None:
        if self._logs:
            old = self.running
            self._logs[-1].append(lambda: setattr(self, "running", old))
        self.running = running

    def set_usage(self, usage: dict[str, Usage]) -> None:
        if self._logs:
            old = self.usage
            self._logs[-1].append(lambda: setattr(self, "usage", old))
        self.usage = usage

    def track_active(self, worker_id: str, lease_ids: set[str]) -> None:
        """Count the worker's active leases from now on (``lease_ids``: as read)."""
        if worker_id in self.active:
            for lease_id in lease_ids:
                self._add(self.active[worker_id], lease_id, True)
        else:
            self._set_item(self.active, worker_id, set(lease_ids))

    def lease_state(self, worker_id: str, lease_id: str, active: bool) -> None:
        tracked = self.active.get(worker_id)
        if tracked is not None:
            self._add(tracked, lease_id, active)

    def chunk_state(self, job_id: str, index: int, pending: bool) -> None:
        indices = self.pending.get(job_id)
        if indices is None:  # kept for good: an empty set undoes nothing
            indices = self.pending[job_id] = set()
        self._add(indices, index, pending)

    def exhaust(self, job_id: str, not_held_by: str) -> None:
        self._add(self.exhausted, (job_id, not_held_by), True)


def _positions(table: Table, *names: str) -> tuple[int, ...]:
    return tuple(table.fields.index(name) for name in names)


_KEYS = {
    table.name: _positions(table, *table.key)
    for table in (WORKERS, CREDENTIALS, JOBS, CHUNKS, LEASES)
}
_LEASE_WORKER, _LEASE_STATE = _positions(LEASES, "worker_id", "state")
_CHUNK_JOB, _CHUNK_INDEX, _CHUNK_STATE = _positions(CHUNKS, "job_id", "index", "state")


def keep(held: Held, table: Table, row: list[Any], replace: bool = False) -> None:
    """Hold ``row`` of ``table`` (a row read locked, or written: ``replace``), keeping the
    figures derived from it current: a worker's active leases, a job's pending chunks."""
    key = tuple(row[p] for p in _KEYS[table.name])
    if not replace and key in held.table(table.name):  # what this transaction holds is newer
        return
    held.put_row(table.name, key, row)
    if table is LEASES:
        held.lease_state(row[_LEASE_WORKER], row[0], row[_LEASE_STATE] == LeaseState.ACTIVE.value)
    elif table is CHUNKS:
        pending = row[_CHUNK_STATE] == ChunkState.PENDING.value
        held.chunk_state(row[_CHUNK_JOB], row[_CHUNK_INDEX], pending)
    elif table is JOBS and replace:
        held.set_running(None)  # read again when next needed
