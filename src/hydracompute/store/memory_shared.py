"""The shared-state primitives (:mod:`hydracompute.store.shared`) in memory: one process
only, but the same contract, so that the store's logic above them is the same."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from hydracompute.store.shared import Change, CoordinatorEntry, SharedPrimitives


class MemoryShared(SharedPrimitives):
    """Mixed into :class:`~hydracompute.store.memory.MemoryBackend`, which provides the
    undo-logged ``_put`` and ``_delete`` and the ``_undo`` log."""

    _undo: list[Callable[[], None]] | None
    _put: Callable[[dict[Any, Any], Any, Any], None]
    _delete: Callable[[dict[Any, Any], Any], None]

    def _init_shared(self) -> None:
        self._settings: dict[str, str] = {}
        self._coordinators: dict[str, CoordinatorEntry] = {}
        self._changes: dict[int, Change] = {}
        self._change_seq = {"last": 0}  # a table of one, so that an undo restores it
        self._counters: dict[str, tuple[float, float]] = {}

    def get_setting(self, name: str) -> str | None:
        return self._settings.get(name)

    def add_setting(self, name: str, value: str) -> str:
        if name not in self._settings:
            self._put(self._settings, name, value)
        return self._settings[name]

    def put_setting(self, name: str, value: str) -> None:
        self._put(self._settings, name, value)

    def put_coordinator(self, entry: CoordinatorEntry) -> None:
        self._put(self._coordinators, entry.coordinator_id, entry)

    def list_coordinators(self, seen_since: float) -> list[CoordinatorEntry]:
        found = [c for c in self._coordinators.values() if c.seen_s >= seen_since]
        return sorted(found, key=lambda c: (c.started_s, c.coordinator_id))

    def delete_coordinator(self, coordinator_id: str) -> None:
        self._delete(self._coordinators, coordinator_id)

    def append_change(self, change: Change) -> None:
        seq = self._change_seq["last"] + 1
        self._put(self._change_seq, "last", seq)
        self._put(self._changes, seq, dataclasses.replace(change, seq=seq))

    def changes_after(self, seq: int, limit: int) -> list[Change]:
        return [self._changes[s] for s in sorted(s for s in self._changes if s > seq)[:limit]]

    def last_change_seq(self) -> int:
        return self._change_seq["last"]

    def delete_changes_before(self, time_s: float) -> None:
        for seq in [s for s, c in self._changes.items() if c.time_s < time_s]:
            self._delete(self._changes, seq)

    def get_counter(self, key: str) -> tuple[float, float] | None:
        return self._counters.get(key)

    def put_counter(self, key: str, value: float, updated_s: float) -> None:
        self._put(self._counters, key, (value, updated_s))

    def delete_counters_before(self, updated_s: float) -> None:
        for key in [k for k, (_, t) in self._counters.items() if t < updated_s]:
            self._delete(self._counters, key)
