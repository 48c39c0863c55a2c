"""The owner's rules: when, and how hard, a volunteer worker may compute. Pure: no I/O.

:func:`decide` turns what the machine reports (:class:`Readings`), the previous decision
(for hysteresis) and the local time into a :class:`Decision`: run or pause (and why), on how
many cores and for what share of the time. The monitor, the throttle and the agent carry it
out; nothing here reads a clock, a sensor or a file.

Rules come from a TOML file and from command-line flags (flags win); :func:`rules_from_values`
checks every value and refuses unknown settings, naming all problems at once. Every setting
is listed in :data:`SETTINGS`, which also drives the flags and the documentation test.
"""

from __future__ import annotations

import difflib
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from hydracompute.core.carbon import MAX_ZONE_CHARS, normal_zone, valid_zone
from hydracompute.errors import HydraError
from hydracompute.worker.hours import HoursWindow

#: Points of hysteresis where a rule has no setting of its own for resuming.
MEMORY_MARGIN_PERCENT = 5.0
BATTERY_MARGIN_PERCENT = 5.0
TEMPERATURE_MARGIN_C = 5.0
#: Share of the grid intensity limit below which a worker held by it resumes.
GRID_MARGIN_SHARE = 0.05

Priority = Literal["idle", "low", "normal"]
PRIORITIES: tuple[Priority, ...] = ("idle", "low", "normal")


class InvalidRules(HydraError):
    """The owner's rules cannot be used: a bad value, an unknown setting, or a rule this
    machine cannot measure. ``problems`` lists every one."""

    status = 422
    title = "Invalid worker rules"

    def __init__(self, problems: Sequence[str], source: str = "") -> None:
        self.problems = list(problems)
        where = f"{source}: " if source else ""
        super().__init__(where + "; ".join(self.problems))


# --- the rules ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One rule as the owner writes it: in the TOML file as ``key``, as a flag ``--key``."""

    key: str
    kind: Literal["int", "number", "bool", "hours", "choice", "zone"]
    help: str
    low: float = -math.inf
    high: float = math.inf
    default_text: str = "off"


SETTINGS: tuple[Setting, ...] = (
    Setting("cores", "int", "Compute processes: chunks computed at once.", 1, 1024, "every core"),
    Setting(
        "duty_percent", "number", "Share of the time the compute processes may run.", 1, 100, "100"
    ),
    Setting(
        "duty_period_s",
        "number",
        "Length of one run-and-rest cycle of the duty cycle.",
        0.1,
        10,
        "0.5",
    ),
    Setting(
        "cpu_pause_percent",
        "number",
        "Pause while other programs use more than this share of the machine's CPU.",
        1,
        100,
    ),
    Setting(
        "cpu_resume_percent",
        "number",
        "Resume once other programs use less than this (below cpu_pause_percent).",
        0,
        100,
        "half of cpu_pause_percent",
    ),
    Setting(
        "cpu_window_s",
        "number",
        "Seconds over which other programs' CPU use is averaged.",
        0.5,
        60,
        "3",
    ),
    Setting(
        "on_battery", "bool", "Compute while the machine runs on battery.", default_text="true"
    ),
    Setting(
        "min_battery_percent",
        "number",
        "On battery, compute only while the charge is above this (implies on_battery).",
        1,
        100,
    ),
    Setting(
        "max_temperature_c", "number", "Pause above this temperature (hottest CPU sensor).", 30, 120
    ),
    Setting(
        "resume_temperature_c",
        "number",
        "Resume once the temperature is below this.",
        20,
        120,
        "max_temperature_c - 5",
    ),
    Setting(
        "max_memory_percent",
        "number",
        "Pause while more than this share of memory is in use.",
        10,
        100,
    ),
    Setting(
        "max_compute_memory_mb",
        "number",
        "Give the chunks back when the compute processes use more memory than this (MiB).",
        64,
        2**24,
    ),
    Setting(
        "hours",
        "hours",
        "Compute only within these local times, e.g. 'mon-fri 18:00-08:00'.",
        default_text="always",
    ),
    Setting(
        "input_idle_minutes",
        "number",
        "Compute only after this long without keyboard or mouse input.",
        0.1,
        1440,
    ),
    Setting(
        "return_after_s",
        "number",
        "Give the chunks in hand back to the pool after a pause this long.",
        0,
        7 * 86400,
        "60",
    ),
    Setting(
        "priority",
        "choice",
        "Scheduling priority of the compute processes: idle, low or normal.",
        default_text="idle",
    ),
    Setting(
        "watts_per_core",
        "number",
        "Power one busy core draws (W), for the pool's energy estimate of your credit.",
        0.1,
        500,
        "measured (RAPL) where readable, else the pool's",
    ),
    Setting(
        "accept_wasm",
        "bool",
        "Run wasm jobs: WebAssembly modules submitted to the pool, in a sandbox with no "
        "files, network or clock (docs/wasm.md).",
        default_text="false",
    ),
    Setting(
        "grid_zone",
        "zone",
        "Your electricity grid: an ISO country code (DE) or an Electricity Maps zone.",
        default_text="none",
    ),
    Setting(
        "max_grid_intensity",
        "number",
        "Compute only while your grid's carbon intensity, from the pool's source, is below "
        "this (gCO2/kWh); needs grid_zone.",
        1,
        3000,
    ),
)
SETTING_KEYS = tuple(s.key for s in SETTINGS)


