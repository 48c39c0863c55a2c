"""``hydracompute demo``: a coordinator and local workers computing π and a Mandelbrot set."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
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
    line = process.stdout.readline()
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


def start_worker(coordinator: LocalCoordinator, cores: int, name: str) -> subprocess.Popen[str]:
    """Start ``hydracompute worker`` joined to ``coordinator``, its identity kept in the
    coordinator's data directory (so a throw-away pool leaves nothing in the user's).

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

    With ``keep``, the coordinator and worker stay up after the jobs until Ctrl-C.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hydracompute-demo-") as tmp:
        coordinator = start_coordinator(Path(tmp), port)
        url = coordinator.url
        worker = start_worker(coordinator, cores, f"demo-{os.getpid()}")
        try:
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
            stop(worker)
            stop(coordinator.process)
    console.print(
        "Done. Start your own pool with 'hydracompute coordinator': it prints the command "
        "that joins workers, and its pages are at its URL (/ and /docs)."
    )
    return 0


def _keep_running(console: Console, coordinator: LocalCoordinator) -> None:
    console.print(
        f"The pool stays up until Ctrl-C: {coordinator.url}/docs for the API; from another "
        f"terminal, 'hydracompute login {coordinator.url} --api-key {coordinator.admin_key} "
        f"--ca-fingerprint {coordinator.ca_fingerprint}' then 'hydracompute jobs'."
    )
    with contextlib.suppress(KeyboardInterrupt):
        coordinator.process.wait()
