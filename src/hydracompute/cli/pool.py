"""Commands that run things: a coordinator, a worker, the demo."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import signal
import ssl
import sys
import time
from pathlib import Path

import click

from hydracompute.cli.base import EXIT_REFUSED, EXIT_UNREACHABLE, console, main, notes
from hydracompute.client import DEFAULT_URL
from hydracompute.errors import CoordinatorUnavailable, HydraError


def default_data_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("hydracompute"))


def default_identity_file(url: str, name: str | None) -> Path:
    key = hashlib.sha256(f"{url.rstrip('/')}\n{name or ''}".encode()).hexdigest()[:16]
    return default_data_dir() / "workers" / f"{key}.json"


@main.command()
@click.option("--host", default="127.0.0.1", help="Interface to listen on (0.0.0.0: all).")
@click.option("--port", default=8765, type=click.IntRange(0, 65535), help="0 picks a free port.")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    envvar="HYDRACOMPUTE_DATA_DIR",
    help="Keys, certificates and the default store. Default: the user data directory.",
)
@click.option(
    "--store",
    "store_url",
    default=None,
    envvar="HYDRACOMPUTE_STORE",
    help="sqlite:///PATH or memory://. Default: coordinator.db in the data directory.",
)
@click.option("--target-chunk-s", default=2.0, type=click.FloatRange(0.01, 3600))
@click.option("--heartbeat-s", default=5.0, type=click.FloatRange(0.05, 600))
@click.option(
    "--cert",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="A certificate to serve (e.g. a public one) instead of the pool's own.",
)
@click.option(
    "--key",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The private key of --cert.",
)
@click.option(
    "--insecure", is_flag=True, help="Plain HTTP, no TLS: only for loopback or a network you trust."
)
@click.option(
    "--anonymous-read",
    is_flag=True,
    help="Let requests without an API key read jobs and workers (not change them).",
)
def coordinator(
    host: str,
    port: int,
    data_dir: Path | None,
    store_url: str | None,
    target_chunk_s: float,
    heartbeat_s: float,
    cert: Path | None,
    key: Path | None,
    insecure: bool,
    anonymous_read: bool,
) -> None:
    """Run a coordinator: the HTTPS service that keeps jobs and hands out chunks.

    On first start it creates its certificate authority, an admin API key and a join
    token in the data directory, and prints the command that joins a worker.
    """
    from hydracompute.coordinator.server import ServerOptions, serve
    from hydracompute.core.config import SchedulerConfig

    if (cert is None) != (key is None):
        raise click.UsageError("--cert and --key go together")
    if insecure and cert:
        raise click.UsageError("--insecure serves no certificate; drop --cert/--key")
    options = ServerOptions(
        data_dir=data_dir or default_data_dir(),
        host=host,
        port=port,
        store_url=store_url,
        config=SchedulerConfig(target_chunk_s=target_chunk_s, heartbeat_s=heartbeat_s),
        tls=not insecure,
        certfile=cert,
        keyfile=key,
        anonymous_read=anonymous_read,
    )
    try:
        serve(options, lambda line: click.echo(line, err=True), time.time)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--store") from exc
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    except HydraError as exc:
        raise click.ClickException(exc.detail) from exc


@main.command()
@click.argument("url", envvar="HYDRACOMPUTE_URL", default=DEFAULT_URL)
@click.option(
    "--token",
    envvar="HYDRACOMPUTE_JOIN_TOKEN",
    required=True,
    help="The pool's join token (the coordinator prints it in its join command).",
)
@click.option(
    "--ca-fingerprint",
    envvar="HYDRACOMPUTE_CA_FINGERPRINT",
    default=None,
    help="SHA-256 fingerprint of the coordinator's own certificate authority, to pin it.",
)
@click.option(
    "--cores",
    default=os.cpu_count() or 1,
    type=click.IntRange(1, 1024),
    help="Compute processes to run (default: every core).",
)
@click.option("--name", default=None, help="Name shown in the pool (default: host name).")
@click.option(
    "--identity",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where the worker keeps its id and secret between runs "
    "(default: one file per pool URL and name in the user data directory).",
)
def worker(
    url: str,
    token: str,
    ca_fingerprint: str | None,
    cores: int,
    name: str | None,
    identity: Path | None,
) -> None:
    """Join the pool at URL and compute chunks until Ctrl-C.

    The first run enrols with the join token; later runs rejoin as the same worker.
    """
    from hydracompute.worker.agent import WorkerAgent

    if url.startswith("http://"):
        notes.print("[yellow]plain HTTP: the join token and results cross the network in clear[/]")
    try:
        verify = _verification_with_retries(url, ca_fingerprint)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--ca-fingerprint") from exc
    except HydraError as exc:
        notes.print(f"[red]{exc.title}: {exc.detail}[/red]")
        sys.exit(EXIT_REFUSED)
    agent = WorkerAgent(
        url,
        cores,
        token,
        verify=verify,
        name=name,
        identity_file=identity or default_identity_file(url, name),
    )

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


def _verification_with_retries(url: str, ca_fingerprint: str | None) -> ssl.SSLContext | bool:
    """The pinned CA, waiting (with backoff) while the coordinator is not up yet."""
    from hydracompute import tls

    delay = 0.25
    while True:
        try:
            return tls.verification(url, ca_fingerprint)
        except CoordinatorUnavailable as exc:
            notes.print(f"{exc.detail}; retrying in {delay:.1f} s")
            time.sleep(random.uniform(delay / 2, delay))
            delay = min(30.0, delay * 2)


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
@click.option("--keep", is_flag=True, help="Keep the pool running afterwards, until Ctrl-C.")
def demo(cores: int, samples: float, size: int, output_dir: str, port: int, keep: bool) -> None:
    """Start a coordinator and local workers, and run a π and a Mandelbrot job."""
    from hydracompute.demo import run_demo

    sys.exit(run_demo(console, cores, int(samples), size, Path(output_dir), port, keep))
