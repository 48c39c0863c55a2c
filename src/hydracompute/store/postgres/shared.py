"""The shared-state primitives (:mod:`hydracompute.store.shared`) on PostgreSQL.

Coordinators commit concurrently here, so a change's sequence number is taken from a
one-row counter (``change_seq``) updated in the appending transaction: its row lock makes
appends wait for each other until commit, and numbers are therefore given in commit order
(a reader that has seen ``n`` never later finds a new change below ``n``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from hydracompute.store.postgres.connection import Connections
from hydracompute.store.postgres.notify import ChangeListener, channel_of
from hydracompute.store.shared import Change, CoordinatorEntry, SharedPrimitives

#: Part of the first migration (see :mod:`hydracompute.store.postgres.schema`).
TABLES = """
    CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE coordinators (
        coordinator_id TEXT PRIMARY KEY, url TEXT NOT NULL,
        started_s DOUBLE PRECISION NOT NULL, seen_s DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE changes (
        seq BIGINT PRIMARY KEY, time_s DOUBLE PRECISION NOT NULL, origin TEXT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE INDEX changes_by_time ON changes (time_s);
    CREATE TABLE change_seq (last BIGINT NOT NULL);
    INSERT INTO change_seq VALUES (0);
    CREATE TABLE counters (
        key TEXT PRIMARY KEY, value DOUBLE PRECISION NOT NULL,
        updated_s DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX counters_by_time ON counters (updated_s);
"""


class PostgresShared(SharedPrimitives):
    """Mixed into :class:`~hydracompute.store.postgres.PostgresBackend`, which owns ``_db``."""

    _db: Connections
    _conninfo: str
    _listener: ChangeListener | None = None

    def get_setting(self, name: str) -> str | None:
        row = self._db.execute("SELECT value FROM settings WHERE name = %s", (name,)).fetchone()
        return None if row is None else str(row[0])

    def add_setting(self, name: str, value: str) -> str:
        # Two coordinators starting at once: the second waits for the first's row, then
        # finds it (ON CONFLICT DO NOTHING) and reads the first one's value.
        self._db.execute(
            "INSERT INTO settings (name, value) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (name, value),
        )
        kept = self.get_setting(name)
        assert kept is not None
        return kept

    def put_setting(self, name: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO settings (name, value) VALUES (%s, %s) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            (name, value),
        )

    def put_coordinator(self, entry: CoordinatorEntry) -> None:
        self._db.execute(
            "INSERT INTO coordinators (coordinator_id, url, started_s, seen_s) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (coordinator_id) DO UPDATE SET "
            "url = excluded.url, started_s = excluded.started_s, seen_s = excluded.seen_s",
            (entry.coordinator_id, entry.url, entry.started_s, entry.seen_s),
        )

    def list_coordinators(self, seen_since: float) -> list[CoordinatorEntry]:
        rows = self._db.execute(
            "SELECT coordinator_id, url, started_s, seen_s FROM coordinators "
            "WHERE seen_s >= %s ORDER BY started_s, coordinator_id",
            (seen_since,),
        ).fetchall()
        return [CoordinatorEntry(str(i), str(u), float(s), float(h)) for i, u, s, h in rows]

    def delete_coordinator(self, coordinator_id: str) -> None:
        self._db.execute("DELETE FROM coordinators WHERE coordinator_id = %s", (coordinator_id,))

    def append_change(self, change: Change) -> None:
        self._db.execute(
            "WITH next AS (UPDATE change_seq SET last = last + 1 RETURNING last) "
            "INSERT INTO changes (seq, time_s, origin, body) "
            "SELECT last, %s, %s, %s FROM next",
            (change.time_s, change.origin, change.body()),
        )
        # Delivered at commit, to the other coordinators' listeners (store/postgres/notify.py).
        self._db.execute("SELECT pg_notify(%s, '')", (channel_of(self._db.schema),))

    def change_waiter(self) -> Callable[[float], Awaitable[None]] | None:
        if self._listener is None:
            self._listener = ChangeListener(self._conninfo, self._db.schema)
        return self._listener

    def changes_after(self, seq: int, limit: int) -> list[Change]:
        rows = self._db.execute(
            "SELECT seq, origin, time_s, body FROM changes WHERE seq > %s ORDER BY seq LIMIT %s",
            (seq, limit),
        ).fetchall()
        return [Change.from_row(int(s), str(o), float(t), str(b)) for s, o, t, b in rows]

    def last_change_seq(self) -> int:
        row = self._db.execute("SELECT last FROM change_seq").fetchone()
        return 0 if row is None else int(row[0])

    def delete_changes_before(self, time_s: float) -> None:
        self._db.execute("DELETE FROM changes WHERE time_s < %s", (time_s,))

    def get_counter(self, key: str) -> tuple[float, float] | None:
        # Read to be updated (a token bucket spent): locked until the transaction ends.
        lock = " FOR UPDATE" if self._db.locking else ""
        row = self._db.execute(
            "SELECT value, updated_s FROM counters WHERE key = %s" + lock, (key,)
        ).fetchone()
        return None if row is None else (float(row[0]), float(row[1]))

    def put_counter(self, key: str, value: float, updated_s: float) -> None:
        self._db.execute(
            "INSERT INTO counters (key, value, updated_s) VALUES (%s, %s, %s) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
            "updated_s = excluded.updated_s",
            (key, value, updated_s),
        )

    def delete_counters_before(self, updated_s: float) -> None:
        self._db.execute("DELETE FROM counters WHERE updated_s < %s", (updated_s,))
