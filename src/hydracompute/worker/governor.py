"""Carries out the owner's rules: reads the machine, decides, and suspends, resumes or
throttles the compute processes.

The governor polls a few times a second. Pausing takes effect at the poll that decides it
(the processes are stopped at once, not at the next exchange); the agent then tells the
coordinator, stops asking for chunks and keeps renewing the leases it holds, and gives them
back if the pause lasts longer than the owner's ``return_after_s``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Protocol

from hydracompute.worker.input_idle import InputIdleSource, input_idle_source
from hydracompute.worker.monitor import Monitor, read_temperature
from hydracompute.worker.rules import Decision, InvalidRules, Readings, Rules, decide
from hydracompute.worker.throttle import Throttle

log = logging.getLogger("hydracompute.worker")

#: How often the machine is read and the rules applied.
POLL_S = 0.25


class ReadingsSource(Protocol):
    """Anything that reads the machine: :class:`~hydracompute.worker.monitor.Monitor`, or
    a scripted stand-in in tests."""

    def read(self) -> Readings: ...


def _input_idle(rules: Rules) -> InputIdleSource | None:
    if rules.input_idle_minutes is None:
        return None
    found = input_idle_source()
    if isinstance(found, str):
        raise InvalidRules(
            [
                "input_idle_minutes: this machine does not report the time since the last "
                f"keyboard or mouse input ({found}); drop the rule, or run the worker "
                "inside your desktop session"
            ]
        )
    return found


def check_measurable(rules: Rules) -> list[str]:
    """Check that this machine can measure what ``rules`` need; returns warnings about the
    rules it cannot apply and will ignore.

    Raises:
        InvalidRules: a rule that cannot be ignored needs a measure this machine lacks
            (the input idle time outside a graphical session, for instance).
    """
    _input_idle(rules)
    if rules.max_temperature_c is not None and read_temperature() is None:
        return ["no temperature sensor found: max_temperature_c is ignored on this machine"]
    return []


def machine_monitor(rules: Rules, compute_pids: Callable[[], Iterable[int]]) -> Monitor:
    """A monitor of this machine that measures everything ``rules`` need.

    Raises:
        InvalidRules: as :func:`check_measurable`.
    """
    return Monitor(compute_pids, rules.cpu_window_s, _input_idle(rules))


class Governor:
    """Applies ``rules`` to the processes ``throttle`` controls.

    Args:
        rules: the owner's rules.
        monitor: reads the machine.
        throttle: suspends, resumes and duty-cycles the compute processes.
        local_now: the local time, for the allowed hours; injectable for tests.
        clock: monotonic seconds; injectable for tests.
    """

    def __init__(
        self,
        rules: Rules,
        monitor: ReadingsSource,
        throttle: Throttle,
        local_now: Callable[[], datetime] = datetime.now,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rules = rules
        self.monitor = monitor
        self.throttle = throttle
        self._local_now = local_now
        self._clock = clock
        self.decision = Decision(True, (), rules.cores, rules.duty_percent / 100)
        self.readings: Readings | None = None
        #: The worker's grid intensity as the pool last told it (the agent sets it from
        #: exchange answers; the monitor cannot read it).
        self.grid_gco2_per_kwh: float | None = None
        #: When the current state (running or paused) began, on ``clock``.
        self.since_s = clock()
        self.pauses = 0
        self._returned = False
        #: Set whenever the agent should act at once: the state changed, or the leases in
        #: hand are due to go back. The agent clears it.
        self.wake = asyncio.Event()

    def update(self, readings: Readings) -> Decision:
        """Decide on ``readings`` and carry the decision out."""
        previous = self.decision
        if self.grid_gco2_per_kwh is not None:
            readings = dataclasses.replace(readings, grid_gco2_per_kwh=self.grid_gco2_per_kwh)
        decision = decide(self.rules, readings, previous, self._local_now())
        self.decision, self.readings = decision, readings
        if decision.run != previous.run:
            self.since_s, self._returned = self._clock(), False
            self.wake.set()
            if decision.run:
                log.info("resuming")
            else:
                self.pauses += 1
                log.info("pausing: %s", decision.reason)
        if decision.run:
            if not previous.run or self.throttle.paused:
                self.throttle.resume()
            self.throttle.set_duty(decision.duty, self.rules.duty_period_s)
        elif not self.throttle.paused:
            self.throttle.pause()
        if self.return_due():
            self.wake.set()
        return decision

    def in_state_s(self) -> float:
        """Seconds since the worker last changed between running and paused."""
        return self._clock() - self.since_s

    def paused_for_s(self) -> float:
        return 0.0 if self.decision.run else self.in_state_s()

    def return_due(self) -> bool:
        """Paused long enough (or over the memory cap) that the chunks in hand should go
        back to the pool, and not yet given back during this pause."""
        if self.decision.run or self._returned:
            return False
        return self.decision.return_now or self.paused_for_s() >= self.rules.return_after_s

    def mark_returned(self) -> None:
        self._returned = True

    async def run(self, poll_s: float = POLL_S) -> None:
        """Poll and apply the rules forever (cancel to stop)."""
        while True:
            readings = await asyncio.to_thread(self.monitor.read)
            self.update(readings)
            await asyncio.sleep(poll_s)
