"""Time since the owner last touched the keyboard or mouse, where the platform reports it.

- X11 (``DISPLAY`` set, not a Wayland session): the screen-saver extension, through ctypes
  (``libX11`` and ``libXss``), with no process started.
- GNOME on Wayland: Mutter's idle monitor over D-Bus (``gdbus``).
- macOS: ``HIDIdleTime`` from ``ioreg -c IOHIDSystem``.

Elsewhere (a console, a server, a container) there is no such measure:
:func:`input_idle_source` says why, and the rule that needs it refuses to start.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable

#: A source returns seconds since the last input, or ``None`` if it failed this time.
InputIdleSource = Callable[[], float | None]

_COMMAND_TIMEOUT_S = 2.0


class _XScreenSaverInfo(ctypes.Structure):
    _fields_ = [
        ("window", ctypes.c_ulong),
        ("state", ctypes.c_int),
        ("kind", ctypes.c_int),
        ("til_or_since", ctypes.c_ulong),
        ("idle", ctypes.c_ulong),
        ("event_mask", ctypes.c_ulong),
    ]


def _x11_source() -> InputIdleSource | str:
    names = {lib: ctypes.util.find_library(lib) for lib in ("X11", "Xss")}
    missing = [f"lib{lib}" for lib, path in names.items() if path is None]
    if missing:
        return f"the X11 libraries are missing ({', '.join(missing)})"
    x11 = ctypes.cdll.LoadLibrary(names["X11"] or "")
    xss = ctypes.cdll.LoadLibrary(names["Xss"] or "")
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x11.XDefaultRootWindow.restype = ctypes.c_ulong
    x11.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
    xss.XScreenSaverAllocInfo.restype = ctypes.POINTER(_XScreenSaverInfo)
    xss.XScreenSaverQueryExtension.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_int),
        ctypes.POINTER(ctypes.c_int),
    ]
    xss.XScreenSaverQueryInfo.argtypes = [
        ctypes.c_void_p,
        ctypes.c_ulong,
        ctypes.POINTER(_XScreenSaverInfo),
    ]
    display = x11.XOpenDisplay(None)
    if not display:
        return f"cannot open the X display {os.environ.get('DISPLAY', '')!r}"
    event, error = ctypes.c_int(), ctypes.c_int()
    if not xss.XScreenSaverQueryExtension(display, ctypes.byref(event), ctypes.byref(error)):
        return "the X server has no screen-saver extension"
    info = xss.XScreenSaverAllocInfo()
    root = x11.XDefaultRootWindow(display)

    def read() -> float | None:
        if not xss.XScreenSaverQueryInfo(display, root, info):
            return None
        return float(info.contents.idle) / 1000.0

    return read


def _run(command: list[str]) -> str | None:
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=_COMMAND_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def _gnome_source() -> InputIdleSource | str:
    gdbus = shutil.which("gdbus")
    if gdbus is None:
        return "a Wayland session, and gdbus (to ask GNOME's idle monitor) is not installed"
    command = [
        gdbus,
        "call",
        "--session",
        "--dest",
        "org.gnome.Mutter.IdleMonitor",
        "--object-path",
        "/org/gnome/Mutter/IdleMonitor/Core",
        "--method",
        "org.gnome.Mutter.IdleMonitor.GetIdletime",
    ]

    def read() -> float | None:
        match = re.search(r"(\d+)", _run(command) or "")
        return int(match.group(1)) / 1000.0 if match else None

    return read if read() is not None else "a Wayland session without GNOME's idle monitor"


def _macos_source() -> InputIdleSource | str:
    def read() -> float | None:
        match = re.search(r'"HIDIdleTime"\s*=\s*(\d+)', _run(["ioreg", "-c", "IOHIDSystem"]) or "")
        return int(match.group(1)) / 1e9 if match else None

    return read if read() is not None else "ioreg does not report HIDIdleTime"


def input_idle_source() -> InputIdleSource | str:
    """A way to read the input idle time on this machine, or why there is none."""
    if sys.platform == "darwin":
        return _macos_source()
    if os.environ.get("WAYLAND_DISPLAY"):
        # X11's measure would only see X clients' input, not the session's: not trusted.
        return _gnome_source()
    if os.environ.get("DISPLAY"):
        try:
            return _x11_source()
        except OSError as exc:
            return f"the X11 libraries cannot be loaded ({exc})"
    return "no graphical session (DISPLAY is not set)"
