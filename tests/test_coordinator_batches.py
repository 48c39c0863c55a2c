"""How the coordinator feeds exchanges to its store thread: in batches, taken by the store
thread itself, with other store calls given their turn between runs of batches."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from hydracompute.coordinator.service import (
    DRAIN_BATCHES,
    MAX_BATCH,
    MAX_BATCH_BYTES,
    Coordinator,
)
from hydracompute.core.config import SchedulerConfig
from hydracompute.errors import NotFound
from hydracompute.store import MemoryBackend, Store
from hydracompute.store.records import ExchangeOutcome, ExchangeRequest
from tests.sum_kind import sum_registry


class RecordingStore(Store):
    """A store that notes each batch it records and each other call made on its thread."""

    def __init__(self) -> None:
        super().__init__(MemoryBackend(), sum_registry(), SchedulerConfig())
        self.calls: list[str | int] = []

    def exchange_many(self, requests: Any) -> list[ExchangeOutcome | Exception]:
        self.calls.append(len(requests))
        return super().exchange_many(requests)


async def _batches_and_a_call(
    sizes: list[int],
) -> tuple[list[str | int], list[BaseException | None]]:
    """Exchanges with bodies of ``sizes`` bytes, all waiting behind a busy store thread, and
    another store call queued after them."""
    store = RecordingStore()
    coordinator = Coordinator(store)
    loop = asyncio.get_running_loop()
    release = threading.Event()
    busy = loop.run_in_executor(coordinator._executor, release.wait)  # the thread is busy
    exchanges = [
        asyncio.ensure_future(coordinator._batched(ExchangeRequest("w-none", [], [], 1, 0.0), size))
        for size in sizes
    ]
    await asyncio.sleep(0)  # every exchange is queued behind the busy thread
    other = loop.run_in_executor(coordinator._executor, store.calls.append, "other")
    release.set()
    await busy
    answers = await asyncio.gather(*exchanges, return_exceptions=True)
    await other
    await coordinator.stop()
    return store.calls, [a if isinstance(a, BaseException) else None for a in answers]


def test_other_store_calls_get_a_turn_between_runs_of_batches() -> None:
    calls, answers = asyncio.run(_batches_and_a_call([100] * (MAX_BATCH * DRAIN_BATCHES * 2)))
    assert calls == [MAX_BATCH] * DRAIN_BATCHES + ["other"] + [MAX_BATCH] * DRAIN_BATCHES
    assert all(isinstance(a, NotFound) for a in answers)  # each answered, on its own


def test_a_batch_takes_at_most_its_bytes_of_bodies_but_always_one_exchange() -> None:
    third = MAX_BATCH_BYTES // 3
    # 3 thirds fit; a body larger than the whole budget goes alone; then the small rest.
    sizes = [third] * 4 + [MAX_BATCH_BYTES * 2] + [1] * 5
    calls, answers = asyncio.run(_batches_and_a_call(sizes))
    exchanges = [c for c in calls if c != "other"]
    assert exchanges == [3, 1, 1, 5]
    assert len(answers) == len(sizes)
    assert all(isinstance(a, NotFound) for a in answers)  # each answered, on its own
