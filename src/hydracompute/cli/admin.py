"""Commands for the pool's admin: API keys, join tokens, revoking workers; and ``login``."""

from __future__ import annotations

import re
import sys
from datetime import datetime
from typing import Any

import click
from rich.table import Column, Table

from hydracompute.cli.base import (
    FiniteFloat,
    api_key_option,
    ca_fingerprint_option,
    handle_errors,
    json_option,
    main,
    notes,
    print_json,
    print_table,
    with_client,
)
from hydracompute.cli.jobs import workers_group
from hydracompute.client import Client
from hydracompute.connection import save_profile
from hydracompute.core.fairshare import MAX_WEIGHT, MIN_WEIGHT
from hydracompute.errors import Unauthorized

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str | None) -> float | None:
    """``"90"`` or ``"90s"``, ``"30m"``, ``"12h"``, ``"7d"`` in seconds; ``None`` stays ``None``.

    Raises:
        click.BadParameter: anything else.
    """
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not match:
        raise click.BadParameter(f"{text!r} is not a duration like 90s, 30m, 12h or 7d")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def _show(credentials: list[dict[str, Any]], as_json: bool, uses: bool) -> None:
    """Credentials as JSON or a table; ``uses``: join tokens, shown with how many workers
    enrolled with each, where API keys have a role (and their uses are not counted)."""
    if as_json:
        print_json(credentials)
        return
    third_column = "uses" if uses else "role (weight)"
    table = Table(Column("id", no_wrap=True), "name", third_column, "expires", "revoked")
    for c in credentials:
        if not uses:
            weight = c.get("weight") or 1.0
            third = (c["role"] or "") + (f" ({weight:g})" if weight != 1.0 else "")
        elif c.get("max_uses"):
            third = f"{c['uses']}/{c['max_uses']}"
        else:
            third = str(c["uses"])
        expires = (
            "never"
            if c["expires_s"] is None
            else datetime.fromtimestamp(c["expires_s"]).isoformat(sep=" ", timespec="minutes")
        )
        table.add_row(c["id"], c["name"], third, expires, "yes" if c["revoked"] else "")
    print_table(table)


def _issued(answer: dict[str, Any], what: str, as_json: bool) -> None:
    if as_json:
        print_json(answer)
        return
    notes.print(f"{what} {answer['id']} (shown once, keep it safe):")
    click.echo(answer["secret"])


WEIGHT = FiniteFloat(MIN_WEIGHT, MAX_WEIGHT)


@main.group()
def key() -> None:
    """Create, list and revoke API keys (admin)."""


@key.command("create")
@click.option("--role", required=True, type=click.Choice(["admin", "submitter", "viewer"]))
@click.option("--name", default="", help="A note saying who or what the key is for.")
@click.option("--expires-in", default=None, help="e.g. 12h or 30d (default: never).")
@click.option("--weight", default=1.0, type=WEIGHT, help="Share of the pool against others' 1.")
@json_option
@handle_errors
@with_client
def key_create(
    role: str, name: str, expires_in: str | None, weight: float, client: Client, as_json: bool
) -> None:
    """Issue an API key with a role (and, for a submitter, a weight in the fair share)."""
    body = {"role": role, "name": name, "expires_in_s": parse_duration(expires_in)}
    if weight != 1.0:
        body["weight"] = weight
    _issued(client.request("POST", "/api/v1/keys", json=body).json(), "API key", as_json)


@key.command("weight")
@click.argument("key_id")
@click.argument("weight", type=WEIGHT)
@json_option
@handle_errors
@with_client
def key_weight(key_id: str, weight: float, client: Client, as_json: bool) -> None:
    """Set a key's weight in the fair share between submitters: its jobs get WEIGHT parts
    of the pool where each other submitter gets its own weight (1 by default)."""
    answer = client.request("PUT", f"/api/v1/keys/{key_id}/weight", json={"weight": weight})
    if as_json:
        print_json(answer.json())
    else:
        notes.print(f"{key_id} now has weight {weight:g}")


@key.command("list")
@json_option
@handle_errors
@with_client
def key_list(client: Client, as_json: bool) -> None:
    """List API keys (never their secrets)."""
    _show(client.request("GET", "/api/v1/keys").json()["credentials"], as_json, uses=False)


@key.command("revoke")
@click.argument("key_id")
@handle_errors
@with_client
def key_revoke(key_id: str, client: Client) -> None:
    """Revoke an API key: refused from its next request on."""
    client.request("POST", f"/api/v1/keys/{key_id}/revoke")
    notes.print(f"revoked {key_id}")


