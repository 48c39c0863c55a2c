"""A thread's open transaction on PostgreSQL: its connection, the rows it holds locked, and
its writes not sent yet.

What a batch of exchanges waited on was round trips, not the server's work: 13.5
statements per accepted result, each a round trip while both processes sat mostly idle.
So a transaction here:

- sends ``BEGIN`` with its first statement, not alone;
- keeps the rows it read ``FOR UPDATE`` or wrote (:class:`Held`): a row locked by the
  transaction cannot change under it, so reading it again needs no round trip;
- keeps its writes (the last row per key; appended rows in order) and sends them in one
  pipeline with the next statement that reads the database, or with ``COMMIT``: a read
  always sees every write of the transaction before it;
- opens a nested block's ``SAVEPOINT`` only when something is sent inside it, in the
  same pipeline. A nested block that sent nothing is undone by putting back what the
  transaction held when it began; one that did is also rolled back on the server.

A failed statement fails the transaction (PostgreSQL's rule): every later statement is
refused at once, and the outermost block raises, unless a nested block whose savepoint
was sent before the failure rolls it back.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from hydracompute.core.fairshare import RunningJob, Usage
from hydracompute.errors import StoreConflict, StoreError

Key = tuple[Any, ...]


def store_error(exc: psycopg.Error) -> StoreError:
    """The store's error for a driver error (a conflict the caller may retry, or not)."""
    if isinstance(exc, psycopg.errors.SerializationFailure | psycopg.errors.DeadlockDetected):
        return StoreConflict(f"PostgreSQL: {exc}".strip())
    return StoreError(f"PostgreSQL error: {exc}".strip())


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


@dataclass
class _Block:
    """A nested block: its savepoint once sent."""

    savepoint: int | None = None


class Session:
    """The open transaction of one thread on ``conn`` (an autocommit connection: this
    sends ``BEGIN`` and ``COMMIT`` itself). ``locking``: a write transaction (rows read to
    be written back are locked, and held); otherwise ``READ ONLY``."""

    def __init__(self, conn: psycopg.Connection[Any], locking: bool) -> None:
        self.conn, self.locking = conn, locking
        self.held = Held()
        self._blocks: list[_Block] = []
        self._began = False
        #: Why the transaction failed (every later statement is refused), if it did.
        self._failed: StoreError | None = None
        #: Savepoints of blocks that ended well, released with the next statements sent.
        self._to_release: list[int] = []
        self._numbers = itertools.count()

    # statements

    def send(self, query: Any = None, args: Sequence[Any] | None = None) -> Any:
        """Send what is unsent (``BEGIN``, savepoints, writes), then ``query`` if given, in
        one round trip; returns ``query``'s cursor."""
        cursors = self.send_many([] if query is None else [(query, args)])
        return cursors[0] if cursors else None

    def send_many(self, queries: Sequence[tuple[Any, Sequence[Any] | None]]) -> list[Any]:
        """Send what is unsent, then ``queries`` in order, in one round trip; returns their
        cursors."""
        if self._failed is not None:
            raise StoreError(f"the transaction failed earlier ({self._failed.detail})")
        statements: list[str] = []
        if not self._began:
            statements.append("BEGIN" if self.locking else "BEGIN READ ONLY")
        statements += [f"RELEASE SAVEPOINT s{number}" for number in self._to_release]
        writes = self._writes()
        if writes:
            for block in self._blocks:
                if block.savepoint is None:
                    block.savepoint = next(self._numbers)
                    statements.append(f"SAVEPOINT s{block.savepoint}")
        try:
            if not statements and not writes and len(queries) == 1:
                return [self.conn.execute(*queries[0])]
            cursors = []
            with self.conn.pipeline():
                for statement in statements:
                    self.conn.execute(statement)
                for statement, rows in writes.items():
                    self.conn.cursor().executemany(statement, rows)
                for query, args in queries:
                    cursors.append(self.conn.execute(query, args))
        except psycopg.Error as exc:
            self._failed = store_error(exc)
            raise self._failed from exc
        finally:
            self._began = True
            self._to_release.clear()
            self.held.sent()
        return cursors

    def _writes(self) -> dict[str, list[Sequence[Any]]]:
        """The unsent writes grouped by statement (one ``executemany`` each; the tables
        have no references between them, so their order does not matter)."""
        grouped: dict[str, list[Sequence[Any]]] = {}
        for (statement, _), row in self.held.unsent.items():
            grouped.setdefault(statement, []).append(row)
        for statement, row in self.held.appended:
            grouped.setdefault(statement, []).append(row)
        return grouped

    def write(self, statement: str, key: Key, row: Sequence[Any]) -> None:
        """Write ``row`` (an upsert by ``key``) when the next statement is sent."""
        self.held.write(statement, key, row)

    def append(self, statement: str, rows: Sequence[Sequence[Any]]) -> None:
        """Insert ``rows`` when the next statement is sent."""
        self.held.append(statement, rows)

    # blocks

    def enter(self) -> None:
        """Begin a nested block (a savepoint, sent only if something is sent inside)."""
        self._blocks.append(_Block())
        self.held.enter()

    def leave(self, ok: bool) -> None:
        """End the innermost nested block: kept if ``ok``, else undone.

        Raises:
            StoreError: the block ended well but a statement inside it failed (and was
                swallowed): the transaction cannot go on.
        """
        block = self._blocks.pop()
        self.held.leave(ok and self._failed is None)
        if block.savepoint is None:
            if ok and self._failed is not None:
                raise StoreError(f"the transaction failed ({self._failed.detail})")
            return
        if ok and self._failed is None:
            self._to_release.append(block.savepoint)
            return
        # Rolled back on the server: the later savepoints go with it.
        self._to_release = [n for n in self._to_release if n < block.savepoint]
        name = f"s{block.savepoint}"
        try:
            self.conn.execute(f"ROLLBACK TO SAVEPOINT {name}; RELEASE SAVEPOINT {name}")
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL error: {exc}".strip()) from exc
        failed, self._failed = self._failed, None
        if ok and failed is not None:
            raise StoreError(f"the transaction failed ({failed.detail})")

    def commit(self) -> None:
        """Send what is unsent and commit (one round trip); nothing if nothing was sent."""
        if self._failed is not None:
            self.rollback()
            raise StoreError(f"the transaction failed ({self._failed.detail})")
        if not self._began and not self.held.unsent and not self.held.appended:
            return
        self._to_release.clear()  # COMMIT releases them
        try:
            self.send("COMMIT")
        except StoreError:
            self.rollback()
            raise

    def rollback(self) -> None:
        if self._began:
            # A broken connection is dropped by the pool.
            with contextlib.suppress(psycopg.Error):
                self.conn.execute("ROLLBACK")
        self._began = False
