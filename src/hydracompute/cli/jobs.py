"""Commands for submitters: submit jobs, follow them, read answers, list the pool."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from hydracompute.cli.base import (
    console,
    handle_errors,
    json_option,
    main,
    notes,
    print_json,
    with_client,
)
from hydracompute.client import Client, Job, JobInfo
from hydracompute.kinds.mandelbrot_colour import COLOUR_MAPS


def _follow(job: Job, as_json: bool) -> JobInfo:
    """Wait for a job, with a progress bar on a terminal."""
    if as_json or not notes.is_terminal:
        return job.wait()
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=notes, transient=False) as bar:
        task = bar.add_task(f"{job.job_id}", total=1.0)
        return job.wait(on_progress=lambda info: bar.update(task, completed=info.progress))


def _submit(
    client: Client,
    kind: str,
    params: dict[str, Any],
    wait: bool,
    as_json: bool,
    output: str | None,
    target_chunk_s: float | None,
) -> None:
    if output and not wait:
        raise click.UsageError("-o/--output needs --wait (or use 'hydracompute result JOB -o')")
    job = client.submit(kind, target_chunk_s=target_chunk_s, **params)
    submitted = job.known
    # With --json the answer's waiting_reason says it, for scripts.
    if not as_json and submitted is not None and submitted.raw.get("waiting_reason"):
        notes.print(
            f"[yellow]warning: {submitted.raw['waiting_reason']}; job {job.job_id} waits "
            "until a worker that can run it joins[/yellow]"
        )
    if not wait:
        if as_json:
            print_json(job.info().raw)
        else:
            click.echo(job.job_id)
        return
    info = _follow(job, as_json)
    if output:
        _save_output(job, output)
    if as_json:
        print_json(info.raw)
    else:
        _print_answer(info)


submit_options = [
    click.option("--wait", is_flag=True, help="Wait for the answer, with a progress bar."),
    click.option("-o", "--output", default=None, help="With --wait: save the main artefact."),
    click.option(
        "--target-chunk-s",
        default=None,
        type=click.FloatRange(0.01, 3600),
        help="Seconds per chunk for this job (default: the coordinator's).",
    ),
    json_option,
]


def with_submit_options(fn: Callable[..., None]) -> Callable[..., None]:
    for option in reversed(submit_options):
        fn = option(fn)
    return fn


@main.group()
def submit() -> None:
    """Submit a job."""


@submit.command("pi")
@click.option("--samples", required=True, type=float, help="Number of samples, e.g. 1e10.")
@click.option("--seed", default=None, type=int, help="Random seed (chosen if omitted).")
@with_submit_options
@handle_errors
@with_client
def submit_pi(
    samples: float,
    seed: int | None,
    wait: bool,
    output: str | None,
    target_chunk_s: float | None,
    client: Client,
    as_json: bool,
) -> None:
    """Estimate π by Monte-Carlo sampling."""
    params: dict[str, Any] = {"samples": samples}
    if seed is not None:
        params["seed"] = seed
    _submit(client, "pi", params, wait, as_json, output, target_chunk_s)


@submit.command("mandelbrot")
@click.option("--width", default=1024, type=int)
@click.option("--height", default=1024, type=int)
@click.option("--max-iter", default=1000, type=int)
@click.option(
    "--region",
    nargs=4,
    type=float,
    default=None,
    metavar="X_MIN X_MAX Y_MIN Y_MAX",
    help="Default: the whole set.",
)
@click.option(
    "--center",
    nargs=3,
    type=float,
    default=None,
    metavar="RE IM SPAN",
    help="Alternative to --region: centre and x extent.",
)
@click.option("--colour-map", default="classic", type=click.Choice(list(COLOUR_MAPS)))
@with_submit_options
@handle_errors
@with_client
def submit_mandelbrot(
    width: int,
    height: int,
    max_iter: int,
    region: tuple[float, float, float, float] | None,
    center: tuple[float, float, float] | None,
    colour_map: str,
    wait: bool,
    output: str | None,
    target_chunk_s: float | None,
    client: Client,
    as_json: bool,
) -> None:
    """Render a view of the Mandelbrot set (PNG and raw counts)."""
    params: dict[str, Any] = {
        "width": width,
        "height": height,
        "max_iter": max_iter,
        "colour_map": colour_map,
    }
    if region:
        params.update(zip(("x_min", "x_max", "y_min", "y_max"), region, strict=True))
    if center:
        params.update(zip(("center_re", "center_im", "span"), center, strict=True))
    _submit(client, "mandelbrot", params, wait, as_json, output, target_chunk_s)


@submit.command("kind")
@click.argument("kind")
@click.option(
    "-p",
    "--param",
    "raw_params",
    multiple=True,
    metavar="NAME=JSON",
    help="A parameter; the value is JSON (numbers, strings in quotes...).",
)
@with_submit_options
@handle_errors
@with_client
def submit_kind(
    kind: str,
    raw_params: tuple[str, ...],
    wait: bool,
    output: str | None,
    target_chunk_s: float | None,
    client: Client,
    as_json: bool,
) -> None:
    """Submit a job of any installed KIND, e.g. a third-party one."""
    params: dict[str, Any] = {}
    for item in raw_params:
        name, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--param")
        try:
            params[name] = json.loads(value)
        except ValueError:
            params[name] = value
    _submit(client, kind, params, wait, as_json, output, target_chunk_s)


def _print_answer(info: JobInfo) -> None:
    answer = info.answer or {}
    if info.kind == "pi" and answer.get("estimate") is not None:
        console.print(
            f"π ≈ {answer['estimate']:.10f} ± {answer['stderr']:.2e} "
            f"({answer['samples']:,} samples, {info.elapsed_s:.1f} s)"
        )
    else:
        console.print_json(data=answer)


def _save_output(job: Job, output: str) -> None:
    info = job.info()
    names = (info.answer or {}).get("artefacts") or []
    if names:
        Path(output).write_bytes(job.artefact(names[0]))
    else:
        Path(output).write_text(json.dumps(job.result(), indent=2))
    notes.print(f"saved {output}")


@main.command()
@click.option("--state", type=click.Choice(["running", "done", "failed", "cancelled"]))
@click.option("--limit", default=50, type=click.IntRange(1, 1000))
@json_option
@handle_errors
@with_client
def jobs(state: str | None, limit: int, client: Client, as_json: bool) -> None:
    """List jobs, newest first."""
    found = client.jobs(state, limit)
    if as_json:
        print_json([j.raw for j in found])
        return
    table = Table("job", "kind", "state", "progress", "elapsed", "name")
    for j in found:
        table.add_row(
            j.job_id, j.kind, j.state, f"{j.progress:.1%}", f"{j.elapsed_s:.1f} s", j.name
        )
    console.print(table)


@main.command()
@click.argument("job_id")
@json_option
@handle_errors
@with_client
def status(job_id: str, client: Client, as_json: bool) -> None:
    """Show one job's state and progress."""
    info = client.job(job_id).info()
    if as_json:
        print_json(info.raw)
        return
    console.print(
        f"{info.job_id} {info.kind} [bold]{info.state}[/bold] {info.progress:.1%} "
        f"({info.units_done}/{info.total_units} {info.unit_name}s, "
        f"{info.elapsed_s:.1f} s)"
    )
    if info.raw.get("waiting_reason") and not info.finished:
        console.print(f"[yellow]waiting: {info.raw['waiting_reason']}[/yellow]")
    if info.error:
        notes.print(f"[red]{info.error}[/red]")
    if info.live:
        console.print_json(data=info.live)


