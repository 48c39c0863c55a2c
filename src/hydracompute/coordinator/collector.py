"""The coordinator's own schedule for Python's cyclic garbage collector.

Under load, Python's automatic collector cost the coordinator a fifth to a third of its
capacity: each of its frequent young-generation passes walks every exchange still in
flight (a thousand held requests' coroutines, futures and buffers, alive for a fraction of
a second and then freed by reference counting anyway), and promotes them into the older
generations, whose passes walk every connection. With it off, the same coordinator
accepted 17-41% more results per second (``bench/bench_coordinator.py``, five alternating
pairs). Almost nothing the coordinator makes is a reference cycle, so instead of that
collector it runs full collections on a schedule of its own: when the number of objects
the collector tracks has grown by :data:`GROWTH_OBJECTS` since the last collection (a
burst of garbage, or of new connections), and at least every :data:`MAX_INTERVAL_S`.

A full collection of a loaded coordinator lasts a few tens of milliseconds; at most once
a minute in steady state, it delays well under one exchange in a hundred.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass

#: Growth in tracked objects since the last collection that calls for one now.
GROWTH_OBJECTS = 200_000
#: Longest time between two collections.
MAX_INTERVAL_S = 60.0
#: How often the growth is looked at.
CHECK_PERIOD_S = 1.0


@dataclass
class CollectionSchedule:
    """When the next full collection is due (pure: the clock and the count are passed in).

    Args:
        growth_objects: collect once the tracked objects grew by this many.
        max_interval_s: collect at least this often.
    """

    growth_objects: int = GROWTH_OBJECTS
    max_interval_s: float = MAX_INTERVAL_S
    last_s: float | None = None

    def due(self, now: float, growth: int) -> bool:
        """Whether to collect now, ``growth`` objects more being tracked than after the
        last collection (the first call starts the interval)."""
        if self.last_s is None:
            self.last_s = now
        return growth >= self.growth_objects or now - self.last_s >= self.max_interval_s

    def collected(self, now: float) -> None:
        self.last_s = now


async def collect_on_schedule(
    schedule: CollectionSchedule,
    check_period_s: float = CHECK_PERIOD_S,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Turn the automatic collector off and collect on ``schedule`` until cancelled; the
    automatic collector is turned back on when this ends."""
    gc.disable()
    try:
        while True:
            await asyncio.sleep(check_period_s)
            # Generation 0's count: tracked objects made minus freed since the last pass.
            if schedule.due(clock(), gc.get_count()[0]):
                gc.collect()
                schedule.collected(clock())
    finally:
        gc.enable()
