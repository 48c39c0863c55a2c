"""Scenarios: what a simulation runs, read from TOML and checked whole before it starts.

The format is documented in docs/simulation.md; every field has a limit and an unknown field
is an error (a misspelt setting silently ignored would make a run mean something else).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from hydracompute.carbon.traces import FORECASTS
from hydracompute.core.config import SchedulerConfig
from hydracompute.core.verification import VerificationPolicy
from hydracompute.errors import InvalidParams
from hydracompute.sim.distributions import Distribution

MAX_WORKERS = 1_000_000
MAX_JOBS = 10_000
MAX_DURATION_S = 366 * 86400.0
STRATEGIES = ("always", "sometimes", "after_trust")
#: The scenarios shipped with the package, by name.
SHIPPED = ("home-lan", "university-lab", "volunteer-project", "internet-scale", "three-grids")


class _Table:
    """Reads one TOML table, refusing unknown keys once every known one was read."""

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, Mapping):
            raise InvalidParams({where: "must be a table"})
        self.data, self.where, self.read = data, where, set[str]()

    def _at(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return self.data.get(key, default)

    def number(self, key: str, default: float | None, low: float, high: float) -> float:
        value = self.get(key, default)
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not (low <= value <= high)
        ):
            raise InvalidParams({self._at(key): f"must be a number in [{low:g}, {high:g}]"})
        return float(value)

    def integer(self, key: str, default: int | None, low: int, high: int) -> int:
        value = self.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise InvalidParams({self._at(key): f"must be an integer in [{low}, {high}]"})
        return value

    def text(self, key: str, default: str, choices: tuple[str, ...] = ()) -> str:
        value = self.get(key, default)
        if not isinstance(value, str) or len(value) > 1000 or (choices and value not in choices):
            allowed = f"one of {', '.join(choices)}" if choices else "a string"
            raise InvalidParams({self._at(key): f"must be {allowed}"})
        return value

    def flag(self, key: str, default: bool) -> bool:
        value = self.get(key, default)
        if not isinstance(value, bool):
            raise InvalidParams({self._at(key): "must be true or false"})
        return value

    def dist(self, key: str, default: Any) -> Distribution:
        return Distribution.parse(self.get(key, default), self._at(key))

    def table(self, key: str) -> _Table:
        return _Table(self.get(key, {}), self._at(key))

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.read)
        if unknown:
            raise InvalidParams({self._at(unknown[0]): "unknown setting"})


@dataclass(frozen=True)
class JobSpec:
    kind: str
    params: dict[str, Any]
    arrival_s: float
    name: str = ""
    replication: int | None = None
    quorum: int | None = None
    adaptive: bool | None = None
    target_chunk_s: float | None = None
    #: When the job should be done, in seconds from its arrival (``None``: no deadline).
    deadline_s: float | None = None
    #: "blind" or "prefer-clean" (grid-aware dispatch within the deadline; see
    #: hydracompute.core.carbon).
    carbon: str = "blind"
    #: How the simulator costs a Mandelbrot job's tiles: "coarse" (a low-resolution render,
    #: close to the coordinator's own estimate) or "exact" (the whole picture rendered once
    #: by the real kernel: the estimate's errors are simulated; seconds to minutes of CPU).
    tile_costs: str = "coarse"


@dataclass(frozen=True)
class Saboteurs:
    share: float = 0.0
    #: always: every output a lie; sometimes: each with ``probability``; after_trust:
    #: honest for ``honest_first`` outputs, then lies with ``probability``.
    strategy: str = "always"
    probability: float = 1.0
    honest_first: int = 0
    #: Every saboteur tells the same lie for a chunk (so that two of them agree), rather
    #: than each its own.
    collude: bool = False


@dataclass(frozen=True)
class Population:
    count: int
    cores: tuple[tuple[int, float], ...]
    kinds: tuple[str, ...]
    #: Units per second on one core, per kind, of the reference machine.
    speeds: dict[str, float]
    #: Each worker's speed factor (median 1 for a log-normal).
    speed_factor: Distribution
    #: Each chunk's compute time factor around the worker's speed.
    chunk_noise: Distribution
    workers_per_volunteer: int
    always_on: bool
    online: Distribution
    offline: Distribution
    online_at_start: float
    clean_leave_share: float
    pause_every: Distribution | None
    pause_length: Distribution
    return_after_s: float
    latency: Distribution
    #: The workers online at the start join within this long (0: all at once, as workers
    #: already waiting when the first job arrives).
    join_over_s: float = 0.0
    #: Grid zones and their weights: each zone gets its weight's share of the workers
    #: (for carbon-aware dispatch; recorded per worker).
    zones: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    config: SchedulerConfig
    verification: VerificationPolicy
    adaptive: bool
    backend: str
    jobs: tuple[JobSpec, ...]
    population: Population
    saboteurs: Saboteurs
    #: The simulation stops at this virtual time even if jobs are left.
    max_duration_s: float
    sample_period_s: float
    #: Recorded carbon intensity per zone (CSV paths, beside the shipped 2020 traces of DE,
    #: GB and FR), replayed with virtual time 0 at ``carbon_start_s``.
    carbon_traces: dict[str, str] = field(default_factory=dict)
    #: The moment of the traces (seconds since 1970, UTC) at virtual time 0 (0: the start
    #: of the traces' year).
    carbon_start_s: float = 0.0
    #: How the coordinator's forecasts are made from the traces (see
    #: :data:`hydracompute.carbon.traces.FORECASTS`): perfect, or by persistence.
    carbon_forecast: str = "perfect"

    @property
    def total_workers(self) -> int:
        return self.population.count


def load_scenario(source: str | Path) -> Scenario:
    """A scenario from a TOML file, or one shipped with the package by name.

    Raises:
        InvalidParams: the file is not valid TOML or a setting is wrong (``errors``
            names it, as ``table.key``).
        FileNotFoundError: no such file or shipped scenario.
    """
    name = str(source)
    if name in SHIPPED:
        text = resources.files("hydracompute.sim").joinpath(f"scenarios/{name}.toml").read_text()
    else:
        text = Path(source).read_text()
    return parse_scenario(text)


def parse_scenario(text: str) -> Scenario:
    """A scenario from TOML text (see :func:`load_scenario`)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidParams({"scenario": f"not valid TOML: {exc}"}) from exc
    top = _Table(data, "")
    name = top.text("name", "scenario")
    description = top.text("description", "")
    max_duration_s = top.number("max_duration_s", 86400.0, 1.0, MAX_DURATION_S)
    sample_period_s = top.number("sample_period_s", 10.0, 0.1, 86400.0)
    config, verification, adaptive, backend = _coordinator(top.table("coordinator"))
    population = _population(top.table("workers"))
    saboteurs = _saboteurs(top.table("saboteurs"))
    jobs = _jobs(top.get("jobs", []), population.kinds)
    carbon = top.table("carbon")
    traces = carbon.get("traces", {})
    if not isinstance(traces, Mapping) or not all(isinstance(v, str) for v in traces.values()):
        raise InvalidParams({"carbon.traces": "must map zones to CSV file paths"})
    start = carbon.get("start")
    try:
        start_s = 0.0 if start is None else _utc(start).timestamp()
    except (TypeError, ValueError) as exc:
        raise InvalidParams({"carbon.start": "must be a date or time, as 2020-03-02"}) from exc
    forecast = carbon.text("forecast", "perfect", FORECASTS)
    carbon.done()
    top.done()
    return Scenario(
        name,
        description,
        config,
        verification,
        adaptive,
        backend,
        jobs,
        population,
        saboteurs,
        max_duration_s,
        sample_period_s,
        dict(traces),
        start_s,
        forecast,
    )


