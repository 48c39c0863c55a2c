"""The shared-state primitives (:mod:`hydracompute.store.shared`) on SQLite.

SQLite lets one writer at a time in (every transaction is ``BEGIN IMMEDIATE``), so changes
are appended, and their sequence numbers (rowids) given, in commit order.
"""

from __future__ import annotations

import sqlite3

from hydracompute.store.shared import Change, CoordinatorEntry, SharedPrimitives

#: Appended to the backend's migrations (see :data:`hydracompute.store.sqlite.MIGRATIONS`).
MIGRATION = """
CREATE TABLE settings (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE coordinators (
    coordinator_id TEXT PRIMARY KEY, url TEXT NOT NULL, started_s REAL NOT NULL,
    seen_s REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, time_s REAL NOT NULL, origin TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX changes_by_time ON changes (time_s);
CREATE TABLE counters (
    key TEXT PRIMARY KEY, value REAL NOT NULL, updated_s REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX counters_by_time ON counters (updated_s)
"""


class SQLiteShared(SharedPrimitives):
    """Mixed into :class:`~hydracompute.store.sqlite.SQLiteBackend`, which owns ``_db``."""

    _db: sqlite3.Connection

    def get_setting(self, name: str) -> str | None:
        row = self._db.execute("SELECT value FROM settings WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def add_setting(self, name: str, value: str) -> str:
        self._db.execute(
            "INSERT OR IGNORE INTO settings (name, value) VALUES (?, ?)", (name, value)
        )
        kept = self.get_setting(name)
        assert kept is not None
        return kept

    def put_setting(self, name: str, value: str) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO settings (name, value) VALUES (?, ?)", (name, value)
        )

    def put_coordinator(self, entry: CoordinatorEntry) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO coordinators (coordinator_id, url, started_s, seen_s) "
            "VALUES (?, ?, ?, ?)",
            (entry.coordinator_id, entry.url, entry.started_s, entry.seen_s),
        )

    def list_coordinators(self, seen_since: float) -> list[CoordinatorEntry]:
        rows = self._db.execute(
            "SELECT coordinator_id, url, started_s, seen_s FROM coordinators "
            "WHERE seen_s >= ? ORDER BY started_s, coordinator_id",
            (seen_since,),
        ).fetchall()
        return [CoordinatorEntry(str(i), str(u), float(s), float(h)) for i, u, s, h in rows]

    def delete_coordinator(self, coordinator_id: str) -> None:
        self._db.execute("DELETE FROM coordinators WHERE coordinator_id = ?", (coordinator_id,))

    def append_change(self, change: Change) -> None:
        self._db.execute(
            "INSERT INTO changes (time_s, origin, body) VALUES (?, ?, ?)",
            (change.time_s, change.origin, change.body()),
        )

    def changes_after(self, seq: int, limit: int) -> list[Change]:
        rows = self._db.execute(
            "SELECT seq, origin, time_s, body FROM changes WHERE seq > ? ORDER BY seq LIMIT ?",
            (seq, limit),
        ).fetchall()
        return [Change.from_row(int(s), str(o), float(t), str(b)) for s, o, t, b in rows]

    def last_change_seq(self) -> int:
        # AUTOINCREMENT keeps the highest seq ever given even once its row is deleted, so a
        # reader's position stays valid across pruning.
        row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetchone()
        return 0 if row is None else int(row[0])

    def delete_changes_before(self, time_s: float) -> None:
        self._db.execute("DELETE FROM changes WHERE time_s < ?", (time_s,))

    def get_counter(self, key: str) -> tuple[float, float] | None:
        row = self._db.execute(
            "SELECT value, updated_s FROM counters WHERE key = ?", (key,)
        ).fetchone()
        return None if row is None else (float(row[0]), float(row[1]))

    def put_counter(self, key: str, value: float, updated_s: float) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO counters (key, value, updated_s) VALUES (?, ?, ?)",
            (key, value, updated_s),
        )

    def delete_counters_before(self, updated_s: float) -> None:
        self._db.execute("DELETE FROM counters WHERE updated_s < ?", (updated_s,))
