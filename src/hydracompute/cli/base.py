"""The command group, its shared options and how errors become exit codes."""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from hydracompute import __version__
from hydracompute.client import DEFAULT_URL, Client, JobFailed
from hydracompute.errors import CoordinatorUnavailable, HydraError
from hydracompute.private_files import write_private

EXIT_JOB_FAILED, EXIT_UNREACHABLE, EXIT_REFUSED = 1, 3, 4
console = Console()  # data: tables and answers
notes = Console(stderr=True)  # errors, progress and remarks: never mixed into --json output
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


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True))


def handle_errors(fn: Callable[..., None]) -> Callable[..., None]:
    """Turn Hydra errors into a message and the documented exit code."""

    @functools.wraps(fn)
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

    return wrapper


def profile_path() -> Path:
    import platformdirs

    return Path(platformdirs.user_config_dir("hydracompute")) / "profile.json"


def load_profile() -> dict[str, str]:
    """What ``hydracompute login`` saved: url, api_key, ca_fingerprint (any may be absent)."""
    try:
        data = json.loads(profile_path().read_text())
    except (OSError, ValueError):
        return {}
    return {k: str(v) for k, v in data.items() if k in ("url", "api_key", "ca_fingerprint")}


def save_profile(profile: dict[str, str]) -> Path:
    path = profile_path()
    write_private(path, json.dumps(profile, indent=2))
    return path


def with_client(fn: Callable[..., None]) -> Callable[..., None]:
    """Add ``--url``, ``--api-key`` and ``--ca-fingerprint`` and pass an open ``client``.

    Each falls back on its environment variable, then on the saved login profile.
    """

    @functools.wraps(fn)
    def wrapper(
        *args: Any,
        url: str | None,
        api_key: str | None,
        ca_fingerprint: str | None,
        **kwargs: Any,
    ) -> None:
        profile = load_profile()
        url = (url or profile.get("url") or DEFAULT_URL).rstrip("/")
        # The profile's key and pin belong to its pool only.
        same_pool = url == profile.get("url", "").rstrip("/")
        api_key = api_key or (profile.get("api_key") if same_pool else None)
        ca_fingerprint = ca_fingerprint or (profile.get("ca_fingerprint") if same_pool else None)
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
