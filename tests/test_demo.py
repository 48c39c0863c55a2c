"""``hydracompute demo`` as a user runs it: a real process, stopped by a real signal."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from hydracompute.demo import command_name

pytestmark = pytest.mark.e2e

LOGIN = re.compile(
    r"^  \S*hydracompute login https://127\.0\.0\.1:\d+ --api-key hck_\S+ "
    r"--ca-fingerprint sha256:[0-9a-f]{64}$"
)


def start_demo(tmp_path: Path, *options: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "hydracompute", "demo", "--cores", "1", "--size", "64", *options],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # Its own session: the signal reaches the demo alone, not its children (the hard
        # case: a terminal's Ctrl-C would reach them too), nor this test.
        start_new_session=True,
    )


def lines(demo: subprocess.Popen[str]) -> Iterator[str]:
    assert demo.stdout is not None
    for line in demo.stdout:
        yield line.rstrip("\n")
    raise AssertionError(f"the demo ended (exit {demo.wait()}) before the expected line")


def its_pool(demo: subprocess.Popen[str]) -> tuple[list[psutil.Process], Path]:
    """The demo's child processes (all of them) and the data directory it gave them."""
    children = psutil.Process(demo.pid).children(recursive=True)
    commands = [" ".join(child.cmdline()) for child in children]
    (coordinator,) = [c for c in commands if " coordinator " in c]
    data_dir = Path(coordinator.split("--data-dir ")[1].split()[0])
    assert (data_dir / "admin.key").is_file()
    return children, data_dir


def end(demo: subprocess.Popen[str]) -> None:
    """Kill the demo if a failed assertion left it running; close its pipe."""
    demo.kill()
    demo.wait()
    if demo.stdout is not None:
        demo.stdout.close()


def assert_cleaned_up(children: list[psutil.Process], data_dir: Path) -> None:
    _, alive = psutil.wait_procs(children, timeout=30)
    assert alive == []
    assert not data_dir.exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_demo_keep_stopped_by_a_signal_stops_its_pool_and_deletes_its_keys(
    tmp_path: Path, sig: signal.Signals
) -> None:
    demo = start_demo(tmp_path, "--samples", "1e6", "--keep")
    try:
        # Not on a terminal, the login command is still one whole line (for copy-paste).
        login = next(line for line in lines(demo) if " login " in line)
        assert LOGIN.match(login), login
        children, data_dir = its_pool(demo)
        demo.send_signal(sig)
        assert demo.wait(timeout=60) == 0
        assert_cleaned_up(children, data_dir)
    finally:
        end(demo)


def test_demo_stopped_during_a_job_cleans_up_and_says_so(tmp_path: Path) -> None:
    demo = start_demo(tmp_path, "--samples", "1e15")
    try:
        next(line for line in lines(demo) if line.startswith("Coordinator at"))
        children, data_dir = its_pool(demo)
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(timeout=60) == 128 + signal.SIGTERM
        assert_cleaned_up(children, data_dir)
        assert demo.stdout is not None
        assert "Stopped by SIGTERM" in demo.stdout.read()
    finally:
        end(demo)


def test_the_command_is_named_as_the_user_can_run_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scripts = Path(sys.executable).parent
    assert (scripts / "hydracompute").exists()
    monkeypatch.setenv("PATH", f"{scripts}{os.pathsep}/usr/bin")
    assert command_name() == "hydracompute"
    # As after 'make demo': the environment's scripts are not on the PATH.
    monkeypatch.setenv("PATH", "/usr/bin")
    monkeypatch.chdir(tmp_path)
    assert command_name() == str((scripts / "hydracompute").absolute())
    monkeypatch.chdir(scripts.parent.parent)
    assert command_name() == f"{scripts.parent.name}/bin/hydracompute"
