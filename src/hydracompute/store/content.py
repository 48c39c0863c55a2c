"""Content-addressed blobs: files named by their SHA-256 (WebAssembly modules, job inputs).

They live in the pool's blob store, under the key ``("sha256", <hex digest>)`` beside the
jobs' own blobs (job ids are hexadecimal, so never ``sha256``); any
:class:`~hydracompute.store.blobs.BlobStore` holds them, a database shared by several
coordinators included. A blob is stored only if its bytes hash to its name, and whole or
not at all (the blob store's contract), so a name always means the same bytes: uploading it
again changes nothing, and a job naming a hash names exactly the bytes its submitter sent.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from hydracompute.errors import HydraError, InvalidRequest
from hydracompute.store.blobs import BlobStore

NAMESPACE = "sha256"
#: The largest blob a submitter may upload, unless the coordinator is told otherwise.
DEFAULT_MAX_BLOB_BYTES = 256 << 20
SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ContentMismatch(InvalidRequest):
    """The bytes sent do not hash to the name they were sent under."""


class ContentTooLarge(HydraError):
    status = 413
    title = "Content too large"


def check_digest(digest: str) -> None:
    if not SHA256.match(digest):
        raise InvalidRequest(f"{digest!r} is not a SHA-256 in 64 lower-case hex digits")


def put_content(blobs: BlobStore, digest: str, pieces: Iterable[bytes], max_bytes: int) -> int:
    """Store the concatenation of ``pieces`` as blob ``digest``; its size.

    Raises:
        ContentMismatch: the bytes do not hash to ``digest`` (nothing is stored).
        ContentTooLarge: more than ``max_bytes`` (nothing is stored).
    """
    check_digest(digest)

    def checked() -> Iterator[bytes]:
        hasher, size = hashlib.sha256(), 0
        for piece in pieces:
            size += len(piece)
            if size > max_bytes:
                raise ContentTooLarge(f"a blob is limited to {max_bytes} bytes")
            hasher.update(piece)
            yield piece
        if hasher.hexdigest() != digest:
            raise ContentMismatch(f"the bytes sent have SHA-256 {hasher.hexdigest()}, not {digest}")

    return blobs.put_stream(NAMESPACE, digest, checked())


def open_content(blobs: BlobStore, digest: str) -> BinaryIO | None:
    """The blob ``digest`` for reading from its start (the caller closes it), or ``None``."""
    check_digest(digest)
    return blobs.open(NAMESPACE, digest)


def content_exists(blobs: BlobStore, digest: str) -> bool:
    file = open_content(blobs, digest)
    if file is None:
        return False
    file.close()
    return True


def size_of(file: BinaryIO) -> int:
    """The size of an open blob, leaving it at its start."""
    if file.seekable():
        size = file.seek(0, 2)
        file.seek(0)
        return size
    raise HydraError("the blob store gave a blob that cannot be sized without reading it")
