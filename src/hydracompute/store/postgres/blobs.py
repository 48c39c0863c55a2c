"""Blobs in PostgreSQL: what every coordinator sharing the database reaches.

A blob is a row of ``blobs`` naming a blob id, and its bytes are rows of ``blob_pieces``
of at most :data:`PIECE_BYTES` each (an empty blob is one empty piece, so a blob always has
one). Writing one streams its pieces under a fresh id and then points the name at it, all
in one transaction of its own: nothing is visible before the commit, a failed or killed
writer leaves the old blob (or none), and the old blob's pieces are deleted in the same
commit. A reader streams the pieces through a server-side cursor, one piece per fetch, in
one statement: it sees the blob as it was when opened, even if the name is written again
or deleted meanwhile (PostgreSQL keeps row versions a running statement can see).

Blobs are written on a connection of their own, not in the caller's transaction, as the
:class:`~hydracompute.store.blobs.BlobStore` contract has them ("written at once"). One
written with ``durable=False`` commits without waiting for its WAL to reach the disk
(``synchronous_commit = off``): the commit of the transaction whose row names it waits for
the WAL up to a later point, which includes it. So :meth:`sync` has nothing to do.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO

import psycopg

from hydracompute.errors import StoreError
from hydracompute.store.blobs.base import READ_PIECE_BYTES, BlobStore, check_blob_name
from hydracompute.store.postgres.connection import Connections, store_error

#: Bytes of one row of ``blob_pieces``.
PIECE_BYTES = READ_PIECE_BYTES


class PostgresBlobStore(BlobStore):
    """Blobs in the ``blobs`` and ``blob_pieces`` tables reached through ``connections``."""

    def __init__(self, connections: Connections) -> None:
        self._db = connections

    def put_stream(
        self, job_id: str, name: str, pieces: Iterable[bytes], durable: bool = True
    ) -> int:
        check_blob_name(job_id, name)
        size = 0
        with self._db.connection() as conn:
            try:
                with conn.transaction():
                    if not durable:
                        conn.execute("SET LOCAL synchronous_commit TO off")
                    blob_id = conn.execute("SELECT nextval('blob_ids')").fetchone()[0]  # type: ignore[index]
                    seq = 0
                    with conn.cursor() as cursor:
                        for piece in _pieces_of_at_most(pieces, PIECE_BYTES):
                            cursor.execute(
                                "INSERT INTO blob_pieces VALUES (%s, %s, %s)",
                                (blob_id, seq, piece),
                            )
                            seq += 1
                            size += len(piece)
                        old = cursor.execute(
                            "SELECT blob_id FROM blobs WHERE job_id = %s AND name = %s FOR UPDATE",
                            (job_id, name),
                        ).fetchone()
                        cursor.execute(
                            "INSERT INTO blobs VALUES (%s, %s, %s, %s) ON CONFLICT (job_id, name)"
                            " DO UPDATE SET blob_id = excluded.blob_id, size = excluded.size",
                            (job_id, name, blob_id, size),
                        )
                        if old is not None:
                            cursor.execute("DELETE FROM blob_pieces WHERE blob_id = %s", old)
            except psycopg.Error as exc:
                raise store_error(exc) from exc
        return size

    def open(self, job_id: str, name: str) -> BinaryIO | None:
        check_blob_name(job_id, name)
        conn = self._db.borrow()
        try:
            # A transaction for the cursor's life; read-only, it holds no lock.
            conn.execute("BEGIN READ ONLY")
            cursor = conn.cursor(name="blob_reader")
            cursor.itersize = 1
            cursor.execute(
                "SELECT p.data, b.size FROM blobs b JOIN blob_pieces p ON p.blob_id = b.blob_id "
                "WHERE b.job_id = %s AND b.name = %s ORDER BY p.seq",
                (job_id, name),
            )
            first = cursor.fetchone()
        except BaseException as exc:
            self._db.give_back(conn)
            if isinstance(exc, psycopg.Error):
                raise store_error(exc) from exc
            raise
        if first is None:
            cursor.close()
            self._db.give_back(conn)
            return None
        release = lambda: self._db.give_back(conn)  # noqa: E731
        reader = _BlobReader(bytes(first[0]), int(first[1]), cursor, release)
        return io.BufferedReader(reader, PIECE_BYTES)

    def delete(self, job_id: str, name: str) -> None:
        check_blob_name(job_id, name)
        self._delete("WHERE job_id = %s AND name = %s", (job_id, name))

    def delete_job(self, job_id: str) -> None:
        check_blob_name(job_id, "x")
        self._delete("WHERE job_id = %s", (job_id,))

    def _delete(self, where: str, args: tuple[str, ...]) -> None:
        with self._db.connection() as conn, conn.transaction():
            conn.execute(
                f"DELETE FROM blob_pieces WHERE blob_id IN (SELECT blob_id FROM blobs {where})",
                args,
            )
            conn.execute(f"DELETE FROM blobs {where}", args)

    def names(self, job_id: str) -> list[str]:
        with self._db.connection() as conn:
            rows = conn.execute(
                "SELECT name FROM blobs WHERE job_id = %s ORDER BY name", (job_id,)
            ).fetchall()
        return [str(row[0]) for row in rows]

    def scratch(self) -> BinaryIO:
        # Room to reorder a rendering: local to this coordinator, never shared.
        return tempfile.TemporaryFile(prefix="hydracompute-scratch-")


def _pieces_of_at_most(pieces: Iterable[bytes], size: int) -> Iterator[bytes]:
    """``pieces`` cut or joined into pieces of ``size`` bytes (the last shorter); at least
    one piece, empty if the whole is."""
    pending = bytearray()
    for piece in pieces:
        pending += piece
        while len(pending) >= size:
            yield bytes(pending[:size])
            del pending[:size]
    yield bytes(pending)


class _BlobReader(io.RawIOBase):
    """A blob read piece by piece from a server-side cursor, on a connection it holds
    until closed (then ``release`` gives it back).

    It reads forwards only, but its size can be found as with a file (``seek(0, 2)``,
    then ``seek(0)`` back, before reading past the first piece).
    """

    def __init__(
        self,
        first: bytes,
        size: int,
        cursor: psycopg.ServerCursor[Any],
        release: Callable[[], None],
    ) -> None:
        self._size = size
        #: The first piece, kept while it is the only one fetched (to seek back into it).
        self._first: bytes | None = first
        self._buffer = first
        self._pos = 0
        self._cursor = cursor
        self._release_connection: Callable[[], None] | None = release

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        target = base + offset
        if target == self._pos:
            return target
        if target == self._size:  # nothing left to read
            self._buffer, self._pos = b"", target
        elif self._first is not None and 0 <= target <= len(self._first):
            self._buffer, self._pos = self._first[target:], target
        else:
            raise io.UnsupportedOperation("a blob in PostgreSQL is read forwards only")
        return target

    def readinto(self, into: Any) -> int:
        while not self._buffer:
            if self._release_connection is None or self._pos >= self._size:
                return 0
            try:
                row = self._cursor.fetchone()
            except psycopg.Error as exc:
                self.close()
                raise StoreError(f"reading a blob failed: {exc}") from exc
            if row is None:
                self._release()
                return 0
            self._buffer, self._first = bytes(row[0]), None
        count = min(len(into), len(self._buffer))
        into[:count] = self._buffer[:count]
        self._buffer = self._buffer[count:]
        self._pos += count
        return count

    def _release(self) -> None:
        release, self._release_connection = self._release_connection, None
        if release is not None:
            with contextlib.suppress(psycopg.Error):  # the pool drops a broken connection
                self._cursor.close()
            release()

    def close(self) -> None:
        self._release()
        super().close()
