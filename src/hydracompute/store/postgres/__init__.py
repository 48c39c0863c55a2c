"""The PostgreSQL backend: several coordinators sharing one database (``postgresql://``).

Needs the ``postgresql`` extra (``pip install hydracompute[postgresql]``): psycopg 3 and its
connection pool.
"""

from hydracompute.store.postgres.backend import PostgresBackend
from hydracompute.store.postgres.blobs import PostgresBlobStore

__all__ = ["PostgresBackend", "PostgresBlobStore"]
