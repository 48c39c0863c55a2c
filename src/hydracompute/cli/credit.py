"""``hydracompute credit``: the payout statement a pool operator pays from (admin)."""

from __future__ import annotations

import csv
import sys
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import click
from rich.table import Column, Table

from hydracompute.cli.admin import parse_duration
from hydracompute.cli.base import (
    FiniteFloat,
    handle_errors,
    json_option,
    main,
    notes,
    print_json,
    print_table,
    with_client,
)
from hydracompute.client import Client

#: The statement's columns, as the CSV and the table show them.
COLUMNS = (
    "key",
    "name",
    "chunks",
    "work",
    "credit",
    "energy_kwh",
    "payout",
    "gco2",
    "gco2_blind",
)


def parse_time(text: str | None, now: float) -> float | None:
    """``2026-12-01``, ``2026-12-01T08:00`` (UTC unless it says otherwise) or a duration
    ago (``7d``, ``12h``) in seconds since the epoch; ``None`` stays ``None``.

    Raises:
        click.BadParameter: anything else.
    """
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        try:
            ago = parse_duration(text)
        except click.BadParameter:
            raise click.BadParameter(
                f"{text!r} is neither a date (2026-12-01, 2026-12-01T08:00) nor a duration "
                "ago (7d, 12h)"
            ) from None
        return now - (ago or 0.0)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def _cells(line: dict[str, Any]) -> list[str]:
    """A statement line as text: exact decimals, so that the lines add up."""
    return [
        line["key"],
        line["name"],
        str(line["chunks"]),
        _number(line["work"]),
        _number(line["credit"]),
        f"{line['energy_kwh']:.6f}",
        f"{Decimal(line['payout_micros']) / 1_000_000:.6f}",
        f"{line.get('gco2', 0.0):.3f}",
        f"{line.get('gco2_blind', 0.0):.3f}",
    ]


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.6f}"


def _rows(answer: dict[str, Any]) -> list[list[str]]:
    """The lines, then the total line: the sum of the lines' cells as printed (the payout is
    exact; the energy's rounding to 6 decimals is summed as printed)."""
    rows = [_cells(line) for line in answer["lines"]]
    total = ["total", "", str(answer["total"]["chunks"])]
    for column in range(3, len(COLUMNS)):
        summed = sum((Decimal(row[column]) for row in rows), Decimal(0))
        if column >= len(COLUMNS) - 2:  # grams of CO2
            total.append(f"{summed:.3f}")
        else:
            total.append(f"{summed:.6f}" if column >= 5 else _number(float(summed)))
    return [*rows, total]


@main.command("credit")
@click.option(
    "--by",
    type=click.Choice(["worker", "volunteer"]),
    default="volunteer",
    help="One line per worker, or per volunteer (the join token its workers enrolled with).",
)
@click.option("--since", default=None, help="From: a date (2026-12-01), or a duration ago (7d).")
@click.option("--until", default=None, help="Until (excluded): a date, or a duration ago.")
@click.option(
    "--rate-per-kwh",
    default=0.30,
    type=FiniteFloat(0, 1000),
    help="What one kWh of a volunteer's electricity is paid, in your currency.",
)
@json_option
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV (a spreadsheet's input).")
@handle_errors
@with_client
def credit(
    by: str,
    since: str | None,
    until: str | None,
    rate_per_kwh: float,
    as_json: bool,
    as_csv: bool,
    client: Client,
) -> None:
    """The credit each volunteer (or worker) earned for verified work, the energy it spent
    and what that is paid at --rate-per-kwh: a payout statement (admin)."""
    if as_json and as_csv:
        raise click.UsageError("--json and --csv go alone: give one")
    now = datetime.now(UTC).timestamp()
    params: dict[str, Any] = {"by": by, "rate_per_kwh": rate_per_kwh}
    since_s, until_s = parse_time(since, now), parse_time(until, now)
    if since_s is not None and until_s is not None and until_s < since_s:
        raise click.BadParameter("is before --since", param_hint="--until")
    if since_s is not None:
        params["since_s"] = since_s
    if until_s is not None:
        params["until_s"] = until_s
    answer = client.request("GET", "/api/v1/credit", params=params).json()
    if as_json:
        print_json(answer)
        return
    rows = _rows(answer)
    if as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(rows)
        return
    table = Table(
        Column("id", no_wrap=True),
        "name",
        *(Column(name, justify="right") for name in COLUMNS[2:]),
    )
    for row in rows:
        table.add_row(*row)
    print_table(table)
    notes.print(
        f"{answer['watts_per_core']} W per core, {rate_per_kwh} per kWh; credit is the work "
        "of verified chunks (docs/credit.md)"
    )
