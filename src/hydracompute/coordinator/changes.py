"""How a coordinator learns what the other coordinators of its pool changed.

One coordinator alone learns of every change in memory, as it makes it: its exchanges wake
its own long-polled workers, job-end waiters and dashboards directly (:class:`LocalFeed`,
nothing to read). Once other coordinators share its database, each appends what its
transactions changed to the store's change log (``Store.record_changes``) and follows the
others' entries with a :class:`PollingFeed`, which reads the log a few times a second and
passes each change on as if it had been made here.

The PostgreSQL hook: a backend that can push notifications (``LISTEN``/``NOTIFY``) returns,
from its ``change_waiter()`` (see :class:`~hydracompute.store.shared.SharedPrimitives`), a
``wait`` that returns as soon as a change is committed (its ``append_change`` issues
``pg_notify`` on the pool's channel in the same transaction, delivered on commit; a listening
connection sets an event) and at the latest after the period; the coordinator gives it
to its feed. Polling stays
the fallback and the source of truth: a notification only ends the wait early, the log
is read as before, so a lost notification costs at most one period.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from hydracompute.store.shared import Change
from hydracompute.store.sharing import PoolSharing

T = TypeVar("T")
log = logging.getLogger("hydracompute.coordinator")
#: How often the change log is read while the pool has other coordinators.
POLL_PERIOD_S = 0.25


class ChangeFeed(abc.ABC):
    """Delivers the changes other coordinators made, until cancelled."""

    @abc.abstractmethod
    async def run(self, deliver: Callable[[Change], None]) -> None:
        """Call ``deliver`` (on the event loop) with each change made elsewhere."""


class LocalFeed(ChangeFeed):
    """One coordinator alone: every change is made here, so there is nothing to read."""

    async def run(self, deliver: Callable[[Change], None]) -> None:
        await asyncio.Event().wait()  # until cancelled


class PollingFeed(ChangeFeed):
    """Reads the store's change log every ``period_s`` while ``active()`` says other
    coordinators share the database.

    Args:
        call: runs a store method on the coordinator's store thread.
        sharing: the store's shared state.
        origin: this coordinator's id (its own changes are skipped: already delivered).
        wait: sleeps up to its argument, or less when told of a change (the hook for
            pushed notifications; ``asyncio.sleep`` by default).
    """

    def __init__(
        self,
        call: Callable[..., Awaitable[Any]],
        sharing: PoolSharing,
        origin: str,
        active: Callable[[], bool],
        period_s: float = POLL_PERIOD_S,
        wait: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.call, self.sharing, self.origin = call, sharing, origin
        self.active, self.period_s, self.wait = active, period_s, wait

    async def run(self, deliver: Callable[[Change], None]) -> None:
        # From the position at start: changes made before are already in the store's state.
        seq: int | None = None
        while True:
            await self.wait(self.period_s)
            if seq is not None and not self.active():
                continue
            try:
                if seq is None:
                    seq = int(await self.call(self.sharing.last_change_seq))
                    continue
                seq, changes = await self.call(self.sharing.changes_after, seq)
            except Exception:  # the store is unavailable: try again at the next period
                log.warning("reading the pool's change log failed", exc_info=True)
                continue
            for change in changes:
                if change.origin != self.origin:
                    deliver(change)
