"""What the machine reports, for the owner's rules: CPU used by other programs, battery,
temperature, memory, and the time since the last keyboard or mouse input.

"Other programs" means everything but this worker: the CPU time of the agent and of its
compute processes is taken out of the machine's busy time, so the worker never pauses
because of its own work. Shares are averaged over a sliding window so that a
moment's spike does not pause it. Slow sensors are read at most once per second.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import psutil

from hydracompute.worker.input_idle import InputIdleSource
from hydracompute.worker.rules import Readings

#: Sensors that measure the processor (Intel, AMD, Raspberry Pi and other SoCs).
CPU_SENSORS = frozenset(
    {"coretemp", "k10temp", "zenpower", "cpu_thermal", "cpu-thermal", "soc_thermal"}
)
SLOW_READ_S = 1.0


@dataclass(frozen=True)
class _CpuSample:
    at_s: float
    busy_s: float
    total_s: float
    ours_s: float


def _machine_cpu() -> tuple[float, float]:
    """Busy and total CPU seconds of the whole machine since boot (every core)."""
    times = psutil.cpu_times()
    total = sum(times)
    # Guest time is already counted in user time on Linux.
    total -= getattr(times, "guest", 0.0) + getattr(times, "guest_nice", 0.0)
    idle = times.idle + getattr(times, "iowait", 0.0)
    return total - idle, total


def read_temperature() -> float | None:
    """The hottest processor sensor (any sensor if none is known to be the processor's)."""
    sensors_temperatures = getattr(psutil, "sensors_temperatures", None)
    if sensors_temperatures is None:  # macOS, Windows: psutil has none
        return None
    try:
        sensors = sensors_temperatures()
    except (OSError, RuntimeError):
        return None
    cpu = [e.current for name, entries in sensors.items() if name in CPU_SENSORS for e in entries]
    values = cpu or [e.current for entries in sensors.values() for e in entries]
    plausible = [v for v in values if -40.0 < v < 150.0]  # drop unplugged or broken sensors
    return max(plausible) if plausible else None


def read_battery() -> tuple[bool, float | None]:
    """(running on battery, charge in percent); (False, None) without a battery."""
    try:
        battery = psutil.sensors_battery()
    except (OSError, RuntimeError):
        return False, None
    if battery is None:
        return False, None
    return battery.power_plugged is False, float(battery.percent)


class Monitor:
    """Takes :class:`Readings` of this machine.

    Args:
        compute_pids: the compute processes now (their memory is the worker's).
        cpu_window_s: seconds over which other programs' CPU share is averaged.
        input_idle: reads the input idle time; ``None`` if no rule needs it.
        clock: monotonic seconds; injectable for tests.
        root: the agent's process (default: this process).
    """

    def __init__(
        self,
        compute_pids: Callable[[], Iterable[int]],
        cpu_window_s: float = 3.0,
        input_idle: InputIdleSource | None = None,
        clock: Callable[[], float] = time.monotonic,
        root: psutil.Process | None = None,
    ) -> None:
        self._compute_pids = compute_pids
        self._window_s = cpu_window_s
        self._input_idle = input_idle
        self._clock = clock
        self._me = root or psutil.Process()
        self._cpu_by_process: dict[tuple[int, float], float] = {}
        self._ours_s = 0.0
        self._samples: deque[_CpuSample] = deque()
        self._slow_at_s = -float("inf")
        self._slow: tuple[bool, float | None, float | None, float | None] = (
            False,
            None,
            None,
            None,
        )
        self._take_cpu_sample(first=True)

    def _own_processes(self) -> list[psutil.Process]:
        # The agent and its compute processes; not a walk of every process on the machine,
        # which would cost the owner more than the whole rest of the reading.
        processes = [self._me]
        for pid in self._compute_pids():
            try:
                processes.append(psutil.Process(pid))
            except psutil.Error:
                continue
        return processes

    def _take_cpu_sample(self, first: bool = False) -> _CpuSample:
        seen: dict[tuple[int, float], float] = {}
        for process in self._own_processes():
            try:
                with process.oneshot():
                    key = (process.pid, process.create_time())
                    times = process.cpu_times()
            except psutil.Error:
                continue
            seen[key] = times.user + times.system
            # A process born since the last sample counts in full; at the first sample
            # every process is the baseline.
            before = seen[key] if first else self._cpu_by_process.get(key, 0.0)
            self._ours_s += max(0.0, seen[key] - before)
        self._cpu_by_process = seen
        busy, total = _machine_cpu()
        sample = _CpuSample(self._clock(), busy, total, self._ours_s)
        self._samples.append(sample)
        return sample

    def _other_cpu_percent(self) -> float:
        now = self._take_cpu_sample()
        # The base is the newest sample at least a window old (or the oldest one kept).
        while len(self._samples) > 2 and self._samples[1].at_s <= now.at_s - self._window_s:
            self._samples.popleft()
        base = self._samples[0]
        total = now.total_s - base.total_s
        if total <= 0:
            return 0.0
        others = (now.busy_s - base.busy_s) - (now.ours_s - base.ours_s)
        return min(100.0, max(0.0, 100.0 * others / total))

    def _compute_memory_mb(self) -> float:
        rss = 0
        for pid in self._compute_pids():
            try:
                rss += psutil.Process(pid).memory_info().rss
            except psutil.Error:
                continue
        return rss / 2**20

    def _read_slow(self) -> tuple[bool, float | None, float | None, float | None]:
        now = self._clock()
        if now - self._slow_at_s >= SLOW_READ_S:
            on_battery, charge = read_battery()
            idle = self._input_idle() if self._input_idle is not None else None
            self._slow = (on_battery, charge, read_temperature(), idle)
            self._slow_at_s = now
        return self._slow

    def read(self) -> Readings:
        """The machine's state now. Blocks for a few milliseconds (reads /proc or the OS)."""
        on_battery, charge, temperature, idle = self._read_slow()
        return Readings(
            other_cpu_percent=self._other_cpu_percent(),
            on_battery=on_battery,
            battery_percent=charge,
            temperature_c=temperature,
            memory_percent=float(psutil.virtual_memory().percent),
            compute_memory_mb=self._compute_memory_mb(),
            input_idle_s=idle,
        )
