"""The machine's own power, measured where Linux gives it: RAPL energy counters.

Intel (and recent AMD) processors count the energy their packages draw; Linux shows each
package's counter, in microjoules, as ``/sys/class/powercap/intel-rapl:N/energy_uj``
(often readable by root only). A worker that can read them measures the power its machine
draws while it computes and tells the pool its **watts per core**: the packages' average
power over the time it computed, divided by the machine's logical CPUs. That share is
conservative (a machine computing on fewer cores than it has draws more per busy core), so
it never inflates a volunteer's energy; the pool believes it up to its own bound anyway
(see docs/credit.md).

:class:`PowerMeter` reads no clock: :func:`measure`, a task of the agent, samples it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

#: Where Linux shows its power-capping zones.
POWERCAP = Path("/sys/class/powercap")
#: A package zone (``intel-rapl:0``), not one of its sub-zones (``intel-rapl:0:0``, cores).
PACKAGE_ZONE = re.compile(r"^intel-rapl:\d+$")
#: Seconds of computing measured before a figure is given.
MEASURE_S = 60.0


@dataclass(frozen=True)
class Zone:
    """One package's energy counter and where it wraps round to zero."""

    energy_file: Path
    wrap_uj: int


def rapl_zones(root: Path = POWERCAP) -> list[Zone]:
    """The package zones whose counters this process can read (none: RAPL is absent, or
    readable by root only, as on Linux since 5.10 by default)."""
    zones = []
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return []
    for zone in entries:
        if not PACKAGE_ZONE.match(zone.name):
            continue
        try:
            int((zone / "energy_uj").read_text())
            wrap = int((zone / "max_energy_range_uj").read_text())
        except (OSError, ValueError):
            continue
        zones.append(Zone(zone / "energy_uj", wrap))
    return zones


class PowerMeter:
    """Averages the packages' power over the intervals in which the worker computes.

    Call :meth:`sample` now and then (each second) with the monotonic time and whether the
    worker computed since the previous sample; :meth:`watts_per_core` is the figure once
    ``MEASURE_S`` seconds of computing are measured.

    Args:
        zones: the packages' counters (see :func:`rapl_zones`).
        cpus: the machine's logical CPUs, over which the packages' power is shared.
    """

    def __init__(self, zones: list[Zone], cpus: int) -> None:
        if not zones:
            raise ValueError("no RAPL zone to measure")
        self.zones = zones
        self.cpus = max(1, cpus)
        self._last: tuple[float, list[int]] | None = None
        self.energy_j = 0.0
        self.seconds = 0.0

    def _read(self) -> list[int] | None:
        try:
            return [int(z.energy_file.read_text()) for z in self.zones]
        except (OSError, ValueError):
            return None

    def sample(self, now_s: float, computing: bool) -> None:
        """Read the counters; the interval since the previous sample counts if the worker
        computed throughout it (``computing``)."""
        counters = self._read()
        if counters is None:
            self._last = None
            return
        if self._last is not None and computing:
            then_s, before = self._last
            if now_s > then_s:
                for zone, old, new in zip(self.zones, before, counters, strict=True):
                    # A counter wraps round at max_energy_range_uj.
                    delta = new - old if new >= old else new + zone.wrap_uj - old
                    self.energy_j += delta / 1e6
                self.seconds += now_s - then_s
        self._last = (now_s, counters)

    def watts_per_core(self) -> float | None:
        """The packages' average power while computing per logical CPU, once ``MEASURE_S``
        seconds are measured; ``None`` before."""
        if self.seconds < MEASURE_S:
            return None
        return self.energy_j / self.seconds / self.cpus


def machine_meter(cpus: int, root: Path = POWERCAP) -> PowerMeter | None:
    """A meter of this machine's packages, or ``None`` where RAPL cannot be read."""
    zones = rapl_zones(root)
    return PowerMeter(zones, cpus) if zones else None


async def measure(
    meter: PowerMeter,
    computing: Callable[[], bool],
    tell: Callable[[float], Awaitable[None]],
    poll_s: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
) -> float:
    """Sample ``meter`` every ``poll_s`` seconds (an interval counts if ``computing()``
    held at both its ends) until it has a figure, then ``tell`` it (the pool) and return it.
    """
    was_computing = False
    while True:
        now_computing = computing()
        meter.sample(clock(), was_computing and now_computing)
        was_computing = now_computing
        figure = meter.watts_per_core()
        if figure is not None:
            log.info("measured %.2f W per core (RAPL)", figure)
            await tell(figure)
            return figure
        await asyncio.sleep(poll_s)
