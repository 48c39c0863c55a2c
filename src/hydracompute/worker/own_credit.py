"""A worker's own credit, asked of its coordinator for ``hydracompute worker status``."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import httpx

from hydracompute import tls
from hydracompute.worker.link import load_identity
from hydracompute.worker.pinning import kept_ca, pinned_ca_path

#: How long ``worker status`` waits for the coordinator before it says so.
TIMEOUT_S = 3.0


def own_credit(identity_file: Path, timeout_s: float = TIMEOUT_S) -> dict[str, Any] | str:
    """The credit the coordinator's ledger holds for the worker whose identity this is
    (``{"chunks", "work", "credit", "energy_kwh", ...}``), or why it could not be asked."""
    identity = load_identity(identity_file)
    if not identity or not identity.get("secret") or not identity.get("url"):
        return "not enrolled yet"
    url, worker_id = str(identity["url"]), str(identity["worker_id"])
    verify: ssl.SSLContext | bool = True
    if url.lower().startswith("https://"):
        pem = kept_ca(pinned_ca_path(identity_file))
        if pem is not None:
            verify = tls.pinned_context(pem)
    try:
        response = httpx.get(
            f"{url}/api/v1/workers/{worker_id}/credit",
            headers={"Authorization": f"Bearer {identity['secret']}"},
            verify=verify,
            timeout=timeout_s,
        )
    except httpx.HTTPError as exc:
        return f"coordinator unreachable ({exc.__class__.__name__})"
    if response.status_code != 200:
        return f"the coordinator answered {response.status_code}"
    answer: dict[str, Any] = response.json()
    return answer


def credit_line(credit: dict[str, Any] | str) -> str:
    """A line of ``worker status`` about the worker's credit."""
    if isinstance(credit, str):
        return f"Credit: unknown: {credit}"
    return (
        f"Credit: {credit['credit']:,.0f} for {credit['chunks']} verified chunk(s), "
        f"{credit['energy_kwh'] * 1000:.3g} Wh estimated"
    )
