"""Blobs as files in a folder (by default beside the SQLite file: ``NAME.db-blobs/``).

Layout: ``jobs/<job id>/<name>`` for blobs, ``tmp/`` for blobs being written and scratch
files. A blob is written to a temporary file, flushed to the disk (``fsync``) and then
renamed over its name (atomic on POSIX), and its folder is synced: a coordinator killed at
any moment leaves either the whole blob or none, never a half one taken for whole. The
temporary files such a kill leaves behind are removed when a store opens the folder later.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

from hydracompute.errors import StoreError
from hydracompute.store.blobs.base import BlobStore, check_blob_name

#: Temporary files older than this are a killed writer's leftovers (another coordinator
#: sharing the folder may be writing younger ones).
STALE_TEMP_S = 3600.0
#: Threads that sync a transaction's blobs at once.
SYNC_THREADS = 8


class FolderBlobStore(BlobStore):
    """Blobs as files under ``root`` (created if missing)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._jobs = self.root / "jobs"
        self._tmp = self.root / "tmp"
        try:
            self._jobs.mkdir(parents=True, exist_ok=True)
            self._tmp.mkdir(exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the blob folder {self.root}: {exc}") from exc
        self._lock = threading.Lock()
        #: Written with durable=False and not yet synced.
        self._unsynced_files: set[Path] = set()
        self._unsynced_folders: set[Path] = set()
        self._syncers: ThreadPoolExecutor | None = None
        self._remove_stale_temporaries(time.time())

    def _remove_stale_temporaries(self, now: float) -> None:
        for leftover in self._tmp.iterdir():
            with contextlib.suppress(OSError):  # another coordinator may remove it too
                if leftover.stat().st_mtime < now - STALE_TEMP_S:
                    leftover.unlink()

    def _path(self, job_id: str, name: str) -> Path:
        check_blob_name(job_id, name)
        return self._jobs / job_id / name

    def put_stream(
        self, job_id: str, name: str, pieces: Iterable[bytes], durable: bool = True
    ) -> int:
        path = self._path(job_id, name)
        size = 0
        try:
            fd, temp_name = tempfile.mkstemp(dir=self._tmp, prefix="put-")
        except OSError as exc:
            raise StoreError(f"cannot write blob {job_id}/{name}: {exc}") from exc
        temp = Path(temp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                for piece in pieces:
                    out.write(piece)
                    size += len(piece)
                out.flush()
                if durable:
                    os.fsync(out.fileno())
            created = _make_folders(path.parent, self._jobs)
            # Renamed whole, so a killed process leaves no half blob under the name. Not yet
            # synced (durable=False), a machine crash may: the blob is not named by any
            # committed row until sync() has run.
            os.replace(temp, path)
            folders = [path.parent, *(folder.parent for folder in created)]
            if durable:
                for folder in folders:  # their entries in their parents, outermost last
                    _sync_folder(folder)
            else:
                with self._lock:
                    self._unsynced_files.add(path)
                    self._unsynced_folders.update(folders)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise StoreError(f"cannot write blob {job_id}/{name}: {exc}") from exc
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return size

    def sync(self) -> None:
        with self._lock:
            files, self._unsynced_files = self._unsynced_files, set()
            folders, self._unsynced_folders = self._unsynced_folders, set()
        if not files:
            return
        if self._syncers is None:
            self._syncers = ThreadPoolExecutor(SYNC_THREADS, thread_name_prefix="hydra-blob-sync")
        try:
            # Together: the file system flushes concurrent fsyncs in one journal commit.
            list(self._syncers.map(_sync_file, files))
            list(self._syncers.map(_sync_folder, folders))
        except OSError as exc:
            raise StoreError(f"cannot put blobs on the disk: {exc}") from exc

    def close(self) -> None:
        if self._syncers is not None:
            self._syncers.shutdown()
            self._syncers = None

    def open(self, job_id: str, name: str) -> BinaryIO | None:
        path = self._path(job_id, name)
        try:
            return path.open("rb")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read blob {job_id}/{name}: {exc}") from exc

    def delete(self, job_id: str, name: str) -> None:
        self._path(job_id, name).unlink(missing_ok=True)

    def delete_job(self, job_id: str) -> None:
        folder = self._path(job_id, "x").parent
        shutil.rmtree(folder, ignore_errors=True)

    def names(self, job_id: str) -> list[str]:
        folder = self._path(job_id, "x").parent
        if not folder.is_dir():
            return []
        return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())

    def scratch(self) -> BinaryIO:
        # Unnamed where the OS allows (O_TMPFILE): nothing to clean up after a kill.
        return tempfile.TemporaryFile(dir=self._tmp, prefix="scratch-")


def _make_folders(folder: Path, top: Path) -> list[Path]:
    """Create ``folder`` and its missing parents below ``top``; the ones created,
    innermost first."""
    missing: list[Path] = []
    while folder != top and not folder.is_dir():
        missing.append(folder)
        folder = folder.parent
    for created in reversed(missing):
        created.mkdir(exist_ok=True)
    return missing


def _sync_file(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:  # replaced or deleted since: nothing of it to keep
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_folder(folder: Path) -> None:
    """Make the entries of ``folder`` durable (a rename is durable once its folder is)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
