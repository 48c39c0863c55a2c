"""What several coordinators on one database share besides jobs, workers and leases: the
pool's settings made once (its CA, the default join token, the session-signing secret), the
list of coordinators, a log of changes, and counters (failed sign-ins).

:class:`SharedPrimitives` is the part of :class:`~hydracompute.store.backend.Backend` that
keeps them; :class:`Change` and :class:`CoordinatorEntry` are its records. Like every
primitive, each runs inside the caller's transaction.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

from hydracompute.store.records import FinishedChunk


@dataclass(frozen=True)
class CoordinatorEntry:
    """One coordinator of the pool, as it registered itself."""

    coordinator_id: str
    #: The base URL workers and clients reach it at (what its join command prints).
    url: str
    started_s: float
    #: Its last heartbeat (its clock).
    seen_s: float


@dataclass(frozen=True)
class Change:
    """What one transaction of one coordinator changed, for the others to pass on to their
    long-polled workers, job-end waiters and dashboards.

    ``seq`` is given by the backend when the change is appended (0 before).
    """

    origin: str
    time_s: float
    #: Chunks became available to lease (held exchanges should look again).
    work: bool = False
    jobs: frozenset[str] = frozenset()
    ended: frozenset[str] = frozenset()
    chunks: tuple[FinishedChunk, ...] = ()
    seq: int = 0

    def body(self) -> str:
        """The change as stored (everything but ``seq``, ``origin`` and ``time_s``)."""
        return json.dumps(
            {
                "w": self.work,
                "j": sorted(self.jobs),
                "e": sorted(self.ended),
                "c": [[c.job_id, c.chunk_index, c.start, c.stop] for c in self.chunks],
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_row(cls, seq: int, origin: str, time_s: float, body: str) -> Change:
        data = json.loads(body)
        return cls(
            origin=origin,
            time_s=time_s,
            work=bool(data.get("w")),
            jobs=frozenset(data.get("j", ())),
            ended=frozenset(data.get("e", ())),
            chunks=tuple(FinishedChunk(*c) for c in data.get("c", ())),
            seq=seq,
        )


@dataclass
class ChangeCollector:
    """The changes of one transaction, gathered before they are appended as one."""

    work: bool = False
    jobs: set[str] = field(default_factory=set)
    ended: set[str] = field(default_factory=set)
    chunks: list[FinishedChunk] = field(default_factory=list)

    def add(
        self,
        work: bool = False,
        jobs: Iterable[str] = (),
        ended: Iterable[str] = (),
        chunks: Sequence[FinishedChunk] = (),
    ) -> None:
        self.work = self.work or work
        self.jobs.update(jobs)
        self.ended.update(ended)
        self.chunks.extend(chunks)

    def __bool__(self) -> bool:
        return bool(self.work or self.jobs or self.ended or self.chunks)

    def change(self, origin: str, now: float) -> Change:
        return Change(
            origin, now, self.work, frozenset(self.jobs), frozenset(self.ended), tuple(self.chunks)
        )


class SharedPrimitives(abc.ABC):
    """Primitives for what the coordinators of one pool share (see the module docstring)."""

    # settings made once
    @abc.abstractmethod
    def get_setting(self, name: str) -> str | None:
        """The pool setting ``name``, or ``None`` if it was never made."""

    @abc.abstractmethod
    def add_setting(self, name: str, value: str) -> str:
        """Keep ``value`` as setting ``name`` unless the setting exists already (made by
        another coordinator meanwhile: the first one wins); returns the value kept."""

    @abc.abstractmethod
    def put_setting(self, name: str, value: str) -> None:
        """Keep ``value`` as setting ``name``, replacing any (e.g. a revoked join token)."""

    # coordinators
    @abc.abstractmethod
    def put_coordinator(self, entry: CoordinatorEntry) -> None:
        """Register a coordinator, or record its heartbeat (replacing its entry)."""

    @abc.abstractmethod
    def list_coordinators(self, seen_since: float) -> list[CoordinatorEntry]:
        """Coordinators whose last heartbeat is at or after ``seen_since``, the longest
        running first."""

    @abc.abstractmethod
    def delete_coordinator(self, coordinator_id: str) -> None:
        """Remove a coordinator's entry (nothing happens if there is none)."""

    # the change log
    @abc.abstractmethod
    def append_change(self, change: Change) -> None:
        """Append ``change`` with the next ``seq``. Sequence numbers grow in commit order:
        a reader that has seen ``seq`` n never later finds a new change below n (a
        backend whose writers commit concurrently serialises appends, e.g. under a
        transaction-scoped lock)."""

    def change_waiter(self) -> Callable[[float], Awaitable[None]] | None:
        """For a backend that can push notifications (PostgreSQL's ``LISTEN``/``NOTIFY``):
        a coroutine function that returns once another connection committed a change, or
        after its argument in seconds at the latest; it runs on the coordinator's event
        loop. ``None`` (the default): the change log is only polled. Either way the log is
        what is read; a notification only ends the wait early (see
        :mod:`hydracompute.coordinator.changes`)."""
        return None

    @abc.abstractmethod
    def changes_after(self, seq: int, limit: int) -> list[Change]:
        """Changes with a ``seq`` above ``seq``, lowest first, at most ``limit``."""

    @abc.abstractmethod
    def last_change_seq(self) -> int:
        """The highest ``seq`` appended so far (0 if none is left)."""

    @abc.abstractmethod
    def delete_changes_before(self, time_s: float) -> None:
        """Forget the changes appended before ``time_s`` (by their ``time_s``)."""

    # counters (token buckets of failed sign-ins)
    @abc.abstractmethod
    def get_counter(self, key: str) -> tuple[float, float] | None:
        """Counter ``key``'s ``(value, updated_s)``, or ``None``."""

    @abc.abstractmethod
    def put_counter(self, key: str, value: float, updated_s: float) -> None: ...

    @abc.abstractmethod
    def delete_counters_before(self, updated_s: float) -> None:
        """Forget counters last updated before ``updated_s``."""
