"""Run the worker as a service of the owner's session: a systemd user unit (Linux) or a
launchd agent (macOS), started at login, restarted if it fails, at the lowest priority.

The join token is never put on the command line, which every user of the machine can read:
systemd reads it from an environment file, launchd from the plist's environment; both are
written readable by their owner only. Nothing here touches the disk: :func:`service_files`
returns what to write and :func:`enable_steps` what to run.
"""

from __future__ import annotations

import plistlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Platform = Literal["linux", "macos"]
UNIT_NAME = "hydracompute-worker.service"
LAUNCHD_LABEL = "org.hydracompute.worker"
TOKEN_VARIABLE = "HYDRACOMPUTE_JOIN_TOKEN"
#: Exit codes that restarting cannot fix: a usage error (bad rules) and a refusal (bad token).
PERMANENT_EXIT_CODES = (2, 4)
#: What a value in an environment file may hold without quoting (tokens are URL-safe).
_PLAIN_VALUE = re.compile(r"^[A-Za-z0-9._~+/=:@,-]+$")
_SYSTEMD_SPECIAL = re.compile(r"[\s\"'\\;]")


@dataclass(frozen=True)
class ServiceFile:
    """A file to write: ``secret`` ones hold the join token and get mode 0600."""

    path: Path
    content: str
    secret: bool = False

    @property
    def mode(self) -> int:
        return 0o600 if self.secret else 0o644


def _systemd_word(word: str) -> str:
    """One argument of ``ExecStart=``: specifiers (%) and variables ($) kept literal."""
    word = word.replace("%", "%%").replace("$", "$$")
    if word and not _SYSTEMD_SPECIAL.search(word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _env_line(name: str, value: str) -> str:
    if not _PLAIN_VALUE.match(value):
        raise ValueError(f"{name} holds characters an environment file cannot carry plainly")
    return f"{name}={value}\n"


def systemd_files(
    command: Sequence[str],
    token: str,
    config_home: Path,
    description: str,
    environment: Mapping[str, str] | None = None,
) -> list[ServiceFile]:
    """The user unit and its environment file (with the token), under ``config_home``
    (``$XDG_CONFIG_HOME``, usually ``~/.config``).

    Raises:
        ValueError: the token or an environment value cannot be written safely.
    """
    env_file = config_home / "hydracompute" / "worker.env"
    variables = {TOKEN_VARIABLE: token, **(environment or {})}
    env_text = "# Read by hydracompute-worker.service; keep it private (mode 0600).\n" + "".join(
        _env_line(name, value) for name, value in variables.items()
    )
    unit = f"""\
# Written by 'hydracompute worker install-service'; run it again to change the options.
[Unit]
Description={description}
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart={" ".join(_systemd_word(word) for word in command)}
EnvironmentFile={_systemd_word(str(env_file))}
Environment=PYTHONUNBUFFERED=1
# Lowest priority for the agent too; the compute processes lower their own further.
Nice=19
IOSchedulingClass=idle
# SIGINT, as Ctrl-C: the agent sends its results and gives back unfinished chunks, and the
# compute processes (which ignore it) are not killed under it first.
KillSignal=SIGINT
TimeoutStopSec=60
Restart=on-failure
RestartSec=30
RestartPreventExitStatus={" ".join(str(code) for code in PERMANENT_EXIT_CODES)}

[Install]
WantedBy=default.target
"""
    return [
        ServiceFile(config_home / "systemd" / "user" / UNIT_NAME, unit),
        ServiceFile(env_file, env_text, secret=True),
    ]


def launchd_files(
    command: Sequence[str],
    token: str,
    home: Path,
    environment: Mapping[str, str] | None = None,
) -> list[ServiceFile]:
    """The launchd agent (its environment holds the token, so the plist is private)."""
    logs = home / "Library" / "Logs" / "hydracompute-worker.log"
    agent = {
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": list(command),
        "EnvironmentVariables": {
            TOKEN_VARIABLE: token,
            "PYTHONUNBUFFERED": "1",
            **(environment or {}),
        },
        "RunAtLoad": True,
        # Restart after a crash, not after a clean stop or a refusal it cannot fix.
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": 30,
        "ProcessType": "Background",
        "LowPriorityIO": True,
        "LowPriorityBackgroundIO": True,
        "Nice": 19,
        "StandardOutPath": str(logs),
        "StandardErrorPath": str(logs),
    }
    path = home / "Library" / "LaunchAgents" / f"{LAUNCHD_LABEL}.plist"
    return [ServiceFile(path, plistlib.dumps(agent).decode(), secret=True)]


def enable_steps(platform: Platform, files: Sequence[ServiceFile]) -> list[tuple[str, str]]:
    """(command, what it does) for the owner to run after the files are written."""
    if platform == "linux":
        unit = UNIT_NAME
        return [
            ("systemctl --user daemon-reload", "make systemd read the new unit"),
            (f"systemctl --user enable --now {unit}", "start it now and at every login"),
            ("loginctl enable-linger $USER", "optional: keep computing while you are logged out"),
            (f"journalctl --user -u {unit} -f", "follow its log"),
            ("hydracompute worker status", "what it is doing, and why"),
            (f"systemctl --user disable --now {unit}", "stop it and start it no more"),
        ]
    plist = files[0].path
    return [
        (f"launchctl bootstrap gui/$(id -u) {plist}", "start it now and at every login"),
        (f"launchctl kickstart -k gui/$(id -u)/{LAUNCHD_LABEL}", "restart it after a change"),
        ("hydracompute worker status", "what it is doing, and why"),
        (f"launchctl bootout gui/$(id -u)/{LAUNCHD_LABEL}", "stop it and start it no more"),
    ]