def _utc(value: Any) -> datetime:
    """A TOML date or date-time (or its text) as an aware UTC date-time."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if not isinstance(value, datetime):
        raise TypeError("not a date")
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _coordinator(t: _Table) -> tuple[SchedulerConfig, VerificationPolicy, bool, str]:
    try:
        config = SchedulerConfig(
            target_chunk_s=t.number("target_chunk_s", 2.0, 0.01, 3600),
            heartbeat_s=t.number("heartbeat_s", 5.0, 0.05, 600),
            backup_factor=t.number("backup_factor", 1.5, 1, 100),
            max_wait_s=t.number("max_wait_s", 20.0, 0, 600),
            capacity_results_per_s=t.number("capacity_results_per_s", 2000.0, 0, 1e7),
            load_share=t.number("load_share", 0.5, 0, 1),
        )
        defaults = VerificationPolicy()
        verification = VerificationPolicy(
            error_bound=t.number("error_bound", defaults.error_bound, 1e-9, 0.5),
            saboteur_share=t.number("saboteur_share", defaults.saboteur_share, 0, 0.9),
            floor=t.number("replicate_trusted", defaults.floor, 0.001, 1),
            spot_check_rate=t.number("spot_check_rate", defaults.spot_check_rate, 0, 1),
        )
    except ValueError as exc:
        raise InvalidParams({"coordinator": str(exc)}) from exc
    adaptive = t.text("verify", "none", ("none", "adaptive")) == "adaptive"
    backend = t.text("store", "memory", ("memory", "sqlite"))
    t.done()
    return config, verification, adaptive, backend


def _population(t: _Table) -> Population:
    count = t.integer("count", None, 1, MAX_WORKERS)
    cores_spec = t.get("cores", 1)
    cores = _weighted_cores(cores_spec)
    kinds = t.get("kinds", ["pi", "mandelbrot"])
    if not isinstance(kinds, list) or not kinds or not all(isinstance(k, str) for k in kinds):
        raise InvalidParams({"workers.kinds": "must be a list of kind names"})
    speed = t.table("speed")
    speeds = {k: speed.number(k, None, 1e-9, 1e12) for k in kinds}
    speed_factor = speed.dist("factor", 1.0)
    chunk_noise = speed.dist("chunk_noise", 1.0)
    speed.done()
    availability = t.table("availability")
    always_on = availability.flag("always_on", False)
    online = availability.dist("online", {"dist": "fixed", "value": MAX_DURATION_S})
    offline = availability.dist("offline", {"dist": "fixed", "value": 3600})
    online_at_start = availability.number("online_at_start", 1.0, 0, 1)
    join_over_s = availability.number("join_over_s", 0.0, 0, 86400)
    clean_leave = availability.number("clean_leave_share", 0.5, 0, 1)
    availability.done()
    pauses = t.table("pauses")
    every = pauses.get("every")
    pause_every = None if every is None else Distribution.parse(every, "workers.pauses.every")
    pause_length = pauses.dist("length", 60.0)
    return_after_s = pauses.number("return_after_s", 300.0, 0, 86400)
    pauses.done()
    latency = t.dist("latency", 0.0)
    per_volunteer = t.integer("workers_per_volunteer", 1, 1, 1000)
    zones = t.get("zones", {})
    if not isinstance(zones, Mapping) or not all(
        isinstance(w, int | float) and not isinstance(w, bool) and w >= 0 for w in zones.values()
    ):
        raise InvalidParams({"workers.zones": "must map zone codes to weights"})
    t.done()
    return Population(
        count,
        cores,
        tuple(kinds),
        speeds,
        speed_factor,
        chunk_noise,
        per_volunteer,
        always_on,
        online,
        offline,
        online_at_start,
        clean_leave,
        pause_every,
        pause_length,
        return_after_s,
        latency,
        join_over_s,
        {str(k): float(v) for k, v in zones.items()},
    )


def _weighted_cores(spec: Any) -> tuple[tuple[int, float], ...]:
    """``cores = 4`` or ``cores = { 1 = 0.2, 4 = 0.8 }`` (cores: weight)."""
    if isinstance(spec, int) and not isinstance(spec, bool):
        spec = {str(spec): 1.0}
    if not isinstance(spec, Mapping) or not spec:
        raise InvalidParams({"workers.cores": "must be a number or a table cores = weight"})
    found = []
    for key, weight in spec.items():
        if not str(key).isdigit() or not 1 <= int(key) <= 1024:
            raise InvalidParams({"workers.cores": f"{key!r} is not a core count in 1..1024"})
        if isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
            raise InvalidParams({"workers.cores": "weights must be numbers >= 0"})
        found.append((int(key), float(weight)))
    if sum(w for _, w in found) <= 0:
        raise InvalidParams({"workers.cores": "some weight must be positive"})
    return tuple(sorted(found))


def _saboteurs(t: _Table) -> Saboteurs:
    found = Saboteurs(
        share=t.number("share", 0.0, 0, 1),
        strategy=t.text("strategy", "always", STRATEGIES),
        probability=t.number("probability", 1.0, 0, 1),
        honest_first=t.integer("honest_first", 0, 0, 10**6),
        collude=t.flag("collude", False),
    )
    t.done()
    return found


def _jobs(specs: Any, kinds: tuple[str, ...]) -> tuple[JobSpec, ...]:
    if not isinstance(specs, list) or not specs:
        raise InvalidParams({"jobs": "must be a non-empty array of tables [[jobs]]"})
    jobs: list[JobSpec] = []
    for i, spec in enumerate(specs):
        t = _Table(spec, f"jobs[{i}]")
        kind = t.text("kind", "", kinds)
        params = t.get("params", {})
        if not isinstance(params, Mapping):
            raise InvalidParams({f"jobs[{i}].params": "must be a table"})
        arrival_s = t.number("arrival_s", 0.0, 0, MAX_DURATION_S)
        count = t.integer("count", 1, 1, MAX_JOBS)
        every_s = t.number("every_s", 0.0, 0, MAX_DURATION_S)
        replication = t.get("replication")
        quorum = t.get("quorum")
        adaptive = t.get("adaptive")
        for key, value in (("replication", replication), ("quorum", quorum)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise InvalidParams({f"jobs[{i}].{key}": "must be an integer"})
        if adaptive is not None and not isinstance(adaptive, bool):
            raise InvalidParams({f"jobs[{i}].adaptive": "must be true or false"})
        target = t.get("target_chunk_s")
        deadline = t.get("deadline_s")
        if deadline is not None and (
            isinstance(deadline, bool) or not isinstance(deadline, int | float)
        ):
            raise InvalidParams({f"jobs[{i}].deadline_s": "must be a number of seconds"})
        carbon_mode = t.text("carbon", "blind", ("blind", "prefer-clean"))
        tile_costs = t.text("tile_costs", "coarse", ("coarse", "exact"))
        name = t.text("name", f"{kind}-{i}")
        t.done()
        for n in range(count):
            jobs.append(
                JobSpec(
                    kind,
                    dict(params),
                    arrival_s + n * every_s,
                    name if count == 1 else f"{name}-{n}",
                    replication,
                    quorum,
                    adaptive,
                    None if target is None else float(target),
                    None if deadline is None else float(deadline),
                    carbon_mode,
                    tile_costs,
                )
            )
            if len(jobs) > MAX_JOBS:
                raise InvalidParams({"jobs": f"at most {MAX_JOBS} jobs"})
    return tuple(sorted(jobs, key=lambda j: j.arrival_s))
