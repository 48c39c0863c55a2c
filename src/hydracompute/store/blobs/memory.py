"""Blobs in memory: a real implementation for the memory backend and the tests."""

from __future__ import annotations

import io
import tempfile
import threading
from collections.abc import Iterable
from typing import BinaryIO

from hydracompute.store.blobs.base import BlobStore, check_blob_name


class MemoryBlobStore(BlobStore):
    """Blobs in a dict, lost at exit; scratch files are temporary files on disk (they hold
    what should not be in memory)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._blobs: dict[tuple[str, str], bytes] = {}

    def put_stream(
        self, job_id: str, name: str, pieces: Iterable[bytes], durable: bool = True
    ) -> int:
        check_blob_name(job_id, name)
        data = b"".join(pieces)  # all or nothing: an exception here stores nothing
        with self._lock:
            self._blobs[job_id, name] = data
        return len(data)

    def open(self, job_id: str, name: str) -> BinaryIO | None:
        check_blob_name(job_id, name)
        with self._lock:
            data = self._blobs.get((job_id, name))
        return None if data is None else io.BytesIO(data)

    def delete(self, job_id: str, name: str) -> None:
        check_blob_name(job_id, name)
        with self._lock:
            self._blobs.pop((job_id, name), None)

    def delete_job(self, job_id: str) -> None:
        check_blob_name(job_id, "x")
        with self._lock:
            for key in [k for k in self._blobs if k[0] == job_id]:
                del self._blobs[key]

    def scratch(self) -> BinaryIO:
        return tempfile.TemporaryFile()

    def names(self, job_id: str) -> list[str]:
        with self._lock:
            return sorted(name for job, name in self._blobs if job == job_id)
