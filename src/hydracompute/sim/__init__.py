"""The simulator: virtual workers, network and clock around the real store and core.

:func:`simulate` runs a :class:`~hydracompute.sim.scenario.Scenario` with a seed and returns
its report (see :mod:`hydracompute.sim.report` and docs/simulation.md).
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydracompute.carbon.traces import Trace, TraceSource, load_trace, load_traces
from hydracompute.core.carbon import normal_zone
from hydracompute.kinds import default_registry
from hydracompute.sim.engine import Simulation
from hydracompute.sim.recorder import Recorder
from hydracompute.sim.report import build_report
from hydracompute.sim.scenario import Scenario, load_scenario, parse_scenario
from hydracompute.sim.standin import standin_registry
from hydracompute.store import MemoryBackend, SQLiteBackend, Store
from hydracompute.store.backend import Backend

__all__ = ["Scenario", "load_scenario", "parse_scenario", "simulate"]


def build_store(scenario: Scenario, seed: int, folder: Path) -> Store:
    """A store as the scenario's coordinator would have, its random draws and ids seeded."""
    backend: Backend = (
        SQLiteBackend(folder / "simulation.db") if scenario.backend == "sqlite" else MemoryBackend()
    )
    kinds = standin_registry(default_registry(), scenario.population.kinds)
    return Store(
        backend,
        kinds,
        scenario.config,
        scenario.verification,
        scenario.adaptive,
        rng=random.Random(f"{seed}-scheduler"),
        ids=random.Random(f"{seed}-ids"),
        carbon=carbon_view(scenario),
    )


def carbon_view(scenario: Scenario) -> TraceSource | None:
    """The grids' intensities a scenario's workers see: the shipped 2020 traces and the
    scenario's own (``[carbon] traces``), virtual time 0 at ``[carbon] start``; ``None``
    if no worker has a zone."""
    if not scenario.population.zones:
        return None
    traces = load_traces()
    for zone, path in scenario.carbon_traces.items():
        trace = load_trace(Path(path))
        traces[normal_zone(zone)] = Trace(normal_zone(zone), trace.times_s, trace.values)
    return TraceSource(traces, shift_s=scenario.carbon_start_s, forecast=scenario.carbon_forecast)


def simulate(
    scenario: Scenario, seed: int = 0, recorder: Callable[[Store], Recorder] | None = None
) -> tuple[dict[str, Any], Simulation]:
    """Run ``scenario`` with ``seed``; returns its report and the finished simulation.

    The same scenario and seed give the same report, but for its ``measured`` part.
    ``recorder`` makes the simulation's recorder from its store (a benchmark's that also
    records something of its own); by default the plain one.
    """
    began, began_cpu = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory(prefix="hydracompute-sim-") as folder:
        store = build_store(scenario, seed, Path(folder))
        try:
            made = None if recorder is None else recorder(store)
            simulation = Simulation(scenario, store, seed, made)
            simulation.run()
            report = build_report(simulation, seed, 0.0)
        finally:
            store.close()
    report["measured"]["wall_s"] = time.perf_counter() - began
    # The process's CPU: on a shared machine, wall time says as much about the neighbours.
    report["measured"]["process_cpu_s"] = time.process_time() - began_cpu
    return report, simulation