@dataclass(frozen=True)
class Rules:
    """The owner's rules, checked. Build with :func:`rules_from_values`."""

    cores: int = 1
    duty_percent: float = 100.0
    duty_period_s: float = 0.5
    cpu_pause_percent: float | None = None
    cpu_resume_percent: float | None = None
    cpu_window_s: float = 3.0
    on_battery: bool = True
    min_battery_percent: float | None = None
    max_temperature_c: float | None = None
    resume_temperature_c: float | None = None
    max_memory_percent: float | None = None
    max_compute_memory_mb: float | None = None
    hours: tuple[HoursWindow, ...] = ()
    input_idle_minutes: float | None = None
    return_after_s: float = 60.0
    priority: Priority = "idle"
    #: Not a rule of when to compute: what the worker tells the pool its power is.
    watts_per_core: float | None = None
    #: Nor is this: whether the owner consents to run code submitted to the pool.
    accept_wasm: bool = False
    #: Not a rule either: the grid the worker tells the pool it is on ("" none).
    grid_zone: str = ""
    max_grid_intensity: float | None = None

    @property
    def cpu_resume(self) -> float:
        """Where the other-programs rule lets go (only meaningful with a pause threshold)."""
        if self.cpu_resume_percent is not None:
            return self.cpu_resume_percent
        return (self.cpu_pause_percent or 0.0) / 2

    @property
    def temperature_resume(self) -> float:
        if self.resume_temperature_c is not None:
            return self.resume_temperature_c
        return (self.max_temperature_c or 0.0) - TEMPERATURE_MARGIN_C

    def as_values(self) -> dict[str, Any]:
        """The settings that differ from the defaults, as they would be written in TOML."""
        values: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value != f.default:
                values[f.name] = [w.text for w in value] if f.name == "hours" else value
        return values

    def summary(self) -> str:
        """One line for the log: the rules in force."""
        values = self.as_values()
        return ", ".join(f"{k}={v}" for k, v in values.items()) or "no limits"


def _check_value(setting: Setting, value: Any, problems: list[str]) -> Any:
    key = setting.key
    if setting.kind == "bool":
        if not isinstance(value, bool):
            problems.append(f"{key}: must be true or false, not {value!r}")
        return value
    if setting.kind == "hours":
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
            problems.append(f'{key}: must be a list of windows like "mon-fri 18:00-08:00"')
            return ()
        windows = []
        for item in items:
            try:
                windows.append(HoursWindow.parse(item))
            except ValueError as exc:
                problems.append(f"{key}: {exc}")
        return tuple(windows)
    if setting.kind == "zone":
        zone = normal_zone(value) if isinstance(value, str) else ""
        if not valid_zone(zone):
            problems.append(
                f"{key}: must be a grid zone code like DE or US-CAL-CISO (letters, digits, "
                f"'-', at most {MAX_ZONE_CHARS} characters), not {value!r}"
            )
        return zone
    if setting.kind == "choice":
        if value not in PRIORITIES:
            problems.append(f"{key}: must be one of {', '.join(PRIORITIES)}, not {value!r}")
        return value
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if setting.kind == "int" and (not numeric or value != int(value)):
        problems.append(f"{key}: must be a whole number, not {value!r}")
        return value
    if not numeric or not math.isfinite(value):
        problems.append(f"{key}: must be a number, not {value!r}")
        return value
    if not setting.low <= value <= setting.high:
        problems.append(f"{key}: must be from {setting.low:g} to {setting.high:g}, not {value:g}")
    return int(value) if setting.kind == "int" else float(value)


