"""The primitives whose SQL is the same on SQLite and PostgreSQL: the verification
candidates, reading and deleting outputs, the credit ledger, a job's lease spans and the
earliest lease deadline.

:class:`SQLCommon` is mixed into both SQL backends, which own ``_db`` (whose ``execute``
and ``executemany`` take a query and its arguments) and ``_blobs``, and name their parameter
marker in ``PARAM`` (``?`` or ``%s``). The queries below are written with ``?`` and given the
backend's marker once, when the backend's class is made. Only what both databases know is
used: ``INSERT … ON CONFLICT … DO UPDATE`` (SQLite 3.24 and later), ``SUM`` (never over an
empty group) and integer flags compared with 0.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from hydracompute.core.credit import (
    CreditEntry,
    CreditTotal,
    EntryKind,
    Grouping,
    ZoneTotal,
    sort_totals,
)
from hydracompute.core.lifecycle import Copy
from hydracompute.core.progress import LeaseSpan
from hydracompute.store.backend import StoredOutput
from hydracompute.store.blobs import BlobStore
from hydracompute.store.payloads import load_output, spill_output

#: The WHERE clause of ``tail_chunks`` on the chunks table (see
#: :meth:`~hydracompute.store.backend.Backend.tail_chunks`), each part read from an index:
#: silent holders from the active leases by deadline, late ones by ``late_s``, those ending
#: last by ``expected_end_s``, paused holders from the paused workers (few) and their
#: active leases. The race part is left out when not asked for.
_TAIL_PARTS = (
    "SELECT chunk_index FROM (SELECT chunk_index FROM leases WHERE job_id = ? "
    "AND state = 'active' AND deadline_s < ? ORDER BY deadline_s LIMIT ?) AS silent",
    "SELECT chunk_index FROM (SELECT chunk_index FROM leases WHERE job_id = ? "
    "AND state = 'active' AND late_s < ? ORDER BY late_s LIMIT ?) AS late",
    "SELECT chunk_index FROM (SELECT l.chunk_index FROM workers w CROSS JOIN leases l "
    "WHERE w.state = 'paused' AND l.worker_id = w.worker_id AND l.state = 'active' "
    "AND l.job_id = ? ORDER BY l.chunk_index LIMIT ?) AS paused",
    "SELECT chunk_index FROM (SELECT chunk_index FROM leases WHERE job_id = ? "
    "AND state = 'active' AND expected_end_s > ? ORDER BY expected_end_s DESC LIMIT ?) AS ends",
)


#: ``lease_spans``: a job's active leases (not spot checks) with their chunks' units, from
#: the index of active leases by chunk.
_LEASE_SPANS = (
    "SELECT c.start, c.stop, l.issued_s, l.expected_end_s FROM leases l JOIN chunks c "
    'ON c.job_id = l.job_id AND c."index" = l.chunk_index '
    "WHERE l.job_id = ? AND l.state = 'active' AND l.spot_check = 0 LIMIT ?"
)


def tail_chunks_where(race: bool, mark: str) -> str:
    parts = " UNION ALL ".join(_TAIL_PARTS if race else _TAIL_PARTS[:3])
    where = f'WHERE job_id = ? AND state = \'leased\' AND "index" IN ({parts}) ORDER BY "index"'
    return where.replace("?", mark)


def tail_chunks_args(
    job_id: str, now: float, silent_deadline_s: float, limit: int, race: bool
) -> tuple[Any, ...]:
    args = (job_id, job_id, silent_deadline_s, limit, job_id, now, limit, job_id, limit)
    return (*args, job_id, now, limit) if race else args


CREDIT_COLUMNS = (
    "entry_id, time_s, worker_id, volunteer, job_id, chunk_index, work, credit, energy_j, "
    "kind, gco2, gco2_blind, energy_measured, zone"
)
#: Chunks whose credit an owner keeps: grants less corrections.
_CHUNKS = "SUM(CASE kind WHEN 'grant' THEN 1 ELSE -1 END)"

_PUT_CANDIDATE = (
    "INSERT INTO candidates (job_id, chunk_index, lease_id, worker_id, output, blob) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (job_id, chunk_index, lease_id) DO UPDATE SET "
    "worker_id = excluded.worker_id, output = excluded.output, blob = excluded.blob"
)
# Lease ids sort in issue order (see exchange.new_lease_id).
_CANDIDATES = (
    "SELECT lease_id, worker_id, output, blob FROM candidates "
    "WHERE job_id = ? AND chunk_index = ? ORDER BY lease_id"
)
_CANDIDATES_OF_WORKER = (
    "SELECT job_id, chunk_index, lease_id, output, blob FROM candidates "
    "WHERE worker_id = ? ORDER BY job_id, chunk_index, lease_id"
)
_DELETE_CANDIDATES = "DELETE FROM candidates WHERE job_id = ? AND chunk_index = ?"
_DELETE_JOB_CANDIDATES = "DELETE FROM candidates WHERE job_id = ?"
_DELETE_OUTPUT = "DELETE FROM outputs WHERE job_id = ? AND chunk_index = ?"
_DELETE_ARTEFACTS = "DELETE FROM artefacts WHERE job_id = ?"
_OUTPUT = "SELECT start, stop, output, blob FROM outputs WHERE job_id = ? AND chunk_index = ?"
_OUTPUT_INDICES = "SELECT chunk_index FROM outputs WHERE job_id = ? ORDER BY chunk_index"
# Rows hold small outputs only (large ones name a blob, read when reached).
_OUTPUTS = (
    "SELECT chunk_index, start, stop, output, blob FROM outputs WHERE job_id = ? "
    "ORDER BY chunk_index"
)

_INSERT = (
    "INSERT INTO credit (time_s, worker_id, volunteer, job_id, chunk_index, work, "
    "credit, energy_j, kind, gco2, gco2_blind, energy_measured, zone) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_ENTRIES = f"SELECT {CREDIT_COLUMNS} FROM credit {{where}} ORDER BY entry_id"
_TOTALS = (
    f"SELECT {{column}}, {_CHUNKS}, SUM(work), SUM(credit), SUM(energy_j), SUM(gco2), "
    "SUM(gco2_blind) FROM credit {where} GROUP BY {column}"
)
_BY_ZONE = (
    f"SELECT zone, {_CHUNKS}, SUM(energy_j), "
    "SUM(CASE WHEN energy_measured <> 0 THEN energy_j ELSE 0 END), SUM(gco2), "
    "SUM(gco2_blind) FROM credit {where} GROUP BY zone ORDER BY zone"
)
# Newest first by entry number: an active volunteer's latest entries are found near the
# ledger's end, without reading the rest.
_RECENT = f"SELECT {CREDIT_COLUMNS} FROM credit WHERE volunteer = ? ORDER BY entry_id DESC LIMIT ?"
_FILTERS = (
    "worker_id = ?",
    "job_id = ?",
    "chunk_index = ?",
    "time_s >= ?",
    "time_s < ?",
)


class SQLCommon:
    """These primitives of :class:`~hydracompute.store.backend.Backend` in SQL."""

    #: The backend's parameter marker.
    PARAM: ClassVar[str] = "?"
    _db: Any
    _blobs: BlobStore
    _sql: ClassVar[dict[str, str]]
    _credit_filters: ClassVar[tuple[str, ...]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        mark = cls.PARAM

        def marked(text: str) -> str:
            return text.replace("?", mark)

        cls._sql = {
            name: marked(text)
            for name, text in (
                ("put_candidate", _PUT_CANDIDATE),
                ("candidates", _CANDIDATES),
                ("candidates_of_worker", _CANDIDATES_OF_WORKER),
                ("delete_candidates", _DELETE_CANDIDATES),
                ("delete_job_candidates", _DELETE_JOB_CANDIDATES),
                ("delete_output", _DELETE_OUTPUT),
                ("delete_artefacts", _DELETE_ARTEFACTS),
                ("output", _OUTPUT),
                ("output_indices", _OUTPUT_INDICES),
                ("outputs", _OUTPUTS),
                ("credit_insert", _INSERT),
                ("credit_entries", _ENTRIES),
                ("credit_totals", _TOTALS),
                ("credit_by_zone", _BY_ZONE),
                ("credit_recent", _RECENT),
                ("lease_spans", _LEASE_SPANS),
            )
        }
        cls._credit_filters = tuple(marked(f) for f in _FILTERS)

    def lease_spans(self, job_id: str, limit: int) -> list[LeaseSpan]:
        rows = self._db.execute(self._sql["lease_spans"], (job_id, limit)).fetchall()
        return [LeaseSpan(int(a), int(b), float(issued), end) for a, b, issued, end in rows]

    def earliest_lease_deadline(self) -> float | None:
        row = self._db.execute("SELECT MIN(deadline_s) FROM leases WHERE state = 'active'")
        found = row.fetchone()
        return None if found is None or found[0] is None else float(found[0])

    # verification candidates

    def put_candidate(self, job_id: str, chunk_index: int, copy: Copy) -> None:
        # A large output (a Mandelbrot chunk's) goes to the blob store, as for outputs.
        text, blob = spill_output(self._blobs, job_id, chunk_index, copy.output)
        self._db.execute(
            self._sql["put_candidate"],
            (job_id, chunk_index, copy.lease_id, copy.worker_id, text, blob),
        )

    def candidates(self, job_id: str, chunk_index: int) -> list[Copy]:
        rows = self._db.execute(self._sql["candidates"], (job_id, chunk_index)).fetchall()
        return [
            Copy(lease, worker, load_output(self._blobs, job_id, text, blob))
            for lease, worker, text, blob in rows
        ]

    def candidates_of_worker(self, worker_id: str) -> list[tuple[str, int, Copy]]:
        rows = self._db.execute(self._sql["candidates_of_worker"], (worker_id,)).fetchall()
        return [
            (job, index, Copy(lease, worker_id, load_output(self._blobs, job, text, blob)))
            for job, index, lease, text, blob in rows
        ]

    def delete_candidates(self, job_id: str, chunk_index: int, lease_id: str = "") -> None:
        query = self._sql["delete_candidates"]
        if lease_id:
            self._db.execute(
                f"{query} AND lease_id = {self.PARAM}", (job_id, chunk_index, lease_id)
            )
        else:
            self._db.execute(query, (job_id, chunk_index))

    def delete_job_candidates(self, job_id: str) -> None:
        self._db.execute(self._sql["delete_job_candidates"], (job_id,))

    # outputs (written by each backend: SQLite replaces, PostgreSQL holds the write back)

    def delete_output(self, job_id: str, chunk_index: int) -> None:
        self._db.execute(self._sql["delete_output"], (job_id, chunk_index))

    def delete_artefacts(self, job_id: str) -> None:
        self._db.execute(self._sql["delete_artefacts"], (job_id,))

    def output_indices(self, job_id: str) -> list[int]:
        rows = self._db.execute(self._sql["output_indices"], (job_id,)).fetchall()
        return [int(row[0]) for row in rows]

    def get_output(self, job_id: str, chunk_index: int) -> StoredOutput | None:
        row = self._db.execute(self._sql["output"], (job_id, chunk_index)).fetchone()
        if row is None:
            return None
        output = load_output(self._blobs, job_id, row[2], row[3])
        return StoredOutput(job_id, chunk_index, row[0], row[1], output)

    def iter_outputs(self, job_id: str) -> Iterator[StoredOutput]:
        rows = self._db.execute(self._sql["outputs"], (job_id,)).fetchall()
        for index, start, stop, text, blob in rows:
            output = load_output(self._blobs, job_id, text, blob)
            yield StoredOutput(job_id, index, start, stop, output)

    # the credit ledger

    def append_credit(self, entries: Sequence[CreditEntry]) -> None:
        if not entries:
            return
        self._db.executemany(
            self._sql["credit_insert"],
            [
                (
                    e.time_s,
                    e.worker_id,
                    e.volunteer,
                    e.job_id,
                    e.chunk_index,
                    e.work,
                    e.credit,
                    e.energy_j,
                    e.kind.value,
                    e.gco2,
                    e.gco2_blind,
                    int(e.energy_measured),
                    e.zone,
                )
                for e in entries
            ],
        )

    def _credit_filter(
        self,
        worker_id: str | None = None,
        job_id: str | None = None,
        chunk_index: int | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> tuple[str, list[Any]]:
        conditions: list[str] = []
        args: list[Any] = []
        values = (worker_id, job_id, chunk_index, since, until)
        for condition, value in zip(self._credit_filters, values, strict=True):
            if value is not None:
                conditions.append(condition)
                args.append(value)
        return (f"WHERE {' AND '.join(conditions)}" if conditions else ""), args

    def credit_entries(
        self,
        worker_id: str | None = None,
        job_id: str | None = None,
        chunk_index: int | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[CreditEntry]:
        where, args = self._credit_filter(worker_id, job_id, chunk_index, since, until)
        rows = self._db.execute(self._sql["credit_entries"].format(where=where), args).fetchall()
        return [credit_entry(row) for row in rows]

    def credit_totals(
        self,
        by: Grouping,
        since: float | None = None,
        until: float | None = None,
        worker_id: str | None = None,
    ) -> list[CreditTotal]:
        where, args = self._credit_filter(worker_id, since=since, until=until)
        column = "worker_id" if by is Grouping.WORKER else "volunteer"
        query = self._sql["credit_totals"].format(column=column, where=where)
        rows = self._db.execute(query, args).fetchall()
        return sort_totals(
            CreditTotal(str(key), int(chunks), *(float(x) for x in sums))
            for key, chunks, *sums in rows
        )

    def credit_by_zone(self, job_id: str | None = None) -> list[ZoneTotal]:
        where, args = self._credit_filter(job_id=job_id)
        rows = self._db.execute(self._sql["credit_by_zone"].format(where=where), args).fetchall()
        return [
            ZoneTotal(str(zone), int(chunks), *(float(x) for x in sums))
            for zone, chunks, *sums in rows
        ]

    def recent_credit(self, volunteer: str, limit: int) -> list[CreditEntry]:
        rows = self._db.execute(self._sql["credit_recent"], (volunteer, limit)).fetchall()
        return [credit_entry(row) for row in rows]


def credit_entry(row: Sequence[Any]) -> CreditEntry:
    """A ledger row (:data:`CREDIT_COLUMNS`) as its entry."""
    fields = (*row[:9], EntryKind(row[9]), row[10], row[11], bool(row[12]), row[13])
    return CreditEntry(*fields)
