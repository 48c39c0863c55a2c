"""Where a backend keeps a payload: small ones in its own rows, large ones in its blob store.

The rules are here once, for every backend: a chunk output whose JSON is longer than
:data:`INLINE_OUTPUT_MAX_BYTES` is written to the blob store (a Mandelbrot chunk's counts,
up to megabytes) and its row records the blob's name; smaller ones (π's counts) stay in the
row. Artefacts always go to the blob store. This keeps large payloads out of the database
(SQLite refuses a value over 1 GB, and every byte in it is copied through its pages) and
lets them be streamed.

A blob is written before the row that names it, inside the row's transaction, and is on
the disk before that transaction commits (output blobs are written with ``durable=False``
and synced together just before the commit): a rolled-back transaction or a crash can leave
a blob no row names, never a row naming a missing or half blob. Output blobs get a fresh
name on every write, so such a leftover can never replace a committed output's blob.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets

from hydracompute.core.models import JSON
from hydracompute.errors import StoreError
from hydracompute.store.blobs import BlobStore
from hydracompute.store.sqlite_rows import json_column

#: Longest output JSON (in characters) kept in the database row.
INLINE_OUTPUT_MAX_BYTES = 16 * 1024
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,100}")


def spill_output(
    blobs: BlobStore, job_id: str, chunk_index: int, output: JSON
) -> tuple[str, str | None]:
    """``(text for the row, blob name or None)`` of a chunk output: the JSON text itself
    when it is small, else ``""`` and the name of the blob it was written to."""
    text = json_column(output)
    if len(text) <= INLINE_OUTPUT_MAX_BYTES:
        return text, None
    name = f"outputs/{chunk_index}-{secrets.token_hex(8)}.json"
    # Synced with the others of its transaction, just before the commit (Backend.transaction).
    blobs.put(job_id, name, text.encode(), durable=False)
    return "", name


def load_output(blobs: BlobStore, job_id: str, text: str, blob: str | None) -> JSON:
    """The output a row holds, from the row or from the blob it names.

    Raises:
        StoreError: the blob it names is missing (the blob folder was lost).
    """
    if blob is None:
        return json.loads(text)  # type: ignore[no-any-return]
    data = blobs.get(job_id, blob)
    if data is None:
        raise StoreError(f"the output blob {job_id}/{blob} is missing from the blob store")
    return json.loads(data)  # type: ignore[no-any-return]


def artefact_blob_name(name: str) -> str:
    """The blob name of a job's artefact ``name`` (any text: a name that is not a plain
    file name is replaced by its digest)."""
    if _PLAIN_NAME.fullmatch(name):
        return f"artefacts/{name}"
    return f"artefacts/{hashlib.sha256(name.encode()).hexdigest()[:40]}"