@main.command()
@click.argument("job_id")
@click.option("-o", "--output", default=None, help="Save the main artefact (e.g. the PNG).")
@json_option
@handle_errors
@with_client
def result(job_id: str, output: str | None, client: Client, as_json: bool) -> None:
    """Print a finished job's answer; with -o, save its main artefact."""
    job = client.job(job_id)
    answer = job.result()
    if output:
        _save_output(job, output)
    if as_json:
        print_json(answer)
    else:
        _print_answer(job.info())


class WorkersGroup(click.Group):
    """``hydracompute workers [options]`` lists the workers, as it always has; ``workers
    remove ID`` is a subcommand. Arguments that name no subcommand go to ``list``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] != "--help"):
            args = ["list", *args]
        return super().parse_args(ctx, args)


@main.group("workers", cls=WorkersGroup)
def workers_group() -> None:
    """The pool's workers: list them (the default), or remove one (admin).

    \b
    hydracompute workers [--json]          list the pool's workers
    hydracompute workers remove WORKER_ID  remove a worker (admin)
    """


@workers_group.command("list")
@json_option
@handle_errors
@with_client
def workers(client: Client, as_json: bool) -> None:
    """List the pool's workers."""
    found = client.workers()
    if as_json:
        print_json(found)
        return
    table = Table("worker", "name", "cores", "state", "chunks", "leases", "speeds (units/s/core)")
    for w in found:
        speeds = ", ".join(f"{k} {v:.3g}" for k, v in w["speeds"].items())
        if w["revoked"]:
            shown = "revoked"
        elif not w["online"]:
            shown = "offline"
        else:
            shown = w["state"] + (f": {w['state_reason']}" if w["state_reason"] else "")
        table.add_row(
            w["worker_id"],
            w["name"],
            str(w["cores"]),
            shown,
            str(w["chunks_done"]),
            str(w["leases"]),
            speeds,
        )
    console.print(table)


@main.command()
@click.argument("job_id")
@json_option
@handle_errors
@with_client
def cancel(job_id: str, client: Client, as_json: bool) -> None:
    """Cancel a running job."""
    info = client.job(job_id).cancel()
    if as_json:
        print_json(info.raw)
    else:
        console.print(f"{job_id} {info.state}")
