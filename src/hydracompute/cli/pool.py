"""Commands that run things: a coordinator, a worker, the demo."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import click

from hydracompute.cli.base import EXIT_REFUSED, EXIT_UNREACHABLE, console, main, notes
from hydracompute.client import DEFAULT_URL
from hydracompute.errors import CoordinatorUnavailable, HydraError


def default_store_url() -> str:
    import platformdirs

    return f"sqlite:///{Path(platformdirs.user_data_dir('hydracompute')) / 'coordinator.db'}"


@main.command()
@click.option("--host", default="127.0.0.1", help="Interface to listen on (0.0.0.0: all).")
@click.option("--port", default=8765, type=click.IntRange(0, 65535), help="0 picks a free port.")
@click.option(
    "--store",
    "store_url",
    default=None,
    envvar="HYDRACOMPUTE_STORE",
    help="sqlite:///PATH or memory://. Default: coordinator.db in the user data directory.",
)
@click.option("--target-chunk-s", default=2.0, type=click.FloatRange(0.01, 3600))
@click.option("--heartbeat-s", default=5.0, type=click.FloatRange(0.05, 600))
def coordinator(
    host: str, port: int, store_url: str | None, target_chunk_s: float, heartbeat_s: float
) -> None:
    """Run a coordinator: the HTTP service that keeps jobs and hands out chunks."""
    import uvicorn

    from hydracompute.coordinator.app import create_app
    from hydracompute.core.config import SchedulerConfig
    from hydracompute.kinds import default_registry
    from hydracompute.store import open_store

    config = SchedulerConfig(target_chunk_s=target_chunk_s, heartbeat_s=heartbeat_s)
    url = store_url or default_store_url()
    try:
        store = open_store(url, default_registry(), config)
    except (ValueError, HydraError) as exc:
        raise click.BadParameter(str(exc), param_hint="--store") from exc
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        # Listening before the URL is printed: whoever reads it can connect at once
        # (requests wait in the backlog until the server accepts them).
        sock.listen(2048)
    except OSError as exc:
        store.close()
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    bound = sock.getsockname()[1]
    wildcard = host in ("0.0.0.0", "::")
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    base = f"http://{'127.0.0.1' if wildcard else shown}:{bound}"
    join = f"http://{socket.gethostname()}:{bound}" if wildcard else base
    click.echo(f"Hydra Compute coordinator listening on {host}:{bound} (store: {url})", err=True)
    click.echo(f"Join workers with:  hydracompute worker {join}", err=True)
    click.echo(f"URL {base}", err=False)
    sys.stdout.flush()
    app = create_app(store)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            # Held long-polls would otherwise delay the shutdown by a heartbeat.
            app.state.coordinator.release_waiters_soon()
            super().handle_exit(sig, frame)

    server = Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[sock])


@main.command()
@click.argument("url", envvar="HYDRACOMPUTE_URL", default=DEFAULT_URL)
@click.option(
    "--cores",
    default=os.cpu_count() or 1,
    type=click.IntRange(1, 1024),
    help="Compute processes to run (default: every core).",
)
@click.option("--name", default=None, help="Name shown in the pool (default: host name).")
def worker(url: str, cores: int, name: str | None) -> None:
    """Join the pool at URL and compute chunks until Ctrl-C."""
    from hydracompute.worker.agent import WorkerAgent

    agent = WorkerAgent(url, cores, name)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, agent.stop)
        await agent.run()

    try:
        asyncio.run(run())
    except CoordinatorUnavailable as exc:
        notes.print(f"[red]{exc.detail}[/red]")
        sys.exit(EXIT_UNREACHABLE)
    except HydraError as exc:
        notes.print(f"[red]{exc.title}: {exc.detail}[/red]")
        sys.exit(EXIT_REFUSED)
    click.echo(f"Stopped after {agent.stats.chunks_done} chunk(s).", err=True)


@main.command()
@click.option("--cores", default=os.cpu_count() or 1, type=click.IntRange(1, 1024))
@click.option("--samples", default=1e10, type=float, help="Samples of the π job.")
@click.option(
    "--size",
    default=2048,
    type=click.IntRange(16, 32768),
    help="Width and height of the Mandelbrot image.",
)
@click.option("--output-dir", default="demo-output", type=click.Path(file_okay=False))
@click.option("--port", default=0, type=click.IntRange(0, 65535))
def demo(cores: int, samples: float, size: int, output_dir: str, port: int) -> None:
    """Start a coordinator and local workers, and run a π and a Mandelbrot job."""
    from hydracompute.demo import run_demo

    sys.exit(run_demo(console, cores, int(samples), size, Path(output_dir), port))
