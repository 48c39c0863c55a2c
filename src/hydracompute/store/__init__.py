"""Persistence behind one interface: :class:`Store` over a memory or SQLite backend."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl

from hydracompute.core.config import SchedulerConfig
from hydracompute.core.credit import CreditPolicy
from hydracompute.core.verification import VerificationPolicy
from hydracompute.kinds import KindRegistry
from hydracompute.store.backend import Backend
from hydracompute.store.memory import MemoryBackend
from hydracompute.store.pool import Store
from hydracompute.store.records import ExchangeOutcome, LeaseGrant, ResultReport
from hydracompute.store.sqlite import BUSY_TIMEOUT_S, SQLiteBackend

__all__ = [
    "Backend",
    "ExchangeOutcome",
    "LeaseGrant",
    "MemoryBackend",
    "ResultReport",
    "SQLiteBackend",
    "Store",
    "open_backend",
    "open_store",
]


def open_backend(url: str) -> Backend:
    """A backend from a URL: ``memory://``, ``sqlite:///relative/or/absolute/path.db``
    (``sqlite:////abs/path.db`` also works) or a plain file path. A SQLite URL may end in
    ``?busy_timeout_s=S``: how long a transaction waits for another process's write lock
    before the coordinator answers 503 (0.01 to 600; 10 by default).

    Raises:
        ValueError: an unsupported scheme or option.
    """
    if url == "memory://":
        return MemoryBackend()
    if url.startswith("sqlite://"):
        path, _, query = url.removeprefix("sqlite://").partition("?")
        path = path.removeprefix("/") if not path.startswith("//") else path[1:]
        return SQLiteBackend(path or ":memory:", busy_timeout_s=_busy_timeout_s(query))
    if "://" in url:
        raise ValueError(f"unsupported store URL {url!r}: use memory:// or sqlite:///PATH")
    return SQLiteBackend(Path(url))


def _busy_timeout_s(query: str) -> float:
    """The ``busy_timeout_s`` of a SQLite URL's query (the default if absent)."""
    options = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
    unknown = set(options) - {"busy_timeout_s"}
    if unknown:
        raise ValueError(f"unknown SQLite store option(s): {', '.join(sorted(unknown))}")
    if "busy_timeout_s" not in options:
        return BUSY_TIMEOUT_S
    try:
        timeout = float(options["busy_timeout_s"])
    except ValueError:
        timeout = -1.0
    if not 0.01 <= timeout <= 600:
        raise ValueError("busy_timeout_s must be a number of seconds between 0.01 and 600")
    return timeout


def open_store(
    url: str,
    kinds: KindRegistry,
    config: SchedulerConfig,
    verification: VerificationPolicy | None = None,
    adaptive: bool = False,
    credit: CreditPolicy | None = None,
) -> Store:
    return Store(open_backend(url), kinds, config, verification, adaptive, credit=credit)
