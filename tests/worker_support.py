"""Measuring how much of a core a process gets, for the duty-cycle tests (Linux)."""

from __future__ import annotations

from pathlib import Path

#: Waiting for a core longer than this share of the window means the machine was busy with
#: other work (another test suite, say), which the duty cycle does not control.
CONTENDED = 0.05


def core_time(pid: int) -> tuple[float, float]:
    """Seconds ``pid`` has spent on a core, and runnable but waiting for one (schedstat)."""
    on_cpu_ns, waiting_ns, _ = Path(f"/proc/{pid}/schedstat").read_text().split()
    return int(on_cpu_ns) / 1e9, int(waiting_ns) / 1e9


def check_duty_share(
    before: tuple[float, float], after: tuple[float, float], window_s: float, duty: float
) -> str:
    """Assert that a process held to ``duty`` had that share of a core (± 10 points).

    The share it was allowed to run (on a core, or runnable and waiting for one) is what the
    duty cycle controls, so it is checked always; the share it actually got on a core is
    checked against the same bounds when no other work kept it waiting, and is never more.
    Returns the figures, for the test's output.
    """
    on_cpu = (after[0] - before[0]) / window_s
    waiting = (after[1] - before[1]) / window_s
    figures = f"{on_cpu:.1%} of a core on it, {on_cpu + waiting:.1%} allowed to run"
    assert duty - 0.1 <= on_cpu + waiting <= duty + 0.1, figures
    assert on_cpu <= duty + 0.1, figures
    if waiting < CONTENDED:
        assert on_cpu >= duty - 0.1, figures
    return figures
