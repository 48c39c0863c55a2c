"""``hydracompute worker``: the run command as before, its rules, ``status`` and
``install-service`` (systemd user unit, launchd agent)."""

from __future__ import annotations

import json
import os
import plistlib
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from click.testing import CliRunner, Result

from hydracompute.cli import main
from hydracompute.worker.rules import SETTINGS
from hydracompute.worker.service import LAUNCHD_LABEL, UNIT_NAME
from hydracompute.worker.status import STALE_AFTER_S, write_status

TOKEN = "jt-Secret_token-123"
FINGERPRINT = "sha256:" + "ab" * 32


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def config_home() -> Path:
    return Path(os.environ["XDG_CONFIG_HOME"])


def data_home() -> Path:
    return Path(os.environ["XDG_DATA_HOME"])


# --- the run command ------------------------------------------------------------------------


def test_worker_url_still_runs_a_worker_and_the_subcommands_are_listed() -> None:
    shown = run("worker", "--help")
    assert shown.exit_code == 0
    for command in ("run", "status", "install-service"):
        assert command in shown.output
    # A first argument that is no subcommand is the URL of 'worker run': the rules are
    # checked (and refused here) before anything is contacted.
    refused = run(
        "worker", "https://pool.example:8765", "--token", TOKEN, "--cpu-resume-percent", "5"
    )
    assert refused.exit_code == 2
    assert "cpu_resume_percent: needs cpu_pause_percent" in refused.output
    options_first = run("worker", "--token", TOKEN, "--duty-percent", "0", "https://pool.example")
    assert options_first.exit_code == 2 and "duty_percent" in options_first.output


def test_every_rule_is_a_flag_and_the_old_environment_variables_still_work() -> None:
    helped = run("worker", "run", "--help").output
    for setting in SETTINGS:
        assert "--" + setting.key.replace("_", "-") in helped
    refused = run(
        "worker", "https://pool.example", "--token", TOKEN, env={"HYDRACOMPUTE_WORKER_CORES": "0"}
    )
    assert refused.exit_code == 2 and "--cores" in refused.output
    refused = run(
        "worker",
        "https://pool.example",
        "--token",
        TOKEN,
        env={"HYDRACOMPUTE_WORKER_DUTY_PERCENT": "500"},
    )
    assert refused.exit_code == 2 and "duty_percent" in refused.output


def test_a_bad_config_file_is_named_with_every_problem(tmp_path: Path) -> None:
    default = config_home() / "hydracompute" / "worker.toml"
    default.parent.mkdir(parents=True)
    default.write_text('cpu_pause = 30\npriority = "lowest"\n')
    refused = run("worker", "https://pool.example", "--token", TOKEN)
    assert refused.exit_code == 2
    assert str(default) in refused.output
    assert "did you mean 'cpu_pause_percent'" in refused.output and "priority" in refused.output
    elsewhere = tmp_path / "rules.toml"
    elsewhere.write_text("duty_percent = [")
    refused = run("worker", "https://pool.example", "--token", TOKEN, "--config", str(elsewhere))
    assert refused.exit_code == 2 and "not valid TOML" in refused.output


