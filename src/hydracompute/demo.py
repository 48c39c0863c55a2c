"""``hydracompute demo``: a coordinator and local workers computing π and a Mandelbrot set."""

from __future__ import annotations

import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console

from hydracompute.client import Client, JobInfo
from hydracompute.coordinator.server import ADMIN_KEY_FILE, JOIN_TOKEN_FILE
from hydracompute.errors import HydraError
from hydracompute.tls import fingerprint

STARTUP_TIMEOUT_S = 60.0


@dataclass
class LocalCoordinator:
    """A ``hydracompute coordinator`` child process and what it wrote in its data directory."""

    process: subprocess.Popen[str]
    url: str
    data_dir: Path

    @property
    def admin_key(self) -> str:
        return (self.data_dir / ADMIN_KEY_FILE).read_text().strip()

    @property
    def join_token(self) -> str:
        return (self.data_dir / JOIN_TOKEN_FILE).read_text().strip()

    @property
    def ca_fingerprint(self) -> str | None:
        ca = self.data_dir / "tls" / "ca.pem"
        return fingerprint(ca.read_bytes()) if self.url.startswith("https") else None

    def client(self) -> Client:
        return Client(self.url, api_key=self.admin_key, ca_fingerprint=self.ca_fingerprint)


def start_coordinator(
    data_dir: Path, port: int = 0, extra: list[str] | None = None
) -> LocalCoordinator:
    """Start ``hydracompute coordinator`` (TLS, keys in ``data_dir``) in a child process.

    Its log goes to ``coordinator.log`` in ``data_dir`` (private: the banner repeats the
    admin key and join token); a coordinator that fails to start is reported with it.
    """
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    log_path = data_dir / "coordinator.log"
    log_path.touch(mode=0o600)
    with log_path.open("a") as log:
        process = _spawn_coordinator(data_dir, port, extra or [], log)
    assert process.stdout is not None
    try:
        line = process.stdout.readline()
    except BaseException:  # e.g. Ctrl-C while it starts: it must not outlive the caller
        process.kill()
        process.wait()
        raise
    if not line.startswith("URL "):
        process.kill()
        process.wait()
        process.stdout.close()
        tail = log_path.read_text()[-2000:]
        raise RuntimeError(f"the coordinator did not start (it printed {line!r}); log:\n{tail}")
    return LocalCoordinator(process, line.split()[1], data_dir)


def _spawn_coordinator(
    data_dir: Path, port: int, extra: list[str], log: Any
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hydracompute",
            "--log-level",
            "warning",
            "coordinator",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )


def start_worker(
    coordinator: LocalCoordinator, cores: int, name: str, options: Sequence[str] = ()
) -> subprocess.Popen[str]:
    """Start ``hydracompute worker`` joined to ``coordinator``, its identity kept in the
    coordinator's data directory (so a throw-away pool leaves nothing in the user's), with
    the owner's ``options`` (e.g. ``["--grid-zone", "FR"]``).

    The join token goes through the environment, not the command line, which other users
    of the machine can read.
    """
    identity = coordinator.data_dir / "workers" / f"{name}.json"
    environment = dict(os.environ, HYDRACOMPUTE_JOIN_TOKEN=coordinator.join_token)
    pin = ["--ca-fingerprint", fp] if (fp := coordinator.ca_fingerprint) else []
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hydracompute",
            "--log-level",
            "warning",
            "worker",
            coordinator.url,
            *pin,
            "--cores",
            str(cores),
            "--name",
            name,
            "--identity",
            str(identity),
            *options,
        ],
        env=environment,
        text=True,
    )


def stop(process: subprocess.Popen[str], timeout: float = 15.0) -> None:
    """Ask a child to stop as Ctrl-C would; kill it if it does not."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()


def _wait(console: Console, client: Client, job_id: str, label: str) -> JobInfo:
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TimeElapsedColumn

    with Progress(
        "{task.description}",
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task(label, total=1.0)
        return client.job(job_id).wait(
            on_progress=lambda info: bar.update(task, completed=info.progress)
        )


#: Signals that stop the demo as Ctrl-C does, cleaning up: SIGTERM (``kill``, service
#: managers), SIGHUP (its terminal closed).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """A stop signal arrived; ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signum)


@contextmanager
def _signals(handler: Any) -> Iterator[None]:
    """Handle every stop signal with ``handler`` inside the block (main thread only)."""
    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def command_name() -> str:
    """How the user can run ``hydracompute`` from a shell: the bare name when that finds
    this installation, else this environment's script (``make demo`` does not put
    ``.venv/bin`` on the PATH)."""
    script = Path(sys.executable).parent / "hydracompute"
    found = shutil.which("hydracompute")
    if found and Path(found).resolve() == script.resolve():
        return "hydracompute"
    if not script.exists():
        return f"{shlex.quote(sys.executable)} -m hydracompute"
    return shell_path(script)


def shell_path(path: Path) -> str:
    """``path`` for a shell: relative to the working directory when below it (e.g.
    ``.venv/bin/hydracompute``), else absolute; quoted if need be."""
    shown = path.absolute()
    if shown.is_relative_to(Path.cwd()):
        shown = shown.relative_to(Path.cwd())
    text = str(shown)
    # A bare name would be looked up on the PATH instead.
    return shlex.quote(f"./{text}" if text == shown.name else text)


