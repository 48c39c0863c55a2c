"""How the SQLite backend's records map to rows: every field of a record's dataclass is a
column of its table, converted on the way in and out (enums as their value, booleans as
integers, dicts and lists as JSON)."""

from __future__ import annotations

import dataclasses
import json
import operator
import types
import typing
from collections.abc import Sequence
from enum import Enum
from typing import Any

from hydracompute.core.models import Chunk, Credential, Job, Lease, Worker

#: One encoder for every JSON column (``json.dumps`` with arguments builds one per call).
_encode_json = json.JSONEncoder(separators=(",", ":")).encode
_decode_json = json.JSONDecoder().decode


def json_column(value: Any) -> str:
    # Most dict columns are empty on most writes (a chunk's failures).
    return "{}" if isinstance(value, dict) and not value else _encode_json(value)


def json_value(text: str) -> Any:
    return {} if text == "{}" else _decode_json(text)


def _enum_column(value: Enum) -> Any:
    return value.value


class Table:
    """Maps one dataclass to one table: every field is a column of the same name.

    Enum fields are stored as their value, booleans as integers, dicts and lists as JSON.
    The conversions are worked out once per table from the type hints: rows are read and
    written on every exchange. ``mark`` is the driver's parameter placeholder (``?`` for
    sqlite3, ``%s`` for psycopg): the PostgreSQL backend maps the same records the same way.
    """

    def __init__(
        self,
        name: str,
        cls: type[Any],
        key: tuple[str, ...],
        remembered: bool = False,
        mark: str = "?",
    ) -> None:
        self.name, self.cls, self.key = name, cls, key
        #: Rows kept in memory by the backend once written or read (see ``_remember``).
        self.remembered = remembered
        self._key_getter = operator.attrgetter(*key)
        hints = typing.get_type_hints(cls)
        self.fields = [f.name for f in dataclasses.fields(cls) if f.init]
        assert len(self.fields) == len(dataclasses.fields(cls)), "every field is a column"
        self._getter = operator.attrgetter(*self.fields)
        #: (column position, encoder, decoder) of the columns stored differently.
        self._codecs: list[tuple[int, Any, Any]] = []
        for position, field_name in enumerate(self.fields):
            hint = hints[field_name]
            if typing.get_origin(hint) is types.UnionType:  # X | None: decode as X
                hint = next(a for a in typing.get_args(hint) if a is not type(None))
            base = typing.get_origin(hint) or hint
            if isinstance(base, type) and issubclass(base, Enum):
                self._codecs.append((position, _enum_column, base))
            elif base in (dict, list):
                self._codecs.append((position, json_column, json_value))
            elif base is bool:
                self._codecs.append((position, int, bool))
        columns = ", ".join(f'"{f}"' for f in self.fields)
        marks = ", ".join(mark for _ in self.fields)
        # An update in place when the row exists (INSERT OR REPLACE would delete it and
        # insert it again, rewriting every index entry of the row).
        keys = ", ".join(f'"{k}"' for k in key)
        updates = ", ".join(f'"{f}" = excluded."{f}"' for f in self.fields if f not in key)
        self.upsert = (
            f"INSERT INTO {name} ({columns}) VALUES ({marks}) "
            f"ON CONFLICT ({keys}) DO UPDATE SET {updates}"
        )
        where = " AND ".join(f'"{k}" = {mark}' for k in key)
        self.select = f"SELECT {columns} FROM {name}"
        self.select_key = f"{self.select} WHERE {where}"

    def key_of(self, obj: Any) -> tuple[Any, ...]:
        key = self._key_getter(obj)
        return key if len(self.key) > 1 else (key,)

    def row(self, obj: Any) -> list[Any]:
        values = list(self._getter(obj))
        for position, encode, _ in self._codecs:
            if values[position] is not None:
                values[position] = encode(values[position])
        return values

    def record(self, row: Sequence[Any]) -> Any:
        values = list(row)
        for position, _, decode in self._codecs:
            if values[position] is not None:
                values[position] = decode(values[position])
        return self.cls(*values)


# Every exchange reads and writes its worker's row, and the lease and chunk of each result
# (written when the lease was granted): those rows are remembered.
WORKERS = Table("workers", Worker, ("worker_id",), remembered=True)
CREDENTIALS = Table("credentials", Credential, ("cred_id",))
JOBS = Table("jobs", Job, ("job_id",))
CHUNKS = Table("chunks", Chunk, ("job_id", "index"), remembered=True)
LEASES = Table("leases", Lease, ("lease_id",), remembered=True)
