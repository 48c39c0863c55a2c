"""What the coordinators of one pool share through the store, above the backend's
primitives (:class:`~hydracompute.store.shared.SharedPrimitives`).

- **Settings made once**: the first coordinator to start on a database makes the pool's CA,
  default join token and session-signing secret; later ones, on this database, reuse them
  (:meth:`PoolSharing.setting_once`: the first writer wins).
- **Coordinators**: each registers the URL it is reached at and renews it with a heartbeat;
  the live ones are the pool's coordinators (every one's join command lists them all).
- **Changes**: while several coordinators share the database, each appends what its
  transactions changed (see :class:`~hydracompute.store.pool.Store`), and the others read
  them to wake their long-polled workers, job-end waiters and dashboards.
- **Failed sign-ins**: counted per address in one token bucket for the whole pool.

Every method is one transaction (or part of the caller's).
"""

from __future__ import annotations

from hydracompute.core.buckets import refill, retry_after_s
from hydracompute.errors import TooManyRequests
from hydracompute.store.backend import Backend
from hydracompute.store.shared import Change, CoordinatorEntry

#: Changes are kept this long for coordinators to read (they read several times a second;
#: one that falls further behind starts again from the newest, see ``changes_after``).
CHANGES_KEPT_S = 60.0
#: Counters untouched for this long are forgotten (a full bucket needs no row).
COUNTERS_KEPT_S = 3600.0
#: Changes read per call at most.
CHANGES_READ = 1000


class PoolSharing:
    """The shared settings, coordinators, changes and counters kept by ``backend``."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def setting(self, name: str) -> str | None:
        with self.backend.transaction():
            return self.backend.get_setting(name)

    def setting_once(self, name: str, value: str) -> str:
        """Keep ``value`` as the pool's setting ``name`` unless one exists; the one kept."""
        with self.backend.transaction():
            return self.backend.add_setting(name, value)

    def replace_setting(self, name: str, value: str) -> None:
        with self.backend.transaction():
            self.backend.put_setting(name, value)

    def heartbeat(self, entry: CoordinatorEntry, alive_s: float) -> list[CoordinatorEntry]:
        """Record that the coordinator of ``entry`` is alive at ``entry.seen_s``; returns
        every coordinator heard from within ``alive_s`` (itself included)."""
        with self.backend.transaction():
            self.backend.put_coordinator(entry)
            return self.backend.list_coordinators(entry.seen_s - alive_s)

    def coordinators(self, now: float, alive_s: float) -> list[CoordinatorEntry]:
        """The coordinators heard from within ``alive_s``, the longest running first."""
        with self.backend.transaction():
            return self.backend.list_coordinators(now - alive_s)

    def leave(self, coordinator_id: str) -> None:
        """A coordinator stops: it is no longer one of the pool's."""
        with self.backend.transaction():
            self.backend.delete_coordinator(coordinator_id)

    def last_change_seq(self) -> int:
        with self.backend.transaction():
            return self.backend.last_change_seq()

    def changes_after(self, seq: int) -> tuple[int, list[Change]]:
        """The changes after ``seq`` (at most ``CHANGES_READ``) and the position to read
        from next. A reader whose position is no longer kept (it fell more than
        ``CHANGES_KEPT_S`` behind) skips to the newest: what it missed is lost as a
        notification only, never as state."""
        with self.backend.transaction():
            changes = self.backend.changes_after(seq, CHANGES_READ)
            if changes:
                return changes[-1].seq, changes
            return max(seq, self.backend.last_change_seq()), []

    def prune(self, now: float) -> None:
        """Forget changes every reader has had time to read, and idle counters."""
        with self.backend.transaction():
            self.backend.delete_changes_before(now - CHANGES_KEPT_S)
            self.backend.delete_counters_before(now - COUNTERS_KEPT_S)

    def check_bucket(self, key: str, now: float, rate_per_s: float, burst: float) -> None:
        """Raise if the shared bucket ``key`` has nothing left, spending nothing.

        Raises:
            TooManyRequests: it is empty (``retry_after_s`` says for how long).
        """
        with self.backend.transaction():
            found = self.backend.get_counter(key)
        if found is None:
            return
        tokens = refill(found[0], found[1], now, rate_per_s, burst)
        if tokens < 1:
            raise TooManyRequests(
                "too many failed attempts; retry later",
                retry_after_s=retry_after_s(tokens, rate_per_s),
            )

    def spend(self, key: str, now: float, rate_per_s: float, burst: float) -> float:
        """Spend one token of the shared bucket ``key``; returns what is left."""
        with self.backend.transaction():
            found = self.backend.get_counter(key)
            tokens = burst if found is None else refill(*found, now, rate_per_s, burst)
            tokens = max(tokens - 1, 0.0)
            self.backend.put_counter(key, tokens, now)
        return tokens
