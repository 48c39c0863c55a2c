"""The command group, its shared options and how errors become exit codes."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from typing import Any

import click
from rich.console import Console

from hydracompute import __version__
from hydracompute.client import DEFAULT_URL, JobFailed
from hydracompute.errors import CoordinatorUnavailable, HydraError

EXIT_JOB_FAILED, EXIT_UNREACHABLE, EXIT_REFUSED = 1, 3, 4
console = Console()  # data: tables and answers
notes = Console(stderr=True)  # errors, progress and remarks: never mixed into --json output
url_option = click.option(
    "--url",
    default=DEFAULT_URL,
    envvar="HYDRACOMPUTE_URL",
    show_default=True,
    help="Coordinator base URL.",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def handle_errors(fn: Callable[..., None]) -> Callable[..., None]:
    """Turn Hydra errors into a message and the documented exit code."""

    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except JobFailed as exc:
            notes.print(f"[red]{exc.detail}[/red]")
            sys.exit(EXIT_JOB_FAILED)
        except CoordinatorUnavailable as exc:
            notes.print(f"[red]{exc.detail}[/red]")
            sys.exit(EXIT_UNREACHABLE)
        except HydraError as exc:
            notes.print(f"[red]{exc.title}: {exc.detail}[/red]")
            sys.exit(EXIT_REFUSED)

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
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