def rules_from_values(values: Mapping[str, Any], default_cores: int = 1, source: str = "") -> Rules:
    """Check the owner's settings (TOML values and flags merged) and build :class:`Rules`.

    Args:
        values: setting name to value, as :data:`SETTINGS` describes them.
        default_cores: ``cores`` when not set (every core of the machine).
        source: where the values come from, named in errors (e.g. a file name).

    Raises:
        InvalidRules: naming every unknown setting and bad value.
    """
    problems: list[str] = []
    checked: dict[str, Any] = {}
    by_key = {s.key: s for s in SETTINGS}
    for key, value in values.items():
        if key not in by_key:
            close = difflib.get_close_matches(key, SETTING_KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"unknown setting {key!r}{hint}")
            continue
        checked[key] = _check_value(by_key[key], value, problems)
    if problems:
        raise InvalidRules(problems, source)
    checked.setdefault("cores", default_cores)
    pause, resume = checked.get("cpu_pause_percent"), checked.get("cpu_resume_percent")
    if resume is not None and pause is None:
        problems.append("cpu_resume_percent: needs cpu_pause_percent")
    elif resume is not None and pause is not None and resume >= pause:
        problems.append(f"cpu_resume_percent: must be below cpu_pause_percent ({pause:g})")
    if checked.get("min_battery_percent") is not None:
        if checked.get("on_battery") is False:
            problems.append("min_battery_percent: contradicts on_battery = false")
        checked["on_battery"] = True
    hot, cool = checked.get("max_temperature_c"), checked.get("resume_temperature_c")
    if cool is not None and hot is None:
        problems.append("resume_temperature_c: needs max_temperature_c")
    elif cool is not None and hot is not None and cool >= hot:
        problems.append(f"resume_temperature_c: must be below max_temperature_c ({hot:g})")
    if checked.get("max_grid_intensity") is not None and not checked.get("grid_zone"):
        problems.append("max_grid_intensity: needs grid_zone (the grid whose intensity counts)")
    if problems:
        raise InvalidRules(problems, source)
    return Rules(**checked)


def read_rules_file(path: Path) -> dict[str, Any]:
    """The settings in a TOML file (not yet checked: see :func:`rules_from_values`).

    Raises:
        InvalidRules: the file cannot be read or is not TOML.
    """
    try:
        with path.open("rb") as source:
            return tomllib.load(source)
    except OSError as exc:
        raise InvalidRules([f"cannot read it: {exc.strerror or exc}"], str(path)) from exc
    except tomllib.TOMLDecodeError as exc:
        raise InvalidRules([f"not valid TOML: {exc}"], str(path)) from exc


# --- the decision ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Readings:
    """What the machine reports at one moment (see :mod:`hydracompute.worker.monitor`).

    ``None`` means the machine cannot say (no battery, no sensor, no input idle time).
    """

    other_cpu_percent: float = 0.0
    on_battery: bool = False
    battery_percent: float | None = None
    temperature_c: float | None = None
    memory_percent: float = 0.0
    compute_memory_mb: float = 0.0
    input_idle_s: float | None = None
    #: The carbon intensity of the worker's grid, as the pool last told it (gCO2/kWh).
    grid_gco2_per_kwh: float | None = None


@dataclass(frozen=True)
class Decision:
    """What the worker does now.

    Attributes:
        run: compute (True) or keep the compute processes suspended (False).
        reasons: why it pauses, one per rule that holds it (empty when running).
        cores: chunks to compute at once (0 while paused).
        duty: share of the time the compute processes may run, 0 to 1 (0 while paused).
        latched: the rules with hysteresis that currently hold (kept for the next call).
        return_now: give the chunks in hand back at once rather than after a long pause.
    """

    run: bool
    reasons: tuple[str, ...] = ()
    cores: int = 0
    duty: float = 0.0
    latched: frozenset[str] = field(default_factory=frozenset)
    return_now: bool = False

    @property
    def reason(self) -> str:
        if self.run:
            return "" if self.duty >= 1 else f"throttled to {self.duty:.0%} of the time"
        return "; ".join(self.reasons)


