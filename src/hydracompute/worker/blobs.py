"""The worker's cache of content-addressed files (WebAssembly modules, job inputs).

A file is fetched from the coordinator once, by its SHA-256, and kept as
``<folder>/<sha256>``: every later chunk of any job naming the same hash uses it. A file is
named by its hash only once its bytes hash to it; a download cut off part-way is kept as
``<sha256>.part`` and resumed where it stopped (an HTTP ``Range`` request), so that a large
input survives a flaky link. A file whose bytes do not hash to what the job names is
deleted and never used: a worker never runs a module other than the one submitted.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
from pathlib import Path

import httpx

from hydracompute.errors import HydraError, error_from_problem
from hydracompute.worker.link import CoordinatorLink, backoff_s

log = logging.getLogger("hydracompute.worker")

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
#: The largest file a worker fetches, whatever the coordinator offers.
MAX_BLOB_BYTES = 4 << 30
#: Attempts at one file (each resumes where the last stopped).
FETCH_ATTEMPTS = 5
PIECE_BYTES = 1 << 20


class BlobError(HydraError):
    """A file could not be fetched, or its bytes are not the ones named."""


class BlobCache:
    """Files by SHA-256 under ``folder``, fetched through a worker's link when missing."""

    def __init__(self, folder: Path, max_bytes: int = MAX_BLOB_BYTES) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self._locks: dict[str, asyncio.Lock] = {}
        #: Files fetched (not found in the cache) this run, and downloads that resumed a
        #: partial file rather than start over.
        self.fetched = 0
        self.resumed = 0
        folder.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        if not _SHA256.match(digest):
            raise BlobError(f"not a SHA-256: {digest!r}")
        return self.folder / digest

    async def ensure(self, link: CoordinatorLink, digest: str) -> Path:
        """The local file of ``digest``, fetched (or resumed) first if needed.

        Raises:
            BlobError: the coordinator does not have it, it is too large, or the bytes
                received do not hash to ``digest`` (twice: the partial file is dropped and
                fetched whole once more before giving up).
        """
        path = self.path(digest)
        lock = self._locks.setdefault(digest, asyncio.Lock())
        async with lock:  # several chunks of one job ask at once: fetch once
            if path.exists():
                return path
            for attempt in range(2):
                part = await self._download(link, digest)
                actual = await asyncio.to_thread(_sha256_file, part)
                if actual == digest:
                    os.replace(part, path)
                    self.fetched += 1
                    return path
                part.unlink(missing_ok=True)
                log.warning(
                    "the bytes fetched for %s hash to %s (attempt %d); dropped",
                    digest,
                    actual,
                    attempt + 1,
                )
            raise BlobError(f"the coordinator's bytes for {digest} do not have that SHA-256")

    async def _download(self, link: CoordinatorLink, digest: str) -> Path:
        part = self.folder / f"{digest}.part"
        url = f"/api/v1/workers/{link.worker_id}/blobs/{digest}"
        for attempt in range(1, FETCH_ATTEMPTS + 1):
            have = part.stat().st_size if part.exists() else 0
            headers = {"Authorization": f"Bearer {link.secret}"}
            if have:
                headers["Range"] = f"bytes={have}-"
            try:
                async with link.http.stream("GET", url, headers=headers) as response:
                    if response.status_code == 416:  # already whole
                        return part
                    if response.status_code >= 400:
                        await response.aread()
                        raise BlobError(str(_problem(response)))
                    resumed = response.status_code == 206
                    self.resumed += resumed
                    total = _total_size(response, have if resumed else 0)
                    if total > self.max_bytes:
                        raise BlobError(
                            f"{digest} is {total} bytes, over this worker's limit of "
                            f"{self.max_bytes}"
                        )
                    with part.open("ab" if resumed else "wb") as out:
                        size = have if resumed else 0
                        async for piece in response.aiter_bytes(PIECE_BYTES):
                            size += len(piece)
                            if size > self.max_bytes:
                                out.close()
                                part.unlink()
                                raise BlobError(f"{digest} is over {self.max_bytes} bytes")
                            out.write(piece)
                    return part
            except httpx.TransportError as exc:
                if attempt == FETCH_ATTEMPTS:
                    raise BlobError(f"could not fetch {digest}: {exc}") from exc
                delay = backoff_s(attempt)
                log.warning("fetching %s was cut off (%s); resuming in %.1f s", digest, exc, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")


def _total_size(response: httpx.Response, offset: int) -> int:
    length = response.headers.get("content-length")
    return offset + int(length) if length and length.isdigit() else 0


def _problem(response: httpx.Response) -> HydraError:
    try:
        problem = response.json()
    except ValueError:
        problem = {"detail": response.text[:200]}
    return error_from_problem(response.status_code, problem)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while piece := file.read(PIECE_BYTES):
            digest.update(piece)
    return digest.hexdigest()
