"""The running worker's status file, and how ``hydracompute worker status`` reads it.

The agent rewrites a small JSON file next to its identity file about once a second (mode
0600: it names the pool and the chunks in hand). A reader trusts it only while the agent
that wrote it is alive (same pid, same start time) and the file is fresh.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from hydracompute.private_files import write_private
from hydracompute.worker.governor import Governor
from hydracompute.worker.rules import Rules

#: Seconds between rewrites by the agent.
STATUS_PERIOD_S = 1.0
#: A status older than this, from a live agent, means the agent is stuck.
STALE_AFTER_S = 15.0
SUFFIX = ".status.json"


def status_path(identity_file: Path) -> Path:
    """Where the agent using ``identity_file`` writes its status."""
    return identity_file.with_name(identity_file.stem + SUFFIX)


def identity_of(status_file: Path) -> Path:
    """The identity file of the agent writing ``status_file`` (see :func:`status_path`)."""
    return status_file.with_name(status_file.name.removesuffix(SUFFIX) + ".json")


def write_status(path: Path, status: dict[str, Any]) -> None:
    write_private(path, json.dumps(status, indent=1, sort_keys=True))


def rules_status(
    governor: Governor | None, rules: Rules, phase: str, holding: bool
) -> dict[str, Any]:
    """The part of the status that the rules decide: state, reason, limits, readings.

    Args:
        governor: the agent's governor (``None`` before it starts).
        phase: the agent's phase: ``starting``, ``working``, ``stopping`` or ``stopped``.
        holding: whether the agent holds leases (that a long pause would give back).
    """
    now_wall = time.time()
    decision = governor.decision if governor else None
    state, reason = phase, ""
    if phase == "working" and decision is not None:
        state, reason = ("running" if decision.run else "paused"), decision.reason
    return_in_s = None
    if governor is not None and decision is not None and not decision.run and holding:
        return_in_s = max(0.0, rules.return_after_s - governor.paused_for_s())
    return {
        "updated_s": now_wall,
        "state": state,
        "reason": reason,
        "since_s": now_wall - governor.in_state_s() if governor else now_wall,
        "return_in_s": return_in_s,
        "allowed_cores": decision.cores if decision else 0,
        "duty": decision.duty if decision else 0.0,
        "readings": dataclasses.asdict(governor.readings)
        if governor and governor.readings
        else None,
        "rules": rules.as_values(),
        "rules_summary": rules.summary(),
        "suspended_processes": len(governor.throttle.suspended) if governor else 0,
        "pauses": governor.pauses if governor else 0,
    }


def process_started_s() -> float:
    """This process's start time, to tell it from a later process with the same pid."""
    return psutil.Process().create_time()


@dataclass(frozen=True)
class SeenStatus:
    """A status file and what became of its writer."""

    path: Path
    status: dict[str, Any]
    alive: bool
    age_s: float

    @property
    def stale(self) -> bool:
        return self.alive and self.age_s > STALE_AFTER_S


def _alive(status: dict[str, Any]) -> bool:
    try:
        process = psutil.Process(int(status["pid"]))
        return abs(process.create_time() - float(status["pid_started_s"])) < 1.0
    except (psutil.Error, KeyError, TypeError, ValueError):
        return False


def read_statuses(paths: list[Path], now: float | None = None) -> list[SeenStatus]:
    """The readable status files among ``paths``, newest first."""
    now = time.time() if now is None else now
    seen = []
    for path in paths:
        try:
            status = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(status, dict):
            continue
        age = now - float(status.get("updated_s", 0.0))
        alive = _alive(status) and status.get("state") != "stopped"
        seen.append(SeenStatus(path, status, alive, age))
    return sorted(seen, key=lambda s: s.age_s)


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h" if seconds < 172800 else f"{seconds / 86400:.0f} days"


def _readings_line(readings: dict[str, Any] | None) -> str:
    if not readings:
        return "none yet"
    parts = [f"other programs' CPU {readings['other_cpu_percent']:.0f}%"]
    parts.append(f"memory {readings['memory_percent']:.0f}%")
    parts.append(f"compute processes {readings['compute_memory_mb']:.0f} MiB")
    if readings.get("battery_percent") is None:
        parts.append("no battery")
    else:
        source = "on battery" if readings.get("on_battery") else "on mains"
        parts.append(f"battery {readings['battery_percent']:.0f}% ({source})")
    temperature = readings.get("temperature_c")
    parts.append("no temperature sensor" if temperature is None else f"{temperature:.0f} °C")
    idle = readings.get("input_idle_s")
    if idle is not None:
        parts.append(f"last input {_ago(idle)} ago")
    return ", ".join(parts)


def describe(seen: SeenStatus, now: float | None = None) -> str:
    """A few lines for a person: what the worker is doing and why."""
    now = time.time() if now is None else now
    s = seen.status
    who = f"Worker {s.get('name', '?')!r} ({s.get('worker_id') or 'not enrolled yet'})"
    lines = [f"{who} on {s.get('url', '?')}"]
    if not seen.alive:
        lines.append(f"Not running: it stopped {_ago(seen.age_s)} ago (pid {s.get('pid')}).")
        return "\n".join(lines)
    if seen.stale:
        lines.append(
            f"Not responding: pid {s.get('pid')} is alive but last reported {_ago(seen.age_s)} ago."
        )
    state = str(s.get("state", "?"))
    since = _ago(now - float(s.get("since_s", now)))
    reason = s.get("reason") or ""
    lines.append(f"State: {state}{f' ({reason})' if reason else ''}, for {since}")
    if state == "paused" and s.get("return_in_s") is not None:
        lines.append(f"Chunks in hand go back to the pool in {_ago(s['return_in_s'])}.")
    lines.append(
        f"Cores: {s.get('allowed_cores')} of {s.get('cores')}, "
        f"duty {float(s.get('duty', 0.0)):.0%}; pid {s.get('pid')}, "
        f"up {_ago(now - float(s.get('started_s', now)))}"
    )
    leases = s.get("leases", [])
    suspended = s.get("suspended_processes", 0)
    lines.append(
        f"Chunks: {len(leases)} in hand"
        + (f" ({suspended} process(es) suspended)" if suspended else "")
        + f", {s.get('chunks_done', 0)} done, {s.get('chunks_failed', 0)} failed, "
        f"{s.get('leases_returned', 0)} given back"
    )
    for lease in leases:
        lines.append(
            f"  {lease['kind']} job {lease['job_id']} units {lease['start']}-{lease['stop']}, "
            f"{lease['held_s']:.0f} s in hand"
        )
    lines.append(f"Readings: {_readings_line(s.get('readings'))}")
    if s.get("coordinator_error"):
        lines.append(f"Coordinator unreachable: {s['coordinator_error']}")
    lines.append(f"Rules: {s.get('rules_summary', 'no limits')}")
    return "\n".join(lines)
