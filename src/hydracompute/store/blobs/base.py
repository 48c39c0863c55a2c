"""The blob store's interface: whole blobs keyed by job and name, written at once or
streamed, read at once or streamed.

Contract shared by every implementation (tests/test_blob_contract.py):

- A blob is visible only once it is whole: a writer that fails or is killed half-way
  leaves no blob (or the previous one) under its name, never a half.
- Writing a name again replaces its blob as a whole; readers that opened the old one keep
  reading the old one.
- A blob is durable once :meth:`BlobStore.put` or :meth:`BlobStore.put_stream` returns, so a
  database row that refers to it may be committed after. One written with
  ``durable=False`` is whole for every reader at once, but survives a crash of the machine
  only after the next :meth:`BlobStore.sync`: a backend writes a transaction's blobs so and
  syncs them all together just before its commit (one flush to the disk for all of them,
  where one each cost milliseconds apiece on the store thread).
- Names are relative paths of ``[A-Za-z0-9._-]`` segments separated by ``/``; job ids too
  are one such segment.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from hydracompute.errors import StoreError

#: Bytes read at a time when a blob is streamed out.
READ_PIECE_BYTES = 1 << 20
_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")


def check_blob_name(job_id: str, name: str) -> None:
    """Raise :class:`StoreError` unless ``job_id`` and ``name`` make a valid key (no empty,
    ``.``-led or ``..`` segments: a name can never leave its job's folder)."""
    if not _SEGMENT.fullmatch(job_id):
        raise StoreError(f"invalid blob job id {job_id!r}")
    if not name or not all(_SEGMENT.fullmatch(part) for part in name.split("/")):
        raise StoreError(f"invalid blob name {name!r}")


class BlobStore(abc.ABC):
    """Whole binary blobs keyed by ``(job_id, name)``.

    Implementations write :meth:`put_stream`, :meth:`open`, :meth:`delete`,
    :meth:`delete_job`, :meth:`names` and :meth:`scratch`; the rest is built on them here.
    """

    @abc.abstractmethod
    def put_stream(
        self, job_id: str, name: str, pieces: Iterable[bytes], durable: bool = True
    ) -> int:
        """Store the concatenation of ``pieces`` under ``(job_id, name)``, replacing any
        blob there, and return its size in bytes. Nothing is visible under the name until
        every piece is written (and, if ``durable``, on the disk); if ``pieces`` raises,
        the old blob (or none) stays and the exception propagates. With ``durable=False``
        the blob is on the disk only after the next :meth:`sync`.

        Raises:
            StoreError: the name is invalid or the blob cannot be written.
        """

    def sync(self) -> None:  # noqa: B027 - nothing to do where nothing is deferred
        """Put every blob written with ``durable=False`` since the last call on the disk.

        Raises:
            StoreError: one could not be.
        """

    @abc.abstractmethod
    def open(self, job_id: str, name: str) -> BinaryIO | None:
        """The blob for reading from its start (the caller closes it), or ``None``."""

    @abc.abstractmethod
    def delete(self, job_id: str, name: str) -> None:
        """Forget one blob (nothing if there is none)."""

    @abc.abstractmethod
    def delete_job(self, job_id: str) -> None:
        """Forget every blob of a job."""

    @abc.abstractmethod
    def names(self, job_id: str) -> list[str]:
        """The names of a job's blobs, sorted."""

    @abc.abstractmethod
    def scratch(self) -> BinaryIO:
        """A new empty temporary file for reading and writing anywhere, gone once closed:
        room for a renderer to reorder data larger than memory should hold."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and files."""

    def put(self, job_id: str, name: str, data: bytes, durable: bool = True) -> None:
        """Store ``data`` under ``(job_id, name)`` (see :meth:`put_stream`)."""
        self.put_stream(job_id, name, (data,), durable)

    def get(self, job_id: str, name: str) -> bytes | None:
        """The whole blob, or ``None``: for small blobs; stream large ones with
        :meth:`read_pieces`."""
        blob = self.open(job_id, name)
        if blob is None:
            return None
        with blob:
            return blob.read()

    def read_pieces(self, job_id: str, name: str) -> Iterator[bytes] | None:
        """The blob in pieces of at most :data:`READ_PIECE_BYTES`, or ``None``."""
        blob = self.open(job_id, name)
        return None if blob is None else iter_file(blob)


def iter_file(file: BinaryIO, piece_bytes: int = READ_PIECE_BYTES) -> Iterator[bytes]:
    """``file`` from where it stands to its end in pieces; closes it at the end (or when
    the iterator is closed or collected)."""
    with file:
        while piece := file.read(piece_bytes):
            yield piece
