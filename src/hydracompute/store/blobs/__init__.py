"""Large payloads (big chunk outputs, rendered artefacts) kept outside the database.

:class:`BlobStore` is one small interface with several implementations: a folder beside the
SQLite file (:class:`FolderBlobStore`) and memory (:class:`MemoryBlobStore`, for the memory
backend and the tests). One shared between several coordinators (PostgreSQL large objects,
S3) only has to implement the same primitives.
"""

from hydracompute.store.blobs.base import BlobStore, check_blob_name
from hydracompute.store.blobs.folder import FolderBlobStore
from hydracompute.store.blobs.memory import MemoryBlobStore

__all__ = ["BlobStore", "FolderBlobStore", "MemoryBlobStore", "check_blob_name"]
