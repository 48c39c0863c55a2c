"""Kernel speeds measured on this machine, for scenarios' reference speeds.

A scenario gives each kind's speed in units per second on one core of a reference machine;
:func:`measure_speed` measures it by running the real kernel on the first units of a job
(units of a Mandelbrot job are spread over its picture, so any run of them costs about the
mean).
"""

from __future__ import annotations

import time

from hydracompute.kinds import JobKind
from hydracompute.kinds.base import JSON


def measure_speed(kind: JobKind, params: JSON, seconds: float = 0.5) -> float:
    """Units per second of ``kind``'s real kernel on one core of this machine, for a job
    of (canonical) ``params``, measured over at least ``seconds`` (after a warm-up)."""
    kind.warm_up()
    total = kind.total_units(params)
    units, spent, start, chunk = 0, 0.0, 0, 1
    while spent < seconds:
        stop = min(start + chunk, total)
        began = time.perf_counter()
        kind.compute(params, start, stop)
        took = time.perf_counter() - began
        units, spent = units + (stop - start), spent + took
        start = 0 if stop >= total else stop
        if took < seconds / 20:
            chunk *= 2
    return units / spent
