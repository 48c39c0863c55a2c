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
import time
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from hydracompute.errors import StoreError
from hydracompute.store.blobs.base import BlobStore, check_blob_name

#: Temporary files older than this are a killed writer's leftovers (another coordinator
#: sharing the folder may be writing younger ones).
STALE_TEMP_S = 3600.0


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
        self._remove_stale_temporaries(time.time())

    def _remove_stale_temporaries(self, now: float) -> None:
        for leftover in self._tmp.iterdir():
            with contextlib.suppress(OSError):  # another coordinator may remove it too
                if leftover.stat().st_mtime < now - STALE_TEMP_S:
                    leftover.unlink()

    def _path(self, job_id: str, name: str) -> Path:
        check_blob_name(job_id, name)
        return self._jobs / job_id / name

    def put_stream(self, job_id: str, name: str, pieces: Iterable[bytes]) -> int:
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
                os.fsync(out.fileno())
            created = _make_folders(path.parent, self._jobs)
            os.replace(temp, path)
            _sync_folder(path.parent)
            for folder in created:  # their entries in their parents, outermost last
                _sync_folder(folder.parent)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise StoreError(f"cannot write blob {job_id}/{name}: {exc}") from exc
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return size

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


def _sync_folder(folder: Path) -> None:
    """Make the entries of ``folder`` durable (a rename is durable once its folder is)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