def test_input_idle_without_a_graphical_session_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for variable in ("DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(variable, raising=False)
    refused = run("worker", "https://pool.example", "--token", TOKEN, "--input-idle-minutes", "5")
    if sys.platform == "darwin":
        pytest.skip("macOS always reports the input idle time")
    assert refused.exit_code == 2
    assert "input_idle_minutes" in refused.output and "DISPLAY is not set" in refused.output


# --- status ---------------------------------------------------------------------------------


def status_of(pid: int, started_s: float, **extra: Any) -> dict[str, Any]:
    now = time.time()
    return {
        "pid": pid,
        "pid_started_s": started_s,
        "started_s": now - 3600,
        "updated_s": now,
        "url": "https://pool.example:8765",
        "name": "laptop",
        "worker_id": "w-0123456789ab",
        "state": "paused",
        "reason": "on battery",
        "since_s": now - 42,
        "return_in_s": 18.0,
        "cores": 4,
        "allowed_cores": 0,
        "duty": 0.0,
        "readings": {
            "other_cpu_percent": 12.0,
            "on_battery": True,
            "battery_percent": 81.0,
            "temperature_c": None,
            "memory_percent": 40.0,
            "compute_memory_mb": 300.0,
            "input_idle_s": None,
        },
        "rules": {"on_battery": False},
        "rules_summary": "on_battery=False",
        "leases": [
            {"lease_id": "ab", "job_id": "j1", "kind": "pi", "start": 3, "stop": 9, "held_s": 50.0}
        ],
        "suspended_processes": 4,
        "chunks_done": 17,
        "chunks_failed": 0,
        "leases_returned": 2,
        "pauses": 3,
        "coordinator_error": "",
        **extra,
    }


def test_status_without_a_worker_says_so() -> None:
    shown = run("worker", "status")
    assert shown.exit_code == 1
    assert "No worker is running" in shown.output


def test_status_of_a_running_worker_says_what_and_why() -> None:
    me = psutil.Process()
    path = data_home() / "hydracompute" / "workers" / "abc.status.json"
    write_status(path, status_of(me.pid, me.create_time()))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    shown = run("worker", "status")
    assert shown.exit_code == 0, shown.output
    text = shown.output
    assert "Worker 'laptop' (w-0123456789ab) on https://pool.example:8765" in text
    assert "State: paused (on battery), for 42 s" in text
    assert "go back to the pool in 18 s" in text
    assert "1 in hand (4 process(es) suspended), 17 done, 0 failed, 2 given back" in text
    assert "pi job j1 units 3-9" in text
    assert "battery 81% (on battery)" in text and "no temperature sensor" in text
    listed = json.loads(run("worker", "status", "--json").output)
    assert listed[0]["running"] is True and listed[0]["state"] == "paused"


def test_status_of_a_stopped_or_stuck_worker(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    identity = tmp_path / "worker.json"
    write_status(tmp_path / "worker.status.json", status_of(gone.pid, time.time() - 100))
    shown = run("worker", "status", "--identity", str(identity))
    assert shown.exit_code == 1
    assert "Not running" in shown.output and "No worker is running" in shown.output

    me = psutil.Process()
    old = time.time() - STALE_AFTER_S - 30
    write_status(
        tmp_path / "worker.status.json", status_of(me.pid, me.create_time(), updated_s=old)
    )
    shown = run("worker", "status", "--identity", str(identity))
    assert shown.exit_code == 1
    assert "Not responding" in shown.output


# --- install-service ------------------------------------------------------------------------


def install(*extra: str) -> Result:
    return run(
        "worker",
        "install-service",
        "https://pool.example:8765",
        "--ca-fingerprint",
        FINGERPRINT,
        "--cores",
        "2",
        "--name",
        "my laptop",
        "--cpu-pause-percent",
        "30",
        "--no-on-battery",
        "--hours",
        "mon-fri 18:00-08:00",
        "--hours",
        "weekends",
        *extra,
        env={"HYDRACOMPUTE_JOIN_TOKEN": TOKEN},
    )


def test_a_systemd_user_unit_with_the_token_kept_private() -> None:
    result = install("--platform", "linux")
    assert result.exit_code == 0, result.output
    unit_path = config_home() / "systemd" / "user" / UNIT_NAME
    env_path = config_home() / "hydracompute" / "worker.env"
    unit = unit_path.read_text()
    assert stat.S_IMODE(env_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(unit_path.stat().st_mode) == 0o644
    assert TOKEN not in unit and f"HYDRACOMPUTE_JOIN_TOKEN={TOKEN}\n" in env_path.read_text()
    (exec_start,) = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    assert exec_start == (
        f"ExecStart={sys.executable} -m hydracompute worker https://pool.example:8765 "
        f'--ca-fingerprint {FINGERPRINT} --cores 2 --name "my laptop" '
        '--cpu-pause-percent 30.0 --no-on-battery --hours "mon-fri 18:00-08:00" --hours weekends'
    )
    for line in (
        f"EnvironmentFile={env_path}",
        "Nice=19",
        "Restart=on-failure",
        "KillSignal=SIGINT",
        "WantedBy=default.target",
    ):
        assert line in unit.splitlines()
    assert "systemctl --user enable --now hydracompute-worker.service" in result.output
    assert "loginctl enable-linger" in result.output
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed: the unit's syntax was not verified")
    checked = subprocess.run(
        [analyze, "verify", str(unit_path)], capture_output=True, text=True, timeout=60, check=False
    )
    complaints = [
        line for line in (checked.stdout + checked.stderr).splitlines() if UNIT_NAME in line
    ]
    assert checked.returncode == 0 and complaints == [], checked.stdout + checked.stderr


def test_a_launchd_agent_with_the_token_in_its_private_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    result = install("--platform", "macos")
    assert result.exit_code == 0, result.output
    path = tmp_path / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    agent = plistlib.loads(path.read_bytes())
    assert agent["Label"] == LAUNCHD_LABEL
    arguments = agent["ProgramArguments"]
    assert arguments[:5] == [
        sys.executable,
        "-m",
        "hydracompute",
        "worker",
        "https://pool.example:8765",
    ]
    assert TOKEN not in arguments and "my laptop" in arguments
    assert agent["EnvironmentVariables"]["HYDRACOMPUTE_JOIN_TOKEN"] == TOKEN
    assert (agent["Nice"], agent["LowPriorityIO"], agent["ProcessType"]) == (19, True, "Background")
    assert agent["RunAtLoad"] is True and agent["KeepAlive"] == {"SuccessfulExit": False}
    assert f"launchctl bootstrap gui/$(id -u) {path}" in result.output


def test_print_shows_the_files_and_writes_nothing() -> None:
    result = install("--platform", "linux", "--print")
    assert result.exit_code == 0, result.output
    assert "[Service]" in result.output and "HYDRACOMPUTE_JOIN_TOKEN=<join token>" in result.output
    assert TOKEN not in result.output
    assert not (config_home() / "systemd").exists()
    assert not (config_home() / "hydracompute" / "worker.env").exists()


@pytest.mark.parametrize("target", ["linux", "macos"])
def test_print_needs_no_token_but_writing_does(target: str) -> None:
    shown = run(
        "worker", "install-service", "https://pool.example", "--platform", target, "--print"
    )
    assert shown.exit_code == 0, shown.output
    assert "<join token>" in shown.output
    refused = run("worker", "install-service", "https://pool.example", "--platform", target)
    assert refused.exit_code == 2 and "--token" in refused.output
    assert not (config_home() / "systemd").exists()
    assert not (config_home() / "hydracompute" / "worker.env").exists()


def test_bad_rules_or_fingerprint_are_refused_before_anything_is_written() -> None:
    assert install("--platform", "linux", "--duty-percent", "0").exit_code == 2
    refused = run(
        "worker",
        "install-service",
        "https://pool.example",
        "--ca-fingerprint",
        "sha256:nothex",
        "--platform",
        "linux",
        env={"HYDRACOMPUTE_JOIN_TOKEN": TOKEN},
    )
    assert refused.exit_code == 2
    assert not (config_home() / "systemd").exists()


def test_a_token_that_cannot_go_in_an_environment_file_is_refused() -> None:
    result = run(
        "worker",
        "install-service",
        "https://pool.example",
        "--platform",
        "linux",
        env={"HYDRACOMPUTE_JOIN_TOKEN": 'a"b $c'},
    )
    assert result.exit_code == 2 and "--token" in result.output
