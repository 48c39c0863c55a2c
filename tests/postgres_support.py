"""The PostgreSQL server the tests share: started if it is down, a schema of its own per test.

The server is this machine's (127.0.0.1:5432, trust authentication, database ``test``), or
the one ``HYDRACOMPUTE_TEST_POSTGRES`` names. A test that needs it and cannot reach it
fails: a missing backend is a failure, never a skip.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from hydracompute.store.postgres import PostgresBackend

POSTGRES_URL = os.environ.get(
    "HYDRACOMPUTE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"
)
#: How long a server that was just started may take to accept connections.
START_WAIT_S = 30.0


def _reachable() -> str:
    """'' if the server answers, else why not."""
    try:
        with psycopg.connect(POSTGRES_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return ""
    except psycopg.Error as exc:
        return str(exc).strip()


def ensure_server() -> None:
    """Start this machine's PostgreSQL cluster if it does not answer; fail if it still
    does not within :data:`START_WAIT_S`."""
    why = _reachable()
    if not why:
        return
    versions = sorted(os.listdir("/etc/postgresql")) if Path("/etc/postgresql").is_dir() else []
    if not versions:
        pytest.fail(f"PostgreSQL is not reachable at {POSTGRES_URL} ({why}) nor installed")
    started = subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"],
        capture_output=True,
        text=True,
        check=False,
    )
    deadline = time.monotonic() + START_WAIT_S
    while why := _reachable():
        if time.monotonic() > deadline:
            pytest.fail(
                f"PostgreSQL is not reachable at {POSTGRES_URL} ({why}); starting it said: "
                f"{started.stdout}{started.stderr}"
            )
        time.sleep(0.1)


def new_schema_name() -> str:
    return f"test_{secrets.token_hex(6)}"


def schema_for(path: Path) -> str:
    """The schema of a test's store named by a path in its temporary folder (the same path
    opens the same schema again, as a restart reopens the same SQLite file)."""
    return "test_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]


def drop_schemas(names: list[str]) -> None:
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        for name in names:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


class Schemas:
    """The schemas one test opened; dropped when it ends."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def backend(self, schema: str | None = None, path: Path | None = None) -> PostgresBackend:
        """A backend on ``schema`` (by default a new one, or the one of ``path``)."""
        name = schema or (schema_for(path) if path is not None else new_schema_name())
        if name not in self.names:
            self.names.append(name)
        return PostgresBackend(POSTGRES_URL, name, pool_size=4)

    def url(self, schema: str | None = None) -> str:
        """A ``--store`` URL on a new schema (or ``schema``)."""
        name = schema or new_schema_name()
        if name not in self.names:
            self.names.append(name)
        return f"{POSTGRES_URL}?schema={name}"
