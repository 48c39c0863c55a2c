"""A finished job's artefacts as the coordinator serves them: rendered once into the blob
store, piece by piece, then streamed out of it.

Nothing here holds a whole artefact or a whole job's outputs in memory: the outputs are
read from the store a few at a time as the kind's renderer asks for them, its pieces go
straight into a blob, and a download reads the blob a piece at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from hydracompute.core.models import Job
from hydracompute.kinds import ChunkOutput, JobKind
from hydracompute.store.blobs import BlobStore
from hydracompute.store.blobs.base import iter_file
from hydracompute.store.payloads import artefact_blob_name

#: Outputs read from the store per call while rendering: a Mandelbrot output is up to
#: ~20 MB of base64 text, so a few at a time keeps the renderer's memory small.
OUTPUTS_PER_READ = 4

#: Reads the stored outputs of some chunks of a job, in the order of the indices given.
ReadOutputs = Callable[[Sequence[int]], list[ChunkOutput]]


@dataclass
class OpenArtefact:
    """A stored artefact open for reading; :meth:`pieces` closes the file at its end."""

    media_type: str
    file: BinaryIO
    size_bytes: int

    @classmethod
    def of(cls, media_type: str, file: BinaryIO) -> OpenArtefact:
        size_bytes = file.seek(0, 2)
        file.seek(0)
        return cls(media_type, file, size_bytes)

    def pieces(self) -> Iterator[bytes]:
        return iter_file(self.file)


def outputs_in_batches(indices: Sequence[int], read: ReadOutputs) -> Iterator[ChunkOutput]:
    """The outputs of the chunks ``indices``, read :data:`OUTPUTS_PER_READ` at a time."""
    for first in range(0, len(indices), OUTPUTS_PER_READ):
        yield from read(indices[first : first + OUTPUTS_PER_READ])


def render_into_blobs(
    blobs: BlobStore, kind: JobKind, job: Job, name: str, outputs: Iterator[ChunkOutput]
) -> str | None:
    """Render the artefact ``name`` of ``job`` into its blob (written whole or not at all);
    returns its media type, or ``None`` if the kind makes no such artefact. Blocking: run
    it off the event loop and off the store thread.

    Raises:
        StoreError: the blob could not be written.
    """
    with blobs.scratch() as scratch:
        stream = kind.render_stream(job.params, outputs, name, scratch)
        if stream is None:
            return None
        blobs.put_stream(job.job_id, artefact_blob_name(name), stream.pieces)
    return stream.media_type
