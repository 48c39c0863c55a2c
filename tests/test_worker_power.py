"""The worker's own power, measured from Linux RAPL counters: a fake powercap tree in a
temporary directory stands in for /sys/class/powercap."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from hydracompute.coordinator.app import create_app
from hydracompute.core.config import SchedulerConfig
from hydracompute.core.models import CredentialKind
from hydracompute.kinds import default_registry
from hydracompute.store import MemoryBackend, Store
from hydracompute.worker import power
from hydracompute.worker.agent import WorkerAgent
from hydracompute.worker.power import MEASURE_S, PowerMeter, machine_meter, rapl_zones
from hydracompute.worker.rules import rules_from_values

WRAP_UJ = 262_143_328_850


def zone(root: Path, name: str, energy_uj: int, wrap_uj: int = WRAP_UJ) -> Path:
    path = root / name
    path.mkdir(parents=True, exist_ok=True)
    (path / "energy_uj").write_text(f"{energy_uj}\n")
    (path / "max_energy_range_uj").write_text(f"{wrap_uj}\n")
    (path / "name").write_text("package\n")
    return path


def set_energy(path: Path, energy_uj: int) -> None:
    """Sets the counter in one step, as the kernel shows it: a reader never sees the file
    emptied and half written (which the meter would rightly take for an unreadable counter)."""
    fresh = path / "energy_uj.new"
    fresh.write_text(f"{energy_uj}\n")
    os.replace(fresh, path / "energy_uj")


def test_only_the_readable_package_zones_are_measured(tmp_path: Path) -> None:
    zone(tmp_path, "intel-rapl:0", 1)
    zone(tmp_path, "intel-rapl:1", 2)
    zone(tmp_path, "intel-rapl:0:0", 3)  # the cores of package 0: counted in it already
    zone(tmp_path, "intel-rapl-mmio:0", 4)
    broken = zone(tmp_path, "intel-rapl:2", 5)
    (broken / "energy_uj").write_text("unreadable\n")
    assert [z.energy_file.parent.name for z in rapl_zones(tmp_path)] == [
        "intel-rapl:0",
        "intel-rapl:1",
    ]
    assert rapl_zones(tmp_path / "absent") == []
    assert machine_meter(4, tmp_path / "absent") is None


def test_the_packages_power_while_computing_per_logical_cpu(tmp_path: Path) -> None:
    first = zone(tmp_path, "intel-rapl:0", 1_000_000)
    second = zone(tmp_path, "intel-rapl:1", WRAP_UJ - 10_000_000)
    meter = machine_meter(8, tmp_path)
    assert meter is not None
    meter.sample(0.0, computing=False)
    # 60 s computing: package 0 draws 40 W, package 1 24 W (its counter wraps round).
    set_energy(first, 1_000_000 + 40 * 60 * 10**6)
    set_energy(second, 24 * 60 * 10**6 - 10_000_000)
    meter.sample(MEASURE_S, computing=True)
    # 30 s idle: not counted, whatever the packages drew.
    set_energy(first, 1_000_000 + 40 * 60 * 10**6 + 5 * 30 * 10**6)
    meter.sample(MEASURE_S + 30, computing=False)
    assert meter.seconds == MEASURE_S
    assert meter.watts_per_core() == pytest.approx((40 + 24) / 8)


def test_no_figure_before_a_minute_of_computing_nor_across_unreadable_counters(
    tmp_path: Path,
) -> None:
    package = zone(tmp_path, "intel-rapl:0", 0)
    meter = PowerMeter(rapl_zones(tmp_path), cpus=2)
    meter.sample(0.0, computing=True)
    set_energy(package, 10 * 30 * 10**6)
    meter.sample(30.0, computing=True)
    assert meter.watts_per_core() is None  # half a minute: not yet
    (package / "energy_uj").unlink()  # e.g. permissions changed
    meter.sample(40.0, computing=True)
    set_energy(package, 10 * 100 * 10**6)
    meter.sample(100.0, computing=True)  # the first reading again: nothing to compare to
    set_energy(package, 10 * 130 * 10**6)
    meter.sample(130.0, computing=True)
    assert meter.seconds == 60.0
    assert meter.watts_per_core() == pytest.approx(10 / 2)
    with pytest.raises(ValueError):
        PowerMeter([], cpus=2)


def run_agent_until(
    tmp_path: Path,
    values: dict[str, object],
    done: Callable[[Store, str], bool],
    powercap: Path,
    target_chunk_s: float = 0.05,
) -> tuple[Store, WorkerAgent]:
    """A real agent of one core on an in-process coordinator, computing a long π job in
    chunks of ``target_chunk_s``, until ``done(store, worker_id)``; then stopped."""

    async def scenario() -> tuple[Store, WorkerAgent]:
        config = SchedulerConfig(target_chunk_s=target_chunk_s)
        store = Store(MemoryBackend(), default_registry(), config)
        _, token = store.credentials.issue(CredentialKind.JOIN_TOKEN, "t", time.time())
        app = create_app(store)
        agent = WorkerAgent(
            "http://pool",
            1,
            token,
            transport=httpx.ASGITransport(app=app),
            # Never paused for other programs' CPU use: the power is measured only while
            # the worker computes, and a loaded machine would pause it past the deadline.
            rules=rules_from_values(
                {"priority": "normal", "cpu_pause_percent": 100, **values}, default_cores=1
            ),
            poll_s=0.05,
            powercap=powercap,
        )
        store.submit_job("pi", {"samples": 10**13, "seed": 1}, now=time.time())
        task = asyncio.ensure_future(agent.run())
        try:
            deadline = time.monotonic() + 60
            while not (store.list_workers() and done(store, store.list_workers()[0].worker_id)):
                assert not task.done(), "the agent gave up"
                assert time.monotonic() < deadline, "the agent never got there"
                await asyncio.sleep(0.02)
        finally:
            agent.stop()
            await asyncio.wait_for(task, 60)
            await app.state.coordinator.stop()
        return store, agent

    return asyncio.run(scenario())


def test_a_declared_power_is_sent_at_enrolment_and_sets_the_energy_of_its_credit(
    tmp_path: Path,
) -> None:
    package = zone(tmp_path / "powercap", "intel-rapl:0", 0)  # present, but not used

    def credited(store: Store, worker_id: str) -> bool:
        return bool(store.credit_entries(worker_id=worker_id))

    store, agent = run_agent_until(tmp_path, {"watts_per_core": 12.5}, credited, package.parent)
    (worker,) = store.list_workers()
    assert worker.watts_per_core == 12.5 and agent.measured_watts_per_core is None
    # Its credit's energy is reckoned with it (the store's tests check the figures).
    assert all(e.energy_j > 0 for e in store.credit_entries(worker_id=worker.worker_id))


def test_without_a_declared_power_the_worker_measures_rapl_and_tells_the_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Long enough that the fake counter's writes, late by tens of milliseconds on a loaded
    # machine, stay a small part of the window.
    monkeypatch.setattr(power, "MEASURE_S", 2.0)
    package = zone(tmp_path / "powercap", "intel-rapl:0", 0)
    cpus = os.cpu_count() or 1
    package_watts = 16.0 * cpus  # so 16 W per logical CPU
    started = time.monotonic()
    stop = threading.Event()

    def count() -> None:  # the package's counter, as the kernel keeps it
        while not stop.wait(0.005):
            set_energy(package, int((time.monotonic() - started) * package_watts * 1e6))

    counter = threading.Thread(target=count)
    counter.start()
    try:
        store, agent = run_agent_until(
            tmp_path,
            {},
            lambda s, _: s.list_workers()[0].watts_per_core is not None,
            package.parent,  # the fake powercap tree
            # Chunks long beside an exchange, so that the worker computes at most samples
            # even when a loaded machine makes each exchange slow.
            target_chunk_s=0.5,
        )
    finally:
        stop.set()
        counter.join()
    (worker,) = store.list_workers()
    assert agent.measured_watts_per_core == pytest.approx(16.0, rel=0.3)
    assert worker.watts_per_core == agent.measured_watts_per_core
