"""The PostgreSQL schema and its migrations, applied once however many coordinators start.

The tables and columns are those of the SQLite backend (:mod:`hydracompute.store.sqlite`),
mapped by the same :class:`~hydracompute.store.sqlite_rows.Table` conversions: booleans as
integers, dicts and lists as JSON text, enums as their value. Large payloads live in the
``blobs`` and ``blob_pieces`` tables (see :mod:`hydracompute.store.postgres.blobs`).

Migrations run in one transaction under a session advisory lock keyed by the schema's name:
coordinators starting together wait for the first, then find the schema current.
"""

from __future__ import annotations

import hashlib
from typing import Any

import psycopg
from psycopg import sql

from hydracompute.errors import StoreError
from hydracompute.store.postgres.shared import TABLES as SHARED_TABLES

#: Migration ``n`` (1-based) brings the schema from version n-1 to n. Append, never edit.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE workers (
        worker_id TEXT PRIMARY KEY, name TEXT NOT NULL, cores BIGINT NOT NULL,
        kinds TEXT NOT NULL, secret_hash TEXT NOT NULL, enrolled_s DOUBLE PRECISION NOT NULL,
        last_seen_s DOUBLE PRECISION NOT NULL, speeds TEXT NOT NULL,
        speed_evidence_s TEXT NOT NULL, chunks_done BIGINT NOT NULL, units_done TEXT NOT NULL,
        "left" INTEGER NOT NULL, revoked INTEGER NOT NULL DEFAULT 0,
        token_id TEXT NOT NULL DEFAULT '', state TEXT NOT NULL DEFAULT 'running',
        state_reason TEXT NOT NULL DEFAULT '', trust TEXT NOT NULL DEFAULT '{}',
        barred TEXT NOT NULL DEFAULT '', watts_per_core DOUBLE PRECISION,
        labels TEXT NOT NULL DEFAULT '[]', power_measured INTEGER NOT NULL DEFAULT 0,
        grid_zone TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX workers_by_last_seen ON workers (last_seen_s, worker_id);
    CREATE TABLE credentials (
        cred_id TEXT PRIMARY KEY, kind TEXT NOT NULL, name TEXT NOT NULL,
        secret_hash TEXT NOT NULL, created_s DOUBLE PRECISION NOT NULL, role TEXT,
        expires_s DOUBLE PRECISION, max_uses BIGINT, uses BIGINT NOT NULL,
        revoked INTEGER NOT NULL, weight DOUBLE PRECISION NOT NULL DEFAULT 1
    );
    CREATE INDEX credentials_by_kind ON credentials (kind, created_s);
    CREATE TABLE jobs (
        job_id TEXT PRIMARY KEY, kind TEXT NOT NULL, params TEXT NOT NULL,
        total_units BIGINT NOT NULL, created_s DOUBLE PRECISION NOT NULL,
        target_chunk_s DOUBLE PRECISION NOT NULL, name TEXT NOT NULL,
        owner TEXT NOT NULL DEFAULT '', state TEXT NOT NULL, next_unit BIGINT NOT NULL,
        chunks_carved BIGINT NOT NULL, units_done BIGINT NOT NULL,
        finished_s DOUBLE PRECISION, error TEXT, answer TEXT, live TEXT NOT NULL,
        replication INTEGER NOT NULL DEFAULT 1, quorum INTEGER NOT NULL DEFAULT 1,
        adaptive INTEGER NOT NULL DEFAULT 0, reopened INTEGER NOT NULL DEFAULT 0,
        priority INTEGER NOT NULL DEFAULT 0, required_labels TEXT NOT NULL DEFAULT '[]',
        deadline_s DOUBLE PRECISION, carbon TEXT NOT NULL DEFAULT 'blind',
        blind_gco2_per_kwh DOUBLE PRECISION
    );
    CREATE INDEX jobs_by_state ON jobs (state, created_s);
    CREATE INDEX jobs_by_owner ON jobs (owner, created_s);
    CREATE TABLE chunks (
        job_id TEXT NOT NULL, "index" BIGINT NOT NULL, start BIGINT NOT NULL,
        stop BIGINT NOT NULL, state TEXT NOT NULL, failures INTEGER NOT NULL,
        last_error TEXT, failed_by TEXT NOT NULL DEFAULT '{}',
        quorum INTEGER NOT NULL DEFAULT 1, wanted INTEGER NOT NULL DEFAULT 1,
        holders TEXT NOT NULL DEFAULT '{}', reported INTEGER NOT NULL DEFAULT 0,
        verified INTEGER NOT NULL DEFAULT 0, disputed INTEGER NOT NULL DEFAULT 0,
        unverified_by TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (job_id, "index")
    );
    CREATE INDEX pending_chunks ON chunks (job_id, "index") WHERE state = 'pending';
    CREATE INDEX leased_chunks ON chunks (job_id, "index") WHERE state = 'leased';
    CREATE INDEX verified_chunks ON chunks (job_id, "index") WHERE verified <> 0;
    CREATE INDEX unverified_chunks ON chunks (unverified_by) WHERE unverified_by <> '';
    CREATE TABLE leases (
        lease_id TEXT PRIMARY KEY, job_id TEXT NOT NULL, chunk_index BIGINT NOT NULL,
        worker_id TEXT NOT NULL, issued_s DOUBLE PRECISION NOT NULL,
        deadline_s DOUBLE PRECISION NOT NULL, state TEXT NOT NULL, backup INTEGER NOT NULL,
        output_digest TEXT, compute_s DOUBLE PRECISION,
        spot_check INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX active_leases_by_chunk ON leases (job_id, chunk_index) WHERE state = 'active';
    CREATE INDEX active_leases_by_worker ON leases (worker_id) WHERE state = 'active';
    CREATE INDEX active_leases_by_deadline ON leases (deadline_s) WHERE state = 'active';
    CREATE TABLE outputs (
        job_id TEXT NOT NULL, chunk_index BIGINT NOT NULL, start BIGINT NOT NULL,
        stop BIGINT NOT NULL, output TEXT NOT NULL, blob TEXT,
        PRIMARY KEY (job_id, chunk_index)
    );
    CREATE TABLE artefacts (
        job_id TEXT NOT NULL, name TEXT NOT NULL, media_type TEXT NOT NULL,
        blob TEXT NOT NULL, PRIMARY KEY (job_id, name)
    );
    CREATE TABLE candidates (
        job_id TEXT NOT NULL, chunk_index BIGINT NOT NULL, lease_id TEXT NOT NULL,
        worker_id TEXT NOT NULL, output TEXT NOT NULL, blob TEXT,
        PRIMARY KEY (job_id, chunk_index, lease_id)
    );
    CREATE INDEX candidates_by_worker ON candidates (worker_id);
    CREATE TABLE credit (
        entry_id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        time_s DOUBLE PRECISION NOT NULL, worker_id TEXT NOT NULL, volunteer TEXT NOT NULL,
        job_id TEXT NOT NULL, chunk_index BIGINT NOT NULL, work DOUBLE PRECISION NOT NULL,
        credit DOUBLE PRECISION NOT NULL, energy_j DOUBLE PRECISION NOT NULL,
        kind TEXT NOT NULL, gco2 DOUBLE PRECISION NOT NULL DEFAULT 0,
        gco2_blind DOUBLE PRECISION NOT NULL DEFAULT 0,
        energy_measured INTEGER NOT NULL DEFAULT 0, zone TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX credit_by_chunk ON credit (job_id, chunk_index);
    CREATE INDEX credit_by_worker ON credit (worker_id, time_s);
    CREATE INDEX credit_by_volunteer ON credit (volunteer, entry_id);
    -- Fair share between submitters (core/fairshare.py): each owner's decayed usage.
    CREATE TABLE owner_usage (
        owner TEXT PRIMARY KEY, usage_s DOUBLE PRECISION NOT NULL,
        as_of_s DOUBLE PRECISION NOT NULL
    );
    -- What the coordinators of one pool share (see store/postgres/shared.py).
    """
    + SHARED_TABLES
    + """
    -- Blobs: a name points at a blob id, whose bytes are pieces of at most 1 MiB. A blob is
    -- written whole under a new id in one transaction, then the name is pointed at it.
    CREATE SEQUENCE blob_ids;
    CREATE TABLE blobs (
        job_id TEXT NOT NULL, name TEXT NOT NULL, blob_id BIGINT NOT NULL,
        size BIGINT NOT NULL, PRIMARY KEY (job_id, name)
    );
    CREATE TABLE blob_pieces (
        blob_id BIGINT NOT NULL, seq INTEGER NOT NULL, data BYTEA NOT NULL,
        PRIMARY KEY (blob_id, seq)
    );
    -- PNGs and compressed counts do not compress: do not spend the server's CPU trying.
    ALTER TABLE blob_pieces ALTER COLUMN data SET STORAGE EXTERNAL
    """,
    # The tail of a job (see PostgresBackend.tail_chunks): each lease's expected end and
    # the time its holder becomes late, and the orders a job's active leases are read in.
    """
    ALTER TABLE leases ADD COLUMN expected_end_s DOUBLE PRECISION;
    ALTER TABLE leases ADD COLUMN late_s DOUBLE PRECISION;
    CREATE INDEX active_leases_by_job_deadline ON leases (job_id, deadline_s)
        WHERE state = 'active';
    CREATE INDEX active_leases_by_late ON leases (job_id, late_s) WHERE state = 'active';
    CREATE INDEX active_leases_by_end ON leases (job_id, expected_end_s) WHERE state = 'active';
    CREATE INDEX paused_workers ON workers (worker_id) WHERE state = 'paused'
    """,
    # The version each worker runs (see core/placement.py: jobs older ones cannot run).
    """
    ALTER TABLE workers ADD COLUMN version TEXT NOT NULL DEFAULT ''
    """,
    # How much longer than expected each job's chunks take (see core/progress.py's ETA),
    # from the leases whose expected ends came from their holders' speeds.
    """
    ALTER TABLE jobs ADD COLUMN expected_compute_s DOUBLE PRECISION NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN reported_compute_s DOUBLE PRECISION NOT NULL DEFAULT 0;
    ALTER TABLE leases ADD COLUMN speed_known INTEGER NOT NULL DEFAULT 0
    """,
]


def advisory_key(schema: str) -> int:
    """A 63-bit key for ``pg_advisory_lock`` naming the migrations of one schema."""
    digest = hashlib.sha256(f"hydracompute migrations {schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def migrate(conn: psycopg.Connection[Any], schema: str) -> int:
    """Bring ``schema`` (created if missing) to the latest version; returns that version.

    ``conn`` is in autocommit mode. The advisory lock is held for the whole check-and-apply,
    so concurrent starts apply each migration once.

    Raises:
        StoreError: the database's schema is newer than this code knows.
    """
    key = advisory_key(schema)
    conn.execute("SELECT pg_advisory_lock(%s)", (key,))
    try:
        with conn.transaction():
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
            current = int(row[0]) if row and row[0] is not None else 0
            if current > len(MIGRATIONS):
                raise StoreError(
                    f"database schema version {current} is newer than this Hydra Compute "
                    f"({len(MIGRATIONS)}); upgrade hydracompute"
                )
            for version in range(current + 1, len(MIGRATIONS) + 1):
                conn.execute(MIGRATIONS[version - 1].encode())
                conn.execute("INSERT INTO schema_version VALUES (%s)", (version,))
        return len(MIGRATIONS)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
