"""The command group, its shared options and how errors become exit codes."""

from __future__ import annotations

import functools
import json
import logging
import math
import sys
from collections.abc import Callable
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

from hydracompute import __version__
from hydracompute.client import DEFAULT_URL, Client, JobFailed
from hydracompute.errors import CoordinatorUnavailable, HydraError

EXIT_JOB_FAILED, EXIT_UNREACHABLE, EXIT_REFUSED = 1, 3, 4
# soft_wrap: a line is never cut at the console's width (80 columns when not on a
# terminal), so a command or an id printed for copy-paste stays whole.
console = Console(soft_wrap=True)  # data: tables and answers
notes = Console(stderr=True, soft_wrap=True)  # errors, progress and remarks: never in --json
url_option = click.option(
    "--url",
    default=None,
    envvar="HYDRACOMPUTE_URL",
    help=f"Coordinator base URL (default: the login profile's, else {DEFAULT_URL}).",
)
api_key_option = click.option(
    "--api-key", default=None, envvar="HYDRACOMPUTE_API_KEY", help="An API key of the pool."
)
ca_fingerprint_option = click.option(
    "--ca-fingerprint",
    default=None,
    envvar="HYDRACOMPUTE_CA_FINGERPRINT",
    help="SHA-256 fingerprint of the coordinator's own certificate authority, to pin it.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


class FiniteFloat(click.FloatRange):
    """A float within optional bounds that is neither NaN nor infinite: JSON cannot carry
    those, and a bound is no defence against NaN (every comparison with it is false)."""

    name = "float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return super().convert(number, param, ctx)

    def _describe_range(self) -> str:
        return super()._describe_range() if (self.min, self.max) != (None, None) else "finite"


def print_json(data: Any) -> None:
    """``data`` as JSON on stdout (NaN or an infinity, which JSON cannot carry, as null)."""
    click.echo(json.dumps(_finite(data), indent=2, sort_keys=True))


def _finite(data: Any) -> Any:
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_finite(v) for v in data]
    return data


def print_table(table: Table) -> None:
    """Print ``table`` on stdout. Not on a terminal it is as wide as its content (rich
    would squeeze it into 80 columns, cutting ids and wrapping states)."""
    if not console.is_terminal:
        wide = console.options.update_width(10_000)
        table.width = Measurement.get(console, wide, table).maximum
    console.print(table)


def handle_errors(fn: Callable[..., None]) -> Callable[..., None]:
    """Turn Hydra errors into a message and the documented exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except JobFailed as exc:
            notes.print(f"[red]{escape(exc.detail)}[/red]")
            sys.exit(EXIT_JOB_FAILED)
        except CoordinatorUnavailable as exc:
            notes.print(f"[red]{escape(exc.detail)}[/red]")
            sys.exit(EXIT_UNREACHABLE)
        except HydraError as exc:
            notes.print(f"[red]{escape(f'{exc.title}: {exc.detail}')}[/red]")
            sys.exit(EXIT_REFUSED)

    return wrapper


def with_client(fn: Callable[..., None]) -> Callable[..., None]:
    """Add ``--url``, ``--api-key`` and ``--ca-fingerprint`` and pass an open ``client``.

    Each falls back on its environment variable, then on the saved login profile
    (:func:`hydracompute.connection.resolve`, as the Python client does).
    """

    @functools.wraps(fn)
    def wrapper(
        *args: Any,
        url: str | None,
        api_key: str | None,
        ca_fingerprint: str | None,
        **kwargs: Any,
    ) -> None:
        try:
            client = Client(url, api_key=api_key, ca_fingerprint=ca_fingerprint)
        except ValueError as exc:  # a malformed fingerprint, or one with an http:// URL
            raise click.BadParameter(str(exc), param_hint="--ca-fingerprint") from exc
        with client:
            fn(*args, client=client, **kwargs)

    for option in reversed([url_option, api_key_option, ca_fingerprint_option]):
        wrapper = option(wrapper)
    return wrapper


@click.group(context_settings={"auto_envvar_prefix": "HYDRACOMPUTE", "show_default": True})
@click.version_option(__version__, prog_name="hydracompute")
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning"]))
def main(log_level: str) -> None:
    """Hydra Compute: pool idle machines into one compute service."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
