"""The SQLite backend's schema, as numbered migrations recorded in ``PRAGMA user_version``
(see :class:`~hydracompute.store.sqlite.SQLiteBackend`)."""

from __future__ import annotations

from hydracompute.store.sqlite_shared import MIGRATION as SHARED_MIGRATION

#: Migration ``n`` (1-based) brings the schema from version n-1 to n. Append, never edit.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE workers (
        worker_id TEXT PRIMARY KEY, name TEXT NOT NULL, cores INTEGER NOT NULL,
        kinds TEXT NOT NULL, secret_hash TEXT NOT NULL, enrolled_s REAL NOT NULL,
        last_seen_s REAL NOT NULL, speeds TEXT NOT NULL, speed_evidence_s TEXT NOT NULL,
        chunks_done INTEGER NOT NULL,
        units_done TEXT NOT NULL, "left" INTEGER NOT NULL
    );
    CREATE TABLE jobs (
        job_id TEXT PRIMARY KEY, kind TEXT NOT NULL, params TEXT NOT NULL,
        total_units INTEGER NOT NULL, created_s REAL NOT NULL, target_chunk_s REAL NOT NULL,
        name TEXT NOT NULL, state TEXT NOT NULL, next_unit INTEGER NOT NULL,
        chunks_carved INTEGER NOT NULL, units_done INTEGER NOT NULL, finished_s REAL,
        error TEXT, answer TEXT, live TEXT NOT NULL
    );
    CREATE INDEX jobs_by_state ON jobs (state, created_s);
    CREATE TABLE chunks (
        job_id TEXT NOT NULL, "index" INTEGER NOT NULL, start INTEGER NOT NULL,
        stop INTEGER NOT NULL, state TEXT NOT NULL, failures INTEGER NOT NULL,
        last_error TEXT, PRIMARY KEY (job_id, "index")
    ) WITHOUT ROWID;
    CREATE INDEX chunks_by_state ON chunks (job_id, state, "index");
    CREATE TABLE leases (
        lease_id TEXT PRIMARY KEY, job_id TEXT NOT NULL, chunk_index INTEGER NOT NULL,
        worker_id TEXT NOT NULL, issued_s REAL NOT NULL, deadline_s REAL NOT NULL,
        state TEXT NOT NULL, backup INTEGER NOT NULL, output_digest TEXT, compute_s REAL
    );
    CREATE INDEX active_leases_by_chunk ON leases (job_id, chunk_index) WHERE state = 'active';
    CREATE INDEX active_leases_by_worker ON leases (worker_id) WHERE state = 'active';
    CREATE INDEX active_leases_by_deadline ON leases (deadline_s) WHERE state = 'active';
    CREATE TABLE outputs (
        job_id TEXT NOT NULL, chunk_index INTEGER NOT NULL, start INTEGER NOT NULL,
        stop INTEGER NOT NULL, output TEXT NOT NULL, PRIMARY KEY (job_id, chunk_index)
    ) WITHOUT ROWID;
    CREATE TABLE artefacts (
        job_id TEXT NOT NULL, name TEXT NOT NULL, media_type TEXT NOT NULL,
        data BLOB NOT NULL, PRIMARY KEY (job_id, name)
    ) WITHOUT ROWID;
    """,
    """
    CREATE TABLE credentials (
        cred_id TEXT PRIMARY KEY, kind TEXT NOT NULL, name TEXT NOT NULL,
        secret_hash TEXT NOT NULL, created_s REAL NOT NULL, role TEXT, expires_s REAL,
        max_uses INTEGER, uses INTEGER NOT NULL, revoked INTEGER NOT NULL
    );
    CREATE INDEX credentials_by_kind ON credentials (kind, created_s);
    ALTER TABLE jobs ADD COLUMN owner TEXT NOT NULL DEFAULT '';
    CREATE INDEX jobs_by_owner ON jobs (owner, created_s);
    ALTER TABLE workers ADD COLUMN revoked INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE workers ADD COLUMN token_id TEXT NOT NULL DEFAULT ''
    """,
    """
    ALTER TABLE workers ADD COLUMN state TEXT NOT NULL DEFAULT 'running';
    ALTER TABLE workers ADD COLUMN state_reason TEXT NOT NULL DEFAULT ''
    """,
    """
    ALTER TABLE chunks ADD COLUMN failed_by TEXT NOT NULL DEFAULT '{}'
    """,
    # Without these, SQLite walks a job's every chunk in key order to find its pending or
    # leased ones: a cost per exchange that grew with the size of the job.
    """
    DROP INDEX chunks_by_state;
    CREATE INDEX pending_chunks ON chunks (job_id, "index") WHERE state = 'pending';
    CREATE INDEX leased_chunks ON chunks (job_id, "index") WHERE state = 'leased'
    """,
    # Large outputs and artefacts move to the blob store (hydracompute.store.payloads): a
    # row then names its blob, and its output or data is empty. Rows written before keep
    # their payload and are read as before.
    """
    ALTER TABLE outputs ADD COLUMN blob TEXT;
    ALTER TABLE artefacts ADD COLUMN blob TEXT
    """,
    # Verification by replication (see core/verification.py).
    """
    ALTER TABLE jobs ADD COLUMN replication INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE jobs ADD COLUMN quorum INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE jobs ADD COLUMN adaptive INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN reopened INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE chunks ADD COLUMN quorum INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE chunks ADD COLUMN wanted INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE chunks ADD COLUMN holders TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE chunks ADD COLUMN reported INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE chunks ADD COLUMN verified INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE chunks ADD COLUMN disputed INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE chunks ADD COLUMN unverified_by TEXT NOT NULL DEFAULT '';
    CREATE INDEX verified_chunks ON chunks (job_id, "index") WHERE verified;
    CREATE INDEX unverified_chunks ON chunks (unverified_by) WHERE unverified_by != '';
    ALTER TABLE leases ADD COLUMN spot_check INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE workers ADD COLUMN trust TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE workers ADD COLUMN barred TEXT NOT NULL DEFAULT '';
    CREATE TABLE candidates (
        job_id TEXT NOT NULL, chunk_index INTEGER NOT NULL, lease_id TEXT NOT NULL,
        worker_id TEXT NOT NULL, output TEXT NOT NULL, blob TEXT,
        PRIMARY KEY (job_id, chunk_index, lease_id)
    ) WITHOUT ROWID;
    CREATE INDEX candidates_by_worker ON candidates (worker_id)
    """,
    # The credit ledger (see core/credit.py): append-only, one row per grant or correction.
    # Its ids are rowids: a table that is never deleted from never reuses one, so they need
    # no AUTOINCREMENT (which costs every insert a write to sqlite_sequence).
    """
    CREATE TABLE credit (
        entry_id INTEGER PRIMARY KEY, time_s REAL NOT NULL,
        worker_id TEXT NOT NULL, volunteer TEXT NOT NULL, job_id TEXT NOT NULL,
        chunk_index INTEGER NOT NULL, work REAL NOT NULL, credit REAL NOT NULL,
        energy_j REAL NOT NULL, kind TEXT NOT NULL
    );
    CREATE INDEX credit_by_chunk ON credit (job_id, chunk_index);
    CREATE INDEX credit_by_worker ON credit (worker_id, time_s)
    """,
    # A worker's own power per busy core (declared or measured), for energy estimates.
    """
    ALTER TABLE workers ADD COLUMN watts_per_core REAL
    """,
    # Fair share between submitters (see core/fairshare.py): a job's priority within its
    # owner's, an API key's weight, and each owner's decayed usage.
    """
    ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE credentials ADD COLUMN weight REAL NOT NULL DEFAULT 1;
    CREATE TABLE owner_usage (
        owner TEXT PRIMARY KEY, usage_s REAL NOT NULL, as_of_s REAL NOT NULL
    ) WITHOUT ROWID
    """,
    # Placement: labels the admin gives workers, and the labels a job requires.
    """
    ALTER TABLE workers ADD COLUMN labels TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE jobs ADD COLUMN required_labels TEXT NOT NULL DEFAULT '[]'
    """,
    # What several coordinators on one file share (see store/shared.py).
    SHARED_MIGRATION,
    # Grid-aware dispatch (see core/carbon.py): each worker's grid zone, whether its power
    # was measured, jobs' deadlines and carbon mode, and each grant's CO2.
    """
    ALTER TABLE workers ADD COLUMN power_measured INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE workers ADD COLUMN grid_zone TEXT NOT NULL DEFAULT '';
    ALTER TABLE jobs ADD COLUMN deadline_s REAL;
    ALTER TABLE jobs ADD COLUMN carbon TEXT NOT NULL DEFAULT 'blind';
    ALTER TABLE jobs ADD COLUMN blind_gco2_per_kwh REAL;
    ALTER TABLE credit ADD COLUMN gco2 REAL NOT NULL DEFAULT 0;
    ALTER TABLE credit ADD COLUMN gco2_blind REAL NOT NULL DEFAULT 0;
    ALTER TABLE credit ADD COLUMN energy_measured INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE credit ADD COLUMN zone TEXT NOT NULL DEFAULT ''
    """,
    # The tail of a job (see SQLiteBackend.tail_chunks): each lease's expected end and
    # the time its holder becomes late, and the orders a job's active leases are read in.
    """
    ALTER TABLE leases ADD COLUMN expected_end_s REAL;
    ALTER TABLE leases ADD COLUMN late_s REAL;
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
    ALTER TABLE jobs ADD COLUMN expected_compute_s REAL NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN reported_compute_s REAL NOT NULL DEFAULT 0;
    ALTER TABLE leases ADD COLUMN speed_known INTEGER NOT NULL DEFAULT 0
    """,
]
