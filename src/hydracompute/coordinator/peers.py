"""The coordinators of one pool: each registers the URL it is reached at in the shared
store and renews it with a heartbeat. The live ones are what join commands list, and
their number decides whether changes must be written for the others (see
:mod:`.changes`)."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from hydracompute.store import Store
from hydracompute.store.shared import CoordinatorEntry

log = logging.getLogger("hydracompute.coordinator")
#: How often a coordinator renews its entry.
HEARTBEAT_S = 1.0
#: A coordinator not heard from for this long is no longer listed (nor written for).
ALIVE_S = 5.0
#: How often old changes and idle counters are pruned (by every coordinator).
PRUNE_PERIOD_S = 10.0


def new_coordinator_id() -> str:
    return "c-" + secrets.token_hex(6)


class Peers:
    """This coordinator's entry and what it knows of the others.

    Args:
        store: the shared store; its ``record_changes`` is turned on while other
            coordinators are alive, and off when this one is alone again.
        url: the base URL workers reach this coordinator at ("" if unknown).
        clock: seconds since the epoch.
    """

    def __init__(
        self,
        store: Store,
        url: str,
        clock: Callable[[], float],
        coordinator_id: str | None = None,
    ) -> None:
        self.store, self.url, self.clock = store, url, clock
        self.coordinator_id = coordinator_id or new_coordinator_id()
        self.started_s = clock()
        store.origin = self.coordinator_id
        #: The live coordinators at the last heartbeat (this one included).
        self.live: list[CoordinatorEntry] = []

    @property
    def shared(self) -> bool:
        """Whether other coordinators share the store (at the last heartbeat)."""
        return any(e.coordinator_id != self.coordinator_id for e in self.live)

    def urls(self) -> list[str]:
        """The URLs of the pool's live coordinators: this one first, then the others."""
        others = [e.url for e in self.live if e.coordinator_id != self.coordinator_id]
        return list(dict.fromkeys([u for u in [self.url, *others] if u]))

    def beat(self) -> list[CoordinatorEntry]:
        """Renew this coordinator's entry (on the store thread); the live ones."""
        entry = CoordinatorEntry(self.coordinator_id, self.url, self.started_s, self.clock())
        live = self.store.sharing.heartbeat(entry, ALIVE_S)
        self._update(live)
        return live

    def _update(self, live: list[CoordinatorEntry]) -> None:
        was = self.shared
        self.live = live
        self.store.record_changes = self.shared
        if self.shared and not was:
            log.info("%d other coordinator(s) share this store", len(live) - 1)
        elif was and not self.shared:
            log.info("no other coordinator shares this store any more")

    async def run(self, call: Callable[..., Awaitable[Any]]) -> None:
        """Beat every ``HEARTBEAT_S`` and prune now and then, until cancelled."""
        pruned = self.clock()
        while True:
            try:
                await call(self.beat)
                if self.clock() - pruned >= PRUNE_PERIOD_S:
                    pruned = self.clock()
                    await call(self.store.sharing.prune, pruned)
            except Exception:  # e.g. the store is unavailable for a while: beat again
                log.warning("renewing this coordinator's entry failed", exc_info=True)
            await asyncio.sleep(HEARTBEAT_S)

    def leave(self) -> None:
        """Remove this coordinator's entry (on the store thread, as it stops)."""
        self.store.sharing.leave(self.coordinator_id)
        self.store.record_changes = False
