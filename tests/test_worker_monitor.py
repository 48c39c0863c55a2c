"""Readings of this machine: the worker's own processes never count as other programs;
the input idle time is read where a desktop reports it and refused where none does."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator

import psutil
import pytest

from hydracompute.worker.governor import check_measurable, machine_monitor
from hydracompute.worker.input_idle import input_idle_source
from hydracompute.worker.monitor import Monitor
from hydracompute.worker.rules import InvalidRules, rules_from_values


@pytest.fixture
def own_spinner() -> Iterator[int]:
    """A child of this process that keeps a core busy, as a compute process does."""
    process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield process.pid
    finally:
        process.kill()
        process.wait()


def test_the_workers_own_busy_processes_are_not_other_programs(own_spinner: int) -> None:
    # The same machine seen by this process (the spinner is its child: its own work) and by
    # an unrelated idle process (the spinner is another program to it), over the same
    # moments: the difference is the spinner alone, whatever else the machine is doing.
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        mine = Monitor(lambda: [own_spinner], cpu_window_s=1.0)
        theirs = Monitor(lambda: [], cpu_window_s=1.0, root=psutil.Process(bystander.pid))
        spinner = psutil.Process(own_spinner)
        deadline = time.monotonic() + 10
        history = [(time.monotonic(), sum(spinner.cpu_times()[:2]))]
        while history[-1][1] < 1.2:  # a full window of it spinning
            assert time.monotonic() < deadline, "the spinner did not run"
            mine.read(), theirs.read()
            time.sleep(0.1)  # the monitors' own polling rhythm
            history.append((time.monotonic(), sum(spinner.cpu_times()[:2])))
        readings, seen_by_other = mine.read(), theirs.read()
    finally:
        bystander.kill()
        bystander.wait()
    # What the spinner really got over the monitors' last window (on a loaded machine, less
    # than a core), as a share of the whole machine.
    now, cpu_now = history[-1]
    then, cpu_then = min(history, key=lambda sample: abs(now - 1.0 - sample[0]))
    share_of_spinner = 100 * (cpu_now - cpu_then) / (now - then) / (psutil.cpu_count() or 1)
    difference = seen_by_other.other_cpu_percent - readings.other_cpu_percent
    assert 0.6 * share_of_spinner < difference < 1.4 * share_of_spinner
    assert 0 <= readings.memory_percent <= 100
    assert readings.compute_memory_mb > 1  # the spinner's resident memory is the worker's
    assert seen_by_other.compute_memory_mb == 0
    assert readings.battery_percent is None or 0 <= readings.battery_percent <= 100


def test_without_a_desktop_the_input_idle_rule_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    if sys.platform == "darwin":
        pytest.skip("macOS always reports the input idle time")
    for variable in ("DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(variable, raising=False)
    assert input_idle_source() == "no graphical session (DISPLAY is not set)"
    rules = rules_from_values({"input_idle_minutes": 5})
    with pytest.raises(InvalidRules, match="DISPLAY is not set"):
        check_measurable(rules)
    with pytest.raises(InvalidRules, match="input_idle_minutes"):
        machine_monitor(rules, lambda: [])
    assert check_measurable(rules_from_values({})) == []


@pytest.mark.skipif(shutil.which("Xvfb") is None, reason="needs Xvfb to stand in for a desktop")
def test_the_input_idle_time_of_an_x11_display(monkeypatch: pytest.MonkeyPatch) -> None:
    display = f":{90 + os.getpid() % 100}"
    server = subprocess.Popen(
        ["Xvfb", display, "-nolisten", "tcp"], stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL
    )
    try:
        monkeypatch.setenv("DISPLAY", display)
        monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
        deadline = time.monotonic() + 20
        while not callable(source := input_idle_source()):
            assert time.monotonic() < deadline, source
            time.sleep(0.05)  # the X server is starting
        first = source()
        assert first is not None and first >= 0
        later_deadline = time.monotonic() + 5
        while (later := source()) is not None and later <= first:
            assert time.monotonic() < later_deadline
            time.sleep(0.05)
        assert later is not None and later > first  # nobody touches this display
        monitor = machine_monitor(rules_from_values({"input_idle_minutes": 1}), lambda: [])
        assert monitor.read().input_idle_s is not None
        if shutil.which("xdotool"):  # input resets it
            time.sleep(0.3)  # idle time to lose
            before = source()
            subprocess.run(["xdotool", "mousemove", "10", "10"], check=True, timeout=10)
            after = source()
            assert before is not None and after is not None and after < before
    finally:
        server.kill()
        server.wait()