def run_demo(
    console: Console,
    cores: int,
    samples: int,
    size: int,
    output_dir: Path,
    port: int,
    keep: bool = False,
) -> int:
    """Run the demo; returns the process exit code.

    With ``keep``, the coordinator and worker stay up after the jobs until Ctrl-C, SIGTERM
    or SIGHUP (exit code 0). Before that, such a signal stops the demo with 128 + its
    number. Either way the children are stopped and the temporary data directory (its
    keys included) is deleted first. Must be called from the main thread.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    try:
        with _signals(_interrupt):
            return _run(console, cores, samples, size, output_dir, port, keep)
    except Interrupted as exc:
        console.print(f"Stopped by {signal.Signals(exc.signum).name}; the pool is gone.")
        return 128 + exc.signum


def _run(
    console: Console,
    cores: int,
    samples: int,
    size: int,
    output_dir: Path,
    port: int,
    keep: bool,
) -> int:
    data_dir = Path(tempfile.mkdtemp(prefix="hydracompute-demo-"))
    coordinator: LocalCoordinator | None = None
    worker: subprocess.Popen[str] | None = None
    try:
        coordinator = start_coordinator(data_dir, port)
        url = coordinator.url
        worker = start_worker(coordinator, cores, f"demo-{os.getpid()}")
        console.print(
            f"Coordinator at [bold]{url}[/bold] (TLS with its own authority "
            f"{coordinator.ca_fingerprint}); a local worker on {cores} core(s)."
        )
        with coordinator.client() as client:
            _deadline = time.monotonic() + STARTUP_TIMEOUT_S
            while not any(w["online"] for w in client.workers()):
                if time.monotonic() > _deadline or worker.poll() is not None:
                    console.print("[red]the worker did not join[/red]")
                    return 1
                time.sleep(0.1)
            pi = client.submit("pi", samples=samples, name="demo π")
            info = _wait(console, client, pi.job_id, f"π, {samples:.2g} samples")
            answer = info.answer or {}
            error = answer["estimate"] - math.pi
            console.print(
                f"π ≈ [bold]{answer['estimate']:.10f}[/bold] ± {answer['stderr']:.1e} "
                f"(true error {error:+.1e} = {error / answer['stderr']:+.2f} σ), "
                f"{samples / info.elapsed_s:.3g} samples/s end to end"
            )
            mandel = client.submit(
                "mandelbrot", width=size, height=size, max_iter=1000, name="demo Mandelbrot"
            )
            info = _wait(console, client, mandel.job_id, f"Mandelbrot {size}×{size}")
            png = output_dir / "mandelbrot.png"
            png.write_bytes(mandel.artefact("image.png"))
            iterations = (info.answer or {})["iterations"]
            console.print(
                f"Mandelbrot: {iterations:.3g} iterations in {info.elapsed_s:.1f} s "
                f"({iterations / info.elapsed_s:.3g}/s); image written to [bold]{png}[/bold]"
            )
        if keep:
            _keep_running(console, coordinator)
    except HydraError as exc:
        console.print(f"[red]{exc.title}: {exc.detail}[/red]")
        return 1
    finally:
        # A second signal must not cut the clean-up short: the children would outlive the
        # demo, and the keys in their directory would stay on disk.
        with _signals(signal.SIG_IGN):
            if worker is not None:
                stop(worker)
            if coordinator is not None:
                stop(coordinator.process)
            shutil.rmtree(data_dir, ignore_errors=True)
    hydracompute = command_name()
    if hydracompute != "hydracompute":
        activate = shell_path(Path(sys.executable).parent / "activate")
        console.print(
            f"'hydracompute' is not on your PATH: run it as {hydracompute}, or first "
            f"'. {activate}' (then 'hydracompute' works in this shell)."
        )
    console.print(
        f"Done. Start your own pool with '{hydracompute} coordinator': it prints the command "
        "that joins workers, and its pages are at its URL (/ and /docs)."
    )
    return 0


def _keep_running(console: Console, coordinator: LocalCoordinator) -> None:
    """Say how to use the pool, then wait until a stop signal (the way this phase ends),
    or until the coordinator stops by itself."""
    hydracompute = command_name()
    login = (
        f"{hydracompute} login {coordinator.url} --api-key {coordinator.admin_key} "
        f"--ca-fingerprint {coordinator.ca_fingerprint}"
    )
    try:
        console.print(
            f"The pool stays up until Ctrl-C (or SIGTERM): {coordinator.url}/docs for the "
            f"API. Its keys are in {coordinator.data_dir}, deleted when it stops. From "
            "another terminal, log in to it (this replaces your saved login), then try the "
            "other commands:"
        )
        # Printed plainly, one command per line, never wrapped: they are for copy-paste.
        for command in (login, f"{hydracompute} jobs", f"{hydracompute} workers"):
            console.print(f"  {command}", markup=False, highlight=False, soft_wrap=True)
        coordinator.process.wait()
    except Interrupted as exc:
        console.print(f"{signal.Signals(exc.signum).name}: stopping the pool.")
