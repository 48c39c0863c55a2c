"""Commands that run a coordinator or the demo (the worker has its own module)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from hydracompute.cli.base import (
    FiniteFloat,
    console,
    handle_errors,
    json_option,
    main,
    print_json,
    with_client,
)
from hydracompute.client import Client
from hydracompute.core.credit import CreditPolicy
from hydracompute.core.models import Role
from hydracompute.core.verification import VerificationPolicy
from hydracompute.errors import HydraError

F = TypeVar("F", bound=Callable[..., Any])


def default_data_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("hydracompute"))


def _check_store_url(ctx: click.Context, param: click.Parameter, url: str | None) -> str | None:
    """Refuse a malformed ``--store`` before anything starts (a usage error)."""
    from hydracompute.store.location import StoreLocation

    if url is not None:
        try:
            StoreLocation.parse(url)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from exc
    return url


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
    callback=_check_store_url,
    help="sqlite:///PATH, postgresql://USER@HOST:PORT/DATABASE[?schema=NAME] (several "
    "coordinators may share one; needs hydracompute[postgresql]) or memory://. "
    "Default: coordinator.db in the data directory. Coordinators started on the same "
    "store form one pool (same CA, keys and jobs).",
)
@click.option(
    "--public-url",
    default=None,
    envvar="HYDRACOMPUTE_PUBLIC_URL",
    help="The URL workers reach this coordinator at, listed in the pool's join command "
    "(default: the address it listens on, with the host name for 0.0.0.0).",
)
@click.option("--target-chunk-s", default=2.0, type=FiniteFloat(0.01, 3600))
@click.option("--heartbeat-s", default=5.0, type=FiniteFloat(0.05, 600))
@click.option(
    "--capacity-results-per-s",
    default=2000.0,
    type=FiniteFloat(0, 10**7),
    help="Results per second this coordinator can record (bench/bench_coordinator.py "
    "measures it); 0 turns load control off.",
)
@click.option(
    "--load-share",
    default=0.5,
    type=FiniteFloat(0, 1),
    help="Share of that capacity the pool's results may use: chunk times grow past the "
    "target as the pool grows, to stay within it.",
)
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
@click.option(
    "--verify",
    type=click.Choice(["none", "adaptive"]),
    default="none",
    envvar="HYDRACOMPUTE_VERIFY",
    show_default=True,
    help="Verification of jobs that ask for no replication: adaptive replicates untrusted "
    "workers' outputs always and trusted ones' now and then (docs/security.md).",
)
@click.option(
    "--error-bound",
    default=VerificationPolicy.error_bound,
    type=FiniteFloat(1e-9, 0.5),
    show_default=True,
    help="Adaptive: the largest chance that an output accepted alone is wrong.",
)
@click.option(
    "--saboteur-share",
    default=VerificationPolicy.saboteur_share,
    type=FiniteFloat(0, 0.9),
    show_default=True,
    help="Adaptive: the share of workers assumed to lie.",
)
@click.option(
    "--replicate-trusted",
    default=VerificationPolicy.floor,
    type=FiniteFloat(0.001, 1),
    show_default=True,
    help="Adaptive: the share of a trusted worker's outputs still verified (what catches a "
    "saboteur that behaves until it is trusted).",
)
@click.option(
    "--spot-check-rate",
    default=VerificationPolicy.spot_check_rate,
    type=FiniteFloat(0, 1),
    show_default=True,
    help="Adaptive: the share of an untrusted worker's leases that test it on a known answer.",
)
@click.option(
    "--watts-per-core",
    default=CreditPolicy.watts_per_core,
    type=FiniteFloat(0, 1000),
    show_default=True,
    help="The power of one busy core, for the energy estimate of each credit grant "
    "(what `hydracompute credit --rate-per-kwh` pays) of a worker that gave no figure.",
)
@click.option(
    "--max-watts-per-core",
    default=CreditPolicy.max_watts_per_core,
    type=FiniteFloat(0, 1000),
    show_default=True,
    help="The most a worker's own power figure (declared or measured) counts for.",
)
@click.option(
    "--carbon-source",
    default="annual",
    show_default=True,
    metavar="SOURCE",
    help="Where grid carbon intensities come from: 'annual' (averages shipped with the "
    "package), 'trace[:FOLDER]' (recorded traces replayed), 'electricitymaps[:URL]' (key in "
    "$ELECTRICITYMAPS_API_KEY) or 'carbon-aware-sdk:URL' (see docs/carbon.md).",
)
@click.option(
    "--forget-workers-after",
    default="30d",
    metavar="DURATION",
    help="Remove workers not heard from for this long (e.g. 12h, 30d), or 'never'.",
)
@click.option(
    "--metrics-public",
    is_flag=True,
    help="Serve /metrics (Prometheus) without an API key (by default it needs a viewer key).",
)
@click.option(
    "--fair-share-half-life",
    "fair_share_half_life_s",
    default=60.0,
    type=FiniteFloat(1, 7 * 86400),
    show_default=True,
    help="Seconds: the half-life of each submitter's usage in the fair share of the pool.",
)
@click.option(
    "--max-connections-per-address",
    default=None,
    type=click.IntRange(1, 10**6),
    help="Connections one client address may hold at once (default 1024; a pool behind one "
    "NAT address counts as one address).",
)
@click.option(
    "--head-timeout-s",
    default=None,
    type=FiniteFloat(0.05, 600),
    help="Seconds a request's line and headers may take to arrive (default 5).",
)
@click.option(
    "--code-role",
    type=click.Choice(["admin", "submitter"]),
    default="admin",
    show_default=True,
    help="The least role that may submit code: wasm jobs and their modules (docs/wasm.md).",
)
@click.option(
    "--max-blob-mb",
    default=256,
    type=click.IntRange(1, 1 << 20),
    show_default=True,
    help="The largest module or input a submitter may upload, in MiB.",
)
def coordinator(
    host: str,
    port: int,
    data_dir: Path | None,
    store_url: str | None,
    public_url: str | None,
    target_chunk_s: float,
    heartbeat_s: float,
    capacity_results_per_s: float,
    load_share: float,
    cert: Path | None,
    key: Path | None,
    insecure: bool,
    anonymous_read: bool,
    verify: str,
    error_bound: float,
    saboteur_share: float,
    replicate_trusted: float,
    spot_check_rate: float,
    watts_per_core: float,
    max_watts_per_core: float,
    carbon_source: str,
    forget_workers_after: str,
    metrics_public: bool,
    fair_share_half_life_s: float,
    max_connections_per_address: int | None,
    head_timeout_s: float | None,
    code_role: str,
    max_blob_mb: int,
) -> None:
    """Run a coordinator: the HTTPS service that keeps jobs and hands out chunks.

    On first start it creates its certificate authority, an admin API key and a join
    token, keeps them in its store (and the data directory), and prints the command that
    joins a worker. Another coordinator started on the same store (a shared database)
    joins the same pool: it reuses them, and the join command lists both.
    """
    from hydracompute.carbon.sources import make_source
    from hydracompute.coordinator.protocol import ConnectionLimits
    from hydracompute.coordinator.server import ServerOptions, serve
    from hydracompute.core.config import SchedulerConfig
    from hydracompute.core.fairshare import FairSharePolicy

    forget_after_s = _forget_after_s(forget_workers_after)
    try:
        source = make_source(carbon_source)
    except (ValueError, OSError) as exc:
        raise click.BadParameter(str(exc), param_hint="--carbon-source") from exc
    if (cert is None) != (key is None):
        raise click.UsageError("--cert and --key go together")
    if insecure and cert:
        raise click.UsageError("--insecure serves no certificate; drop --cert/--key")
    options = ServerOptions(
        data_dir=data_dir or default_data_dir(),
        host=host,
        port=port,
        store_url=store_url,
        public_url=public_url.rstrip("/") if public_url else None,
        config=SchedulerConfig(
            target_chunk_s=target_chunk_s,
            heartbeat_s=heartbeat_s,
            capacity_results_per_s=capacity_results_per_s,
            load_share=load_share,
        ),
        tls=not insecure,
        certfile=cert,
        keyfile=key,
        anonymous_read=anonymous_read,
        adaptive=verify == "adaptive",
        verification=VerificationPolicy(
            error_bound=error_bound,
            saboteur_share=saboteur_share,
            floor=replicate_trusted,
            spot_check_rate=spot_check_rate,
        ),
        forget_workers_after_s=forget_after_s,
        metrics_public=metrics_public,
        code_role=Role(code_role),
        max_blob_bytes=max_blob_mb << 20,
        credit=CreditPolicy(watts_per_core=watts_per_core, max_watts_per_core=max_watts_per_core),
        fair_share=FairSharePolicy(half_life_s=fair_share_half_life_s),
        connection_limits=ConnectionLimits(
            max_connections_per_address=max_connections_per_address
            or ConnectionLimits.max_connections_per_address,
            head_timeout_s=head_timeout_s or ConnectionLimits.head_timeout_s,
        ),
        carbon_source=source,
    )
    try:
        serve(options, lambda line: click.echo(line, err=True), time.time)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--store") from exc
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    except HydraError as exc:
        raise click.ClickException(exc.detail) from exc


#: The shortest --forget-workers-after: a worker briefly away must not lose its identity.
MIN_FORGET_AFTER_S = 3600.0


def _forget_after_s(text: str) -> float | None:
    """``--forget-workers-after`` in seconds (``None`` for never); a usage error if bad."""
    from hydracompute.cli.admin import parse_duration

    if text.strip().lower() == "never":
        return None
    try:
        seconds = parse_duration(text)
    except click.BadParameter as exc:
        raise click.BadParameter(str(exc.message), param_hint="--forget-workers-after") from exc
    assert seconds is not None
    if seconds < MIN_FORGET_AFTER_S:
        raise click.BadParameter(
            "must be at least 1h (or 'never')", param_hint="--forget-workers-after"
        )
    return seconds


@main.command()
@click.option("--cores", default=os.cpu_count() or 1, type=click.IntRange(1, 1024))
@click.option("--samples", default=1e10, type=FiniteFloat(1, 1e15), help="Samples of the π job.")
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


@main.command("coordinators")
@json_option
@handle_errors
@with_client
def coordinators(client: Client, as_json: bool) -> None:
    """The pool's live coordinators (they share one store), and the URLs to give workers."""
    found = client.coordinators()
    if as_json:
        print_json(found)
        return
    for entry in found:
        this = "  (this one)" if entry["this"] else ""
        click.echo(f"{entry['url']}{this}")
    if found:
        urls = " ".join(e["url"] for e in found)
        click.echo(f"Workers:  hydracompute worker {urls} [--ca-fingerprint …]", err=True)
