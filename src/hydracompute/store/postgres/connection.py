"""Connections to PostgreSQL: a pool, one transaction per thread, savepoints when nested.

A thread's outermost :meth:`Connections.transaction` takes a connection from the pool and
keeps it until the block ends (``BEGIN … COMMIT``, sent by its
:class:`~hydracompute.store.postgres.session.Session` with other statements rather than
alone); nested blocks are savepoints on it, as the
:class:`~hydracompute.store.backend.Backend` contract asks. A statement outside any
transaction runs on a connection of its own, committed at once.

Errors of the driver become :class:`~hydracompute.errors.StoreError` (503 to clients, who
try again); a deadlock or serialization failure becomes :class:`StoreConflict`, which
:class:`~hydracompute.store.pool.Store` retries whole.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg_pool
from psycopg import sql

from hydracompute.errors import StoreError, StoreUnavailable
from hydracompute.store.postgres.session import Session, store_error

__all__ = ["CONNECT_TIMEOUT_S", "Connections", "store_error"]

#: How long opening the store waits for the server (at a coordinator's start).
CONNECT_TIMEOUT_S = 30.0
#: How long a request waits for a pooled connection before it is answered 503.
REQUEST_CONNECT_TIMEOUT_S = 5.0


class Connections:
    """A pool of connections to ``conninfo`` whose statements see ``schema`` first."""

    def __init__(self, conninfo: str, schema: str, min_size: int = 1, max_size: int = 8) -> None:
        self.schema = schema
        search_path = sql.SQL("SET search_path TO {}").format(sql.Identifier(schema))

        def configure(conn: psycopg.Connection[Any]) -> None:
            conn.execute(search_path)

        try:  # at once, for the server's own words (the pool would retry for long)
            psycopg.connect(conninfo, connect_timeout=int(CONNECT_TIMEOUT_S)).close()
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot connect to PostgreSQL at {_where(conninfo)}: {str(exc).strip()}"
            ) from exc
        self._pool = psycopg_pool.ConnectionPool(
            conninfo,
            min_size=min_size,
            max_size=max_size,
            kwargs={"autocommit": True},
            configure=configure,
            # How long a request waits for a connection: while the server is down, requests
            # are answered 503 within this, rather than held.
            timeout=REQUEST_CONNECT_TIMEOUT_S,
            # A connection broken while it sat in the pool (the server restarted) is
            # replaced rather than handed out.
            check=psycopg_pool.ConnectionPool.check_connection,
            open=False,
            name=f"hydracompute-{schema}",
        )
        try:
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
        except psycopg_pool.PoolTimeout as exc:
            self._pool.close()
            raise StoreError(f"cannot connect to PostgreSQL at {_where(conninfo)}") from exc
        self._local = threading.local()

    def close(self) -> None:
        self._pool.close()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection of the pool of its own (not the thread's transaction's)."""
        try:
            with self._pool.connection() as conn:
                yield conn
        except psycopg_pool.PoolTimeout as exc:
            raise StoreUnavailable(f"no connection to PostgreSQL: {exc}", retry_after_s=2) from exc
        except psycopg.Error as exc:
            raise store_error(exc) from exc

    def borrow(self) -> psycopg.Connection[Any]:
        """A connection of the pool held until :meth:`give_back` (a blob reader's)."""
        try:
            return self._pool.getconn()
        except psycopg_pool.PoolTimeout as exc:
            raise StoreUnavailable(f"no connection to PostgreSQL: {exc}", retry_after_s=2) from exc

    def give_back(self, conn: psycopg.Connection[Any]) -> None:
        """Return a borrowed connection, ending whatever transaction it had open."""
        with contextlib.suppress(psycopg.Error):  # a broken one is dropped by the pool
            conn.rollback()
        self._pool.putconn(conn)

    def session(self) -> Session | None:
        """The calling thread's open transaction, if any."""
        return getattr(self._local, "open", None)

    @property
    def in_transaction(self) -> bool:
        return self.session() is not None

    @property
    def locking(self) -> bool:
        """Whether the thread's transaction locks what it reads to write back."""
        found = self.session()
        return found is not None and found.locking

    @contextmanager
    def transaction(self, read_only: bool = False) -> Iterator[None]:
        found = self.session()
        if found is not None:
            found.enter()
            try:
                yield
            except BaseException:
                found.leave(ok=False)
                raise
            found.leave(ok=True)
            return
        with self.connection() as conn:
            session = Session(conn, locking=not read_only)
            self._local.open = session
            try:
                try:
                    yield
                except BaseException:
                    session.rollback()
                    raise
                session.commit()
            finally:
                self._local.open = None

    def execute(self, query: Any, args: Sequence[Any] | None = None) -> psycopg.Cursor[Any]:
        """Run one statement in the thread's transaction (after its unsent writes, in the
        same round trip), or alone, committed at once."""
        found = self.session()
        if found is not None:
            return found.send(query, args)  # type: ignore[no-any-return]
        with self.connection() as conn:
            cursor = conn.execute(query, args)
            # Fetched before the connection goes back to the pool.
            rows = cursor.fetchall() if cursor.description is not None else []
            return _Fetched(cursor, rows)  # type: ignore[return-value]

    def executemany(self, query: Any, rows: Sequence[Sequence[Any]]) -> None:
        """Insert or upsert ``rows``: in a transaction, with its next statement."""
        found = self.session()
        if found is not None:
            found.append(query, rows)
            return
        with self.connection() as conn:
            conn.cursor().executemany(query, rows)


class _Fetched:
    """The rows of a statement run on a connection already given back to the pool."""

    def __init__(self, cursor: psycopg.Cursor[Any], rows: list[Any]) -> None:
        self.description = cursor.description
        self._rows = iter(rows)

    def fetchone(self) -> Any:
        return next(self._rows, None)

    def fetchall(self) -> list[Any]:
        return list(self._rows)

    def __iter__(self) -> Iterator[Any]:
        return self._rows


def _where(conninfo: str) -> str:
    """The server a conninfo names, without its password."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "(an unreadable address)"
    host, port, db = info.get("host", "localhost"), info.get("port", 5432), info.get("dbname")
    return f"{host}:{port}/{db or ''}"
