"""``hydracompute demo``: a coordinator and local workers computing π and a Mandelbrot set."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

from hydracompute.client import Client, JobInfo
from hydracompute.errors import HydraError

STARTUP_TIMEOUT_S = 60.0


def start_coordinator(
    store_url: str, port: int, extra: list[str] | None = None
) -> tuple[subprocess.Popen[str], str]:
    """Start ``hydracompute coordinator`` in a child process; returns it and its URL."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hydracompute",
            "--log-level",
            "warning",
            "coordinator",
            "--port",
            str(port),
            "--store",
            store_url,
            *(extra or []),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("URL "):
        process.kill()
        raise RuntimeError(f"the coordinator did not start (it printed {line!r})")
    return process, line.split()[1]


def start_worker(url: str, cores: int, name: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hydracompute",
            "--log-level",
            "warning",
            "worker",
            url,
            "--cores",
            str(cores),
            "--name",
            name,
        ],
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
    console: Console, cores: int, samples: int, size: int, output_dir: Path, port: int
) -> int:
    """Run the demo; returns the process exit code."""
    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hydracompute-demo-") as tmp:
        coordinator, url = start_coordinator(f"sqlite:///{tmp}/demo.db", port)
        worker = start_worker(url, cores, f"demo-{os.getpid()}")
        try:
            console.print(
                f"Coordinator at [bold]{url}[/bold] (API reference: {url}/docs); "
                f"a local worker on {cores} core(s)."
            )
            with Client(url) as client:
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
        except HydraError as exc:
            console.print(f"[red]{exc.title}: {exc.detail}[/red]")
            return 1
        finally:
            stop(worker)
            stop(coordinator)
    console.print(
        "Done. Run your own pool with 'hydracompute coordinator' and "
        "'hydracompute worker URL'; its pages are at URL/ and URL/docs."
    )
    return 0
