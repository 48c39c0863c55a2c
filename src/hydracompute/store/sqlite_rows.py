"""How the SQLite backend's records map to rows: every field of a record's dataclass is a
column of its table, converted on the way in and out (enums as their value, booleans as
integers, dicts and lists as JSON)."""

from __future__ import annotations

import dataclasses
import operator
import types
import typing
from collections.abc import Callable, Sequence
from enum import Enum
from typing import Any

from hydracompute import jsonvalues
from hydracompute.core.models import Chunk, Credential, Job, Lease, Worker


def json_column(value: Any) -> str:
    # Most dict and list columns are empty on most writes (a chunk's failures, a worker's
    # labels).
    if not value and type(value) in _EMPTY:
        return _EMPTY[type(value)]
    return jsonvalues.compact(value)


def json_value(text: str) -> Any:
    if text == "{}":
        return {}
    return [] if text == "[]" else jsonvalues.parsed(text)


_EMPTY: dict[type, str] = {dict: "{}", list: "[]"}


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
        #: The row of a record, its columns in :attr:`fields` order (:meth:`plain_row`).
        self.row: Callable[[Any], list[Any]]
        #: The record a row holds, a new object the caller may change (:meth:`plain_record`).
        self.record: Callable[[Sequence[Any]], Any]
        self.row, self.record = self._compiled()
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

    def plain_row(self, obj: Any) -> list[Any]:
        """What :attr:`row` gives, by a loop over the columns stored differently."""
        values = list(self._getter(obj))
        for position, encode, _ in self._codecs:
            if values[position] is not None:
                values[position] = encode(values[position])
        return values

    def plain_record(self, row: Sequence[Any]) -> Any:
        """What :attr:`record` gives, by a loop (and ``__init__``)."""
        values = list(row)
        for position, _, decode in self._codecs:
            if values[position] is not None:
                values[position] = decode(values[position])
        return self.cls(*values)

    def _compiled(self) -> tuple[Callable[[Any], list[Any]], Callable[[Sequence[Any]], Any]]:
        """:attr:`row` and :attr:`record` written out for this table's columns, as
        :mod:`dataclasses` writes ``__init__``: the loops above run for every row read or
        written, three of each per exchange. Same results; a record is made without
        running ``__init__`` (which only assigns its fields) unless the class has a
        ``__post_init__``."""
        space: dict[str, Any] = {
            "getter": self._getter,
            "cls": self.cls,
            "new": object.__new__,
            "json_column": json_column,
            "json_value": json_value,
        }
        encoded, decoded = [], []
        codecs = {position: decode for position, _, decode in self._codecs}
        for position in range(len(self.fields)):
            value = f"v[{position}]"
            decode = codecs.get(position)
            if decode is None:
                encoded.append(value)
                decoded.append(value)
                continue
            if decode is json_value:
                encode_text, decode_text = f"json_column({value})", f"json_value({value})"
            elif decode is bool:
                encode_text, decode_text = f"int({value})", f"bool({value})"
            else:  # an enum: its value, and back by its table of values (Enum() does so)
                space[f"enum_{position}"] = decode
                space[f"members_{position}"] = decode._value2member_map_
                encode_text = f"{value}._value_"
                decode_text = (
                    f"members_{position}[{value}] if {value} in members_{position} "
                    f"else enum_{position}({value})"
                )
            encoded.append(f"None if {value} is None else {encode_text}")
            decoded.append(f"None if {value} is None else ({decode_text})")
        if len(self.fields) == 1:
            row_source = f"def row(obj):\n    v = (getter(obj),)\n    return [{encoded[0]}]\n"
        else:
            row_source = (
                "def row(obj):\n    v = getter(obj)\n    return [" + ", ".join(encoded) + "]\n"
            )
        if hasattr(self.cls, "__post_init__"):
            record_source = "def record(v):\n    return cls(" + ", ".join(decoded) + ")\n"
        else:
            items = ", ".join(
                f"{name!r}: {d}" for name, d in zip(self.fields, decoded, strict=True)
            )
            record_source = (
                "def record(v):\n    obj = new(cls)\n    obj.__dict__.update({"
                + items
                + "})\n    return obj\n"
            )
        exec(row_source + record_source, space)  # our own text, as dataclasses do
        return space["row"], space["record"]


# Every exchange reads and writes its worker's row, and the lease and chunk of each result
# (written when the lease was granted): those rows are remembered.
WORKERS = Table("workers", Worker, ("worker_id",), remembered=True)
CREDENTIALS = Table("credentials", Credential, ("cred_id",))
JOBS = Table("jobs", Job, ("job_id",))
CHUNKS = Table("chunks", Chunk, ("job_id", "index"), remembered=True)
LEASES = Table("leases", Lease, ("lease_id",), remembered=True)