def _held(value: float, pause_above: float, resume_below: float, was_held: bool) -> bool:
    """Hysteresis: hold above ``pause_above``; once held, let go only below ``resume_below``."""
    return value > pause_above or (was_held and value >= resume_below)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def decide(
    rules: Rules, readings: Readings, previous: Decision | None, now_local: datetime
) -> Decision:
    """Whether to compute now, and how hard. Pure and total: never raises.

    Args:
        rules: the owner's rules.
        readings: the machine's state now.
        previous: the last decision, for hysteresis (``None`` at start).
        now_local: the local wall-clock time, for the allowed hours.
    """
    was = previous.latched if previous is not None else frozenset()
    reasons: list[str] = []
    latched: set[str] = set()

    if rules.hours and not any(w.contains(now_local) for w in rules.hours):
        reasons.append(f"outside the allowed hours ({', '.join(w.text for w in rules.hours)})")

    if readings.on_battery:
        if not rules.on_battery:
            reasons.append("on battery")
        elif rules.min_battery_percent is not None and readings.battery_percent is not None:
            floor = rules.min_battery_percent
            # "Low" is the held state: held below the floor, let go a few points above it.
            if _held(
                -readings.battery_percent,
                -floor,
                -(floor + BATTERY_MARGIN_PERCENT),
                "battery" in was,
            ):
                latched.add("battery")
                reasons.append(
                    f"battery at {readings.battery_percent:.0f}% "
                    f"(computing on battery above {floor:g}%)"
                )

    if rules.max_temperature_c is not None and readings.temperature_c is not None:
        hot, cool = rules.max_temperature_c, rules.temperature_resume
        if _held(readings.temperature_c, hot, cool, "temperature" in was):
            latched.add("temperature")
            reasons.append(
                f"temperature {readings.temperature_c:.0f} °C "
                f"(pause above {hot:g} °C, resume below {cool:g} °C)"
            )

    if rules.input_idle_minutes is not None:
        needed_s = rules.input_idle_minutes * 60
        if readings.input_idle_s is None:
            reasons.append("the time since the last keyboard or mouse input is unavailable")
        elif readings.input_idle_s < needed_s:
            reasons.append(
                f"in use: last input {_duration(readings.input_idle_s)} ago "
                f"(computing after {_duration(needed_s)} without input)"
            )

    if rules.max_memory_percent is not None:
        cap = rules.max_memory_percent
        if _held(readings.memory_percent, cap, cap - MEMORY_MARGIN_PERCENT, "memory" in was):
            latched.add("memory")
            reasons.append(f"memory {readings.memory_percent:.0f}% in use (pause above {cap:g}%)")

    return_now = False
    cap_mb = rules.max_compute_memory_mb
    if cap_mb is not None and readings.compute_memory_mb > cap_mb:
        return_now = True
        reasons.append(
            f"compute processes use {readings.compute_memory_mb:.0f} MiB (cap {cap_mb:g} MiB)"
        )

    if rules.cpu_pause_percent is not None:
        pause, resume = rules.cpu_pause_percent, rules.cpu_resume
        if _held(readings.other_cpu_percent, pause, resume, "cpu" in was):
            latched.add("cpu")
            reasons.append(
                f"other programs use {readings.other_cpu_percent:.0f}% of the CPU "
                f"(pause above {pause:g}%, resume below {resume:g}%)"
            )

    if rules.max_grid_intensity is not None:
        cap = rules.max_grid_intensity
        grid = readings.grid_gco2_per_kwh
        if grid is None:
            reasons.append("waiting for the pool to tell the grid's carbon intensity")
        elif _held(grid, cap, cap * (1 - GRID_MARGIN_SHARE), "grid" in was):
            latched.add("grid")
            reasons.append(
                f"grid at {grid:.0f} gCO2/kWh (computing below {cap:g}, "
                f"resuming below {cap * (1 - GRID_MARGIN_SHARE):g})"
            )

    if reasons:
        return Decision(False, tuple(reasons), 0, 0.0, frozenset(latched), return_now)
    return Decision(True, (), rules.cores, rules.duty_percent / 100, frozenset(latched))