@main.group()
def token() -> None:
    """Create, list and revoke join tokens for workers (admin)."""


@token.command("create")
@click.option("--name", default="", help="A note saying who the token is for.")
@click.option("--expires-in", default=None, help="e.g. 12h or 30d (default: never).")
@click.option(
    "--uses",
    "max_uses",
    default=None,
    type=click.IntRange(1, 10**6),
    help="How many workers may enrol with it (default: any number).",
)
@json_option
@handle_errors
@with_client
def token_create(
    name: str, expires_in: str | None, max_uses: int | None, client: Client, as_json: bool
) -> None:
    """Issue a join token."""
    body = {"name": name, "expires_in_s": parse_duration(expires_in), "max_uses": max_uses}
    _issued(client.request("POST", "/api/v1/join-tokens", json=body).json(), "Join token", as_json)


@token.command("list")
@json_option
@handle_errors
@with_client
def token_list(client: Client, as_json: bool) -> None:
    """List join tokens (never their secrets)."""
    _show(client.request("GET", "/api/v1/join-tokens").json()["credentials"], as_json, uses=True)


@token.command("revoke")
@click.argument("token_id")
@handle_errors
@with_client
def token_revoke(token_id: str, client: Client) -> None:
    """Revoke a join token: no worker can enrol with it any more."""
    client.request("POST", f"/api/v1/join-tokens/{token_id}/revoke")
    notes.print(f"revoked {token_id}")


@main.command("revoke-worker")
@click.argument("worker_id")
@handle_errors
@with_client
def revoke_worker(worker_id: str, client: Client) -> None:
    """Shut a worker out of the pool; its chunks go to other workers."""
    client.request("POST", f"/api/v1/workers/{worker_id}/revoke")
    notes.print(f"revoked {worker_id}")


@workers_group.command("remove")
@click.argument("worker_id")
@handle_errors
@with_client
def workers_remove(worker_id: str, client: Client) -> None:
    """Remove a worker from the pool (admin): its chunks go to other workers and it leaves
    the list. Started again, it needs a join token to enrol anew."""
    client.request("DELETE", f"/api/v1/workers/{worker_id}")
    notes.print(f"removed {worker_id}")


@workers_group.command("label")
@click.argument("worker_id")
@click.argument("labels", nargs=-1, metavar="LABEL...")
@click.option("--remove", is_flag=True, help="Take the labels away instead.")
@handle_errors
@with_client
def workers_label(worker_id: str, labels: tuple[str, ...], remove: bool, client: Client) -> None:
    """Give a worker labels (admin), e.g. 'trusted': jobs submitted with --require-label
    go only to workers carrying theirs. Labels are your word on a machine, not a check of
    it (docs/security.md)."""
    if not labels:
        raise click.UsageError("name at least one label")
    worker = (
        client.label_worker(worker_id, remove=labels)
        if remove
        else client.label_worker(worker_id, add=labels)
    )
    notes.print(f"{worker_id}: {', '.join(worker['labels']) or 'no labels'}")


@main.command()
@click.argument("url")
@api_key_option
@ca_fingerprint_option
@handle_errors
def login(url: str, api_key: str | None, ca_fingerprint: str | None) -> None:
    """Check an API key against the coordinator at URL and save it as the default profile,
    so that other commands need no --url, --api-key or --ca-fingerprint."""
    if not api_key:
        api_key = _read_key()
    try:
        client = Client(url, api_key=api_key, ca_fingerprint=ca_fingerprint)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--ca-fingerprint") from exc
    with client:
        me = client.request("GET", "/api/v1/session").json()
    if not me.get("signed_in", True) or not me.get("key_id"):
        raise Unauthorized(f"the coordinator at {url} does not accept that API key")
    profile = {"url": url.rstrip("/"), "api_key": api_key}
    if ca_fingerprint:
        profile["ca_fingerprint"] = ca_fingerprint
    path = save_profile(profile)
    notes.print(f"signed in to {url} as {me['key_id']} ({me['role']}); saved in {path}")


def _read_key() -> str:
    """The API key typed without echo on a terminal, or the first line of what is piped in
    (``getpass`` would warn that it cannot hide the input)."""
    if sys.stdin.isatty():
        return str(click.prompt("API key", hide_input=True)).strip()
    key = sys.stdin.readline().strip()
    if not key:
        raise click.UsageError("no API key: give --api-key, or pipe the key in")
    return key
