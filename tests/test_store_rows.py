"""The row mapping of the SQL backends: rows written out by code made once per table give
exactly what the plain loops over the columns give, both ways; compact JSON as ``json``."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from hydracompute import jsonvalues
from hydracompute.core.carbon import CarbonMode
from hydracompute.core.models import (
    Chunk,
    ChunkState,
    Credential,
    CredentialKind,
    Job,
    JobState,
    Lease,
    LeaseState,
    Role,
    Worker,
)
from hydracompute.store.postgres import rows as postgres_rows
from hydracompute.store.sqlite_rows import (
    CHUNKS,
    CREDENTIALS,
    JOBS,
    LEASES,
    WORKERS,
    Table,
    json_column,
    json_value,
)

RECORDS: list[tuple[Table, Any]] = [
    (
        WORKERS,
        Worker(
            "w1",
            "laptop",
            4,
            ["pi", "sum"],
            "hash",
            1.0,
            2.5,
            speeds={"pi": 1.5e6},
            speed_evidence_s={"pi": 3.0},
            chunks_done=7,
            units_done={"pi": 12},
            left=True,
            token_id="t1",
            state="paused",
            state_reason="on battery",
            trust={"pi": 2},
            barred="",
            watts_per_core=None,
            labels=["trusted"],
            power_measured=True,
            grid_zone="DE",
        ),
    ),
    (WORKERS, Worker("w2", "", 1, [], "", 0.0, 0.0, watts_per_core=12.5)),
    (
        CHUNKS,
        Chunk(
            "j1",
            3,
            10,
            20,
            ChunkState.LEASED,
            failures=1,
            last_error="boom",
            failed_by={"w9": 4.5},
            quorum=2,
            wanted=2,
            holders={"w1": "t1", "w2": "t2"},
            reported=1,
            verified=True,
            disputed=False,
            unverified_by="w3",
        ),
    ),
    (CHUNKS, Chunk("j1", 0, 0, 1)),
    (
        LEASES,
        Lease(
            "l1",
            "j1",
            3,
            "w1",
            1.0,
            31.0,
            LeaseState.DONE,
            backup=True,
            output_digest="ab" * 32,
            compute_s=0.25,
            spot_check=True,
        ),
    ),
    (LEASES, Lease("l2", "j1", 4, "w2", 1.0, 31.0)),
    (
        JOBS,
        Job(
            "j1",
            "pi",
            {"samples": 10, "seed": 3},
            10,
            1.0,
            2.0,
            name="π",
            owner="k1",
            state=JobState.DONE,
            next_unit=10,
            chunks_carved=11,
            units_done=10,
            finished_s=9.0,
            error=None,
            answer={"estimate": 3.1},
            live={"hits": [1, 2]},
            replication=2,
            quorum=2,
            adaptive=True,
            reopened=1,
            priority=-3,
            required_labels=["gpu"],
            deadline_s=100.0,
            carbon=CarbonMode.PREFER_CLEAN,
            blind_gco2_per_kwh=321.0,
        ),
    ),
    (JOBS, Job("j2", "sum", {}, 1, 0.0, 1.0)),
    (
        CREDENTIALS,
        Credential("c1", CredentialKind.API_KEY, "ops", "h", 1.0, Role.ADMIN, 5.0, 3, 1, True, 2.0),
    ),
    (CREDENTIALS, Credential("c2", CredentialKind.JOIN_TOKEN, "", "h", 1.0)),
]


def _postgres_twin(table: Table) -> Table:
    return next(
        t for t in vars(postgres_rows).values() if isinstance(t, Table) and t.name == table.name
    )


@pytest.mark.parametrize("table, record", RECORDS, ids=lambda x: getattr(x, "name", ""))
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_written_out_rows_match_the_plain_mapping_both_ways(
    table: Table, record: Any, backend: str
) -> None:
    if backend == "postgres":
        table = _postgres_twin(table)
    row = table.row(record)
    assert row == table.plain_row(record)
    assert [type(v) for v in row] == [type(v) for v in table.plain_row(record)]
    for read in (row, tuple(row)):  # a remembered row (list) or one from the driver
        got, plain = table.record(read), table.plain_record(read)
        assert got == plain == record and got is not record
        assert list(vars(got).items()) == list(vars(plain).items())
        assert {k: type(v) for k, v in vars(got).items()} == {
            k: type(v) for k, v in vars(plain).items()
        }
    # A record read is the caller's to change: its dicts and lists are its own.
    first, second = table.record(row), table.record(row)
    for name, value in vars(first).items():
        if isinstance(value, dict | list):
            assert value is not getattr(second, name)


def test_an_unknown_enum_value_in_a_row_is_refused_as_before() -> None:
    row = LEASES.row(Lease("l", "j", 0, "w", 0.0, 1.0))
    row[LEASES.fields.index("state")] = "no-such-state"
    with pytest.raises(ValueError):
        LEASES.plain_record(row)
    with pytest.raises(ValueError):
        LEASES.record(row)


VALUES: list[Any] = [
    {},
    [],
    {"b": 1.5, "a": [1, 2, "xé", None, True, False], "c": {"z": -0.0, "y": 1e300}},
    ["pi"],
    "text",
    7,
    None,
    {"n": math.nan, "i": -math.inf},
    {"big": 10**30, "small": 0.1},
    (1, 2),
]


@pytest.mark.parametrize("value", VALUES)
def test_compact_and_canonical_json_are_what_json_dumps_writes(value: Any) -> None:
    assert jsonvalues.compact(value) == json.dumps(value, separators=(",", ":"))
    canonical = json.dumps(value, separators=(",", ":"), sort_keys=True)
    assert jsonvalues.canonical(value) == canonical
    text = json.dumps(value)
    assert repr(jsonvalues.parsed(text)) == repr(json.loads(text))


@pytest.mark.parametrize("text", [" {}", '{"a": 1} ', "{bad", "", "[1] [2]"])
def test_parsing_odd_text_behaves_as_json_loads(text: str) -> None:
    try:
        expected: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        with pytest.raises(json.JSONDecodeError) as raised:
            jsonvalues.parsed(text)
        assert str(raised.value) == str(exc)
    else:
        assert jsonvalues.parsed(text) == expected


def test_a_value_json_cannot_write_is_refused_as_json_refuses_it() -> None:
    with pytest.raises(TypeError, match="not JSON serializable"):
        jsonvalues.compact({"a": object()})


@pytest.mark.parametrize("value", [{}, [], {"a": 1}, ["x"], (), "", 0, None])
def test_json_columns_are_compact_json_and_read_back(value: Any) -> None:
    text = json_column(value)
    assert text == json.dumps(value, separators=(",", ":"))
    assert json_value(text) == json.loads(text)
    assert json_value(text) is not json_value(text) or not isinstance(json_value(text), dict | list)
