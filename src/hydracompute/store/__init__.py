"""Persistence behind one interface: :class:`Store` over a memory or SQLite backend."""

from __future__ import annotations

from pathlib import Path

from hydracompute.core.carbon import IntensityView
from hydracompute.core.config import SchedulerConfig
from hydracompute.core.credit import CreditPolicy
from hydracompute.core.verification import VerificationPolicy
from hydracompute.kinds import KindRegistry
from hydracompute.store.backend import Backend
from hydracompute.store.memory import MemoryBackend
from hydracompute.store.pool import Store
from hydracompute.store.records import ExchangeOutcome, LeaseGrant, ResultReport
from hydracompute.store.sqlite import SQLiteBackend

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
    (``sqlite:////abs/path.db`` also works) or a plain file path.

    Raises:
        ValueError: an unsupported scheme.
    """
    if url == "memory://":
        return MemoryBackend()
    if url.startswith("sqlite://"):
        path = url.removeprefix("sqlite://")
        path = path.removeprefix("/") if not path.startswith("//") else path[1:]
        return SQLiteBackend(path or ":memory:")
    if "://" in url:
        raise ValueError(f"unsupported store URL {url!r}: use memory:// or sqlite:///PATH")
    return SQLiteBackend(Path(url))


def open_store(
    url: str,
    kinds: KindRegistry,
    config: SchedulerConfig,
    verification: VerificationPolicy | None = None,
    adaptive: bool = False,
    credit: CreditPolicy | None = None,
    carbon: IntensityView | None = None,
) -> Store:
    return Store(
        open_backend(url), kinds, config, verification, adaptive, credit=credit, carbon=carbon
    )
