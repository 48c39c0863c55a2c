"""A thread's open transaction on PostgreSQL: its connection, the rows it holds locked, and
its writes not sent yet.

What a batch of exchanges waited on was round trips, not the server's work: 13.5
statements per accepted result, each a round trip while both processes sat mostly idle.
So a transaction here:

- sends ``BEGIN`` with its first statement, not alone;
- keeps the rows it read ``FOR UPDATE`` or wrote (:class:`~hydracompute.store.postgres.
  rows.Held`): a row locked by the
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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from hydracompute.errors import StoreConflict, StoreError, StoreUnavailable
from hydracompute.store.postgres.rows import Held, Key


def store_error(exc: psycopg.Error) -> StoreError:
    """The store's error for a driver error: a conflict the store retries, the server out
    of reach (the request changed nothing and may be sent again later: 503), or another."""
    if isinstance(exc, psycopg.errors.SerializationFailure | psycopg.errors.DeadlockDetected):
        return StoreConflict(f"PostgreSQL: {exc}".strip())
    # A lost connection, a server shutting down or starting up (OperationalError covers
    # AdminShutdown and CannotConnectNow); a transaction cut off mid-way was rolled back.
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return StoreUnavailable(f"PostgreSQL is unavailable: {exc}".strip(), retry_after_s=2)
    return StoreError(f"PostgreSQL error: {exc}".strip())


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
