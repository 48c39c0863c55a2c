"""Persistence behind one interface: :class:`Store` over a memory, SQLite or PostgreSQL
backend (the last imported only when a ``postgresql://`` store is opened)."""

from __future__ import annotations

from hydracompute.core.carbon import IntensityView
from hydracompute.core.config import SchedulerConfig
from hydracompute.core.credit import CreditPolicy
from hydracompute.core.fairshare import FairSharePolicy
from hydracompute.core.verification import VerificationPolicy
from hydracompute.errors import StoreError
from hydracompute.kinds import KindRegistry
from hydracompute.store.backend import Backend
from hydracompute.store.location import StoreLocation, StoreScheme
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
    "StoreLocation",
    "open_backend",
    "open_store",
]


def open_backend(url: str | StoreLocation) -> Backend:
    """A backend from a store URL or location (see :mod:`hydracompute.store.location`).

    Raises:
        ValueError: an unsupported or malformed URL.
        StoreError: the store cannot be opened (a PostgreSQL server out of reach, say).
    """
    location = url if isinstance(url, StoreLocation) else StoreLocation.parse(url)
    if location.scheme is StoreScheme.MEMORY:
        return MemoryBackend()
    if location.scheme is StoreScheme.SQLITE:
        if location.busy_timeout_s is None:
            return SQLiteBackend(location.path)
        return SQLiteBackend(location.path, busy_timeout_s=location.busy_timeout_s)
    try:
        from hydracompute.store.postgres import PostgresBackend
    except ImportError as exc:  # the optional dependencies are missing
        raise StoreError(
            "a postgresql:// store needs psycopg: pip install 'hydracompute[postgresql]'"
        ) from exc
    return PostgresBackend(location.conninfo, location.schema)


def open_store(
    url: str | StoreLocation,
    kinds: KindRegistry,
    config: SchedulerConfig,
    verification: VerificationPolicy | None = None,
    adaptive: bool = False,
    credit: CreditPolicy | None = None,
    fair_share: FairSharePolicy | None = None,
    carbon: IntensityView | None = None,
) -> Store:
    return Store(
        open_backend(url),
        kinds,
        config,
        verification,
        adaptive,
        credit=credit,
        fair_share=fair_share,
        carbon=carbon,
    )
