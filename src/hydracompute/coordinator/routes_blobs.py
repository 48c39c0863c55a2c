"""Routes for content-addressed blobs: submitters upload WebAssembly modules and inputs by
their SHA-256; workers fetch the ones their chunks need, resumably (HTTP ``Range``).

An upload's body is streamed, not held in memory, under its own limit
(``--max-blob-mb``); it is refused unless its bytes hash to the name it is sent under,
and nothing is stored then (:mod:`hydracompute.store.content`).
"""

from __future__ import annotations

import asyncio
import re
import tempfile
from collections.abc import Iterator
from typing import Annotated, BinaryIO

from fastapi import APIRouter, Header, Path, Request, Response, status
from fastapi.responses import StreamingResponse

from hydracompute.coordinator.auth import (
    CoordinatorDep,
    SecurityDep,
    Submitter,
    require_code_role,
)
from hydracompute.coordinator.routes_workers import Authorization, authenticate, client_host
from hydracompute.coordinator.schemas import BlobStored
from hydracompute.errors import Forbidden, HydraError, InvalidRequest, NotFound
from hydracompute.store.blobs.base import READ_PIECE_BYTES
from hydracompute.store.content import (
    ContentTooLarge,
    content_exists,
    open_content,
    put_content,
    size_of,
)

router = APIRouter(prefix="/api/v1", tags=["blobs"])
Digest = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$", description="SHA-256, lower-case hex.")]
#: Bytes of an upload kept in memory before it spills to a temporary file.
SPOOL_BYTES = 4 << 20
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


class RangeNotSatisfiable(HydraError):
    status = 416
    title = "Range not satisfiable"


@router.head("/blobs/{digest}", status_code=status.HTTP_200_OK)
async def blob_exists(digest: Digest, c: CoordinatorDep, _: Submitter) -> Response:
    """200 if the pool holds the blob (no need to upload it again), else 404."""
    if not await asyncio.to_thread(content_exists, c.store.blobs, digest):
        raise NotFound(f"no blob {digest}")
    return Response(status_code=status.HTTP_200_OK)


@router.put(
    "/blobs/{digest}",
    status_code=status.HTTP_201_CREATED,
    response_model=BlobStored,
    openapi_extra={"requestBody": {"content": {"application/octet-stream": {}}, "required": True}},
)
async def upload_blob(
    digest: Digest,
    request: Request,
    c: CoordinatorDep,
    settings: SecurityDep,
    principal: Submitter,
) -> BlobStored:
    """Upload a module or an input under its SHA-256 (the body is the raw bytes). Needs
    the role that may submit code; 422 if the bytes do not hash to ``digest``, 413 over
    the pool's limit. Uploading bytes the pool already holds changes nothing."""
    require_code_role(principal, settings)
    limit: int = request.app.state.max_blob_bytes
    announced = request.headers.get("content-length", "")
    if announced.isdigit() and int(announced) > limit:
        raise ContentTooLarge(f"a blob is limited to {limit} bytes")
    with tempfile.SpooledTemporaryFile(SPOOL_BYTES) as spool:
        size = 0
        async for piece in request.stream():
            size += len(piece)
            if size > limit:
                raise ContentTooLarge(f"a blob is limited to {limit} bytes")
            spool.write(piece)
        spool.seek(0)
        stored = await asyncio.to_thread(
            put_content,
            c.store.blobs,
            digest,
            _pieces(spool),  # type: ignore[arg-type]
            limit,
        )
    return BlobStored(sha256=digest, size=stored)


def _pieces(file: BinaryIO, length: int | None = None) -> Iterator[bytes]:
    left = length
    while left is None or left > 0:
        piece = file.read(READ_PIECE_BYTES if left is None else min(left, READ_PIECE_BYTES))
        if not piece:
            return
        if left is not None:
            left -= len(piece)
        yield piece


@router.get(
    "/workers/{worker_id}/blobs/{digest}",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}, 206: {}, 416: {}},
    tags=["workers"],
)
async def fetch_blob(
    worker_id: str,
    digest: Digest,
    request: Request,
    c: CoordinatorDep,
    settings: SecurityDep,
    authorization: Authorization = None,
    range_: Annotated[str | None, Header(alias="range", max_length=100)] = None,
) -> Response:
    """A blob a chunk of the worker's needs (its module, its input); a worker may fetch
    only what a job it holds a lease of names (403 otherwise). ``Range: bytes=N-`` (or
    ``bytes=N-M``) resumes a cut-off download (206)."""
    await authenticate(c, settings, worker_id, authorization, client_host(request.scope))
    if not await c.call(c.store.may_fetch, worker_id, digest):
        raise Forbidden(f"worker {worker_id} holds no lease of a job that names {digest}")
    file = await asyncio.to_thread(open_content, c.store.blobs, digest)
    if file is None:
        raise NotFound(f"no blob {digest}")
    try:
        size = size_of(file)
        first, last = 0, size - 1
        if range_ is not None:
            match = _RANGE.match(range_.strip())
            if match is None:
                raise InvalidRequest("only a single 'bytes=N-' or 'bytes=N-M' range is served")
            first = int(match.group(1))
            last = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
            if first >= size or last < first:
                raise RangeNotSatisfiable(
                    f"the blob has {size} bytes", content_range=f"bytes */{size}"
                )
            file.seek(first)
    except BaseException:
        file.close()
        raise
    length = last - first + 1
    headers = {"Content-Length": str(length), "Accept-Ranges": "bytes"}
    if range_ is not None:
        headers["Content-Range"] = f"bytes {first}-{last}/{size}"

    def body() -> Iterator[bytes]:
        with file:
            yield from _pieces(file, length)

    return StreamingResponse(
        body(),
        status_code=status.HTTP_206_PARTIAL_CONTENT if range_ is not None else 200,
        media_type="application/octet-stream",
        headers=headers,
    )
