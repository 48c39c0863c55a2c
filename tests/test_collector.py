"""The coordinator's own garbage collection schedule."""

from __future__ import annotations

import asyncio
import gc
import json
import warnings
import weakref
from typing import Any

import pytest

from hydracompute.coordinator.app import create_app
from hydracompute.coordinator.collector import CollectionSchedule, collect_on_schedule
from hydracompute.core.config import SchedulerConfig
from hydracompute.store import MemoryBackend, Store
from tests.asgi_support import post_scope
from tests.sum_kind import sum_registry

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient` is deprecated")
    from starlette.testclient import TestClient


def test_a_collection_is_due_after_enough_growth_or_time() -> None:
    schedule = CollectionSchedule(growth_objects=1000, max_interval_s=60.0)
    assert not schedule.due(100.0, 0)  # the first look starts the interval
    assert not schedule.due(159.9, 999)
    assert schedule.due(110.0, 1000)
    assert schedule.due(160.0, 0)
    schedule.collected(160.0)
    assert not schedule.due(219.9, 999)
    assert schedule.due(220.0, 0)


class Cycle:
    def __init__(self) -> None:
        self.me = self


def test_cycles_are_collected_on_schedule_and_the_collector_comes_back_after() -> None:
    async def scenario() -> None:
        collected = asyncio.Event()
        loop = asyncio.get_running_loop()
        schedule = CollectionSchedule(growth_objects=10**9, max_interval_s=10**9)
        task = asyncio.create_task(collect_on_schedule(schedule, check_period_s=0))
        await asyncio.sleep(0)  # the task starts and turns the automatic collector off
        assert not gc.isenabled()
        cycle = Cycle()
        weakref.finalize(cycle, loop.call_soon_threadsafe, collected.set)
        del cycle
        for _ in range(20):  # not due: the cycle stays
            await asyncio.sleep(0)
        assert not collected.is_set()
        schedule.growth_objects = 1
        await asyncio.wait_for(collected.wait(), timeout=10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    assert gc.isenabled()
    asyncio.run(scenario())
    assert gc.isenabled()


def test_a_coordinator_given_a_schedule_turns_the_automatic_collector_off_while_it_runs() -> None:
    store = Store(MemoryBackend(), sum_registry(), SchedulerConfig())
    app = create_app(store, collection=CollectionSchedule())
    with TestClient(app):
        assert not gc.isenabled()
    assert gc.isenabled()
    with TestClient(create_app(Store(MemoryBackend(), sum_registry(), SchedulerConfig()))):
        assert gc.isenabled()


def test_refused_exchanges_leave_nothing_for_the_collector() -> None:
    """The coordinator collects garbage only now and then: a refused exchange (the
    commonest error) must not leave its frames and body in a reference cycle."""

    async def scenario() -> int:
        store = Store(MemoryBackend(), sum_registry(), SchedulerConfig())
        worker, secret = store.enrol_worker("w", 1, ["sum"], now=0.0)
        app = create_app(store)
        coordinator = app.state.coordinator
        await coordinator.start()
        body = json.dumps({"results": [{"lease_id": "ab" * 16, "output": {"total": 1}}]})
        scope = post_scope(
            f"/api/v1/workers/{worker.worker_id}/exchange",
            [
                (b"content-type", b"application/json"),
                (b"authorization", f"Bearer {secret}".encode()),
            ],
        )
        statuses: list[int] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body.encode(), "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await app(dict(scope), receive, send)  # the first request sets up caches
        gc.collect()
        gc.disable()
        try:
            for _ in range(5):
                await app(dict(scope), receive, send)
            unreachable = gc.collect()
        finally:
            gc.enable()
        await coordinator.stop()
        assert statuses == [404] * 6
        return unreachable

    assert asyncio.run(scenario()) == 0
