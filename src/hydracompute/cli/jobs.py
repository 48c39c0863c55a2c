"""Commands for submitters: follow jobs, read answers, list jobs and the pool (``submit``
is in :mod:`hydracompute.cli.submit`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Column, Table

from hydracompute.cli.base import (
    console,
    handle_errors,
    json_option,
    main,
    notes,
    print_json,
    print_table,
    with_client,
)
from hydracompute.client import Client, Job, JobInfo


def follow(job: Job, as_json: bool) -> JobInfo:
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


def print_answer(info: JobInfo) -> None:
    answer = info.answer or {}
    if info.kind == "pi" and answer.get("estimate") is not None:
        console.print(
            f"π ≈ {answer['estimate']:.10f} ± {answer['stderr']:.2e} "
            f"({answer['samples']:,} samples, {info.elapsed_s:.1f} s)"
        )
    else:
        console.print_json(data=answer)


def save_output(job: Job, output: str) -> None:
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
    table = Table(
        Column("job", no_wrap=True), "kind", "state", "progress", "elapsed", "priority", "name"
    )
    for j in found:
        table.add_row(
            j.job_id,
            j.kind,
            j.state,
            f"{j.progress:.1%}",
            f"{j.elapsed_s:.1f} s",
            str(j.raw.get("priority", 0)),
            j.name,
        )
    print_table(table)
    _print_shares(client.shares())


def _print_shares(shares: list[dict[str, Any]]) -> None:
    """The fair share between submitters: each one's entitlement and recent usage."""
    if not shares:
        return
    table = Table(
        Column("submitter", no_wrap=True), "weight", "share", "usage", "of usage", "running"
    )
    for s in shares:
        table.add_row(
            s["owner"] or "(no key)",
            f"{s['weight']:g}",
            f"{s['share']:.0%}",
            f"{s['usage_s']:.1f} core-s",
            f"{s['usage_fraction']:.0%}",
            str(s["running_jobs"]),
        )
    print_table(table)


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
    # Progress counts work (Mandelbrot: iterations), so the ETA holds when dear units come last.
    rate = f"{_si(info.raw['throughput'])} {info.raw['work_name']}/s"
    eta_s = info.raw.get("eta_s")
    console.print(rate if eta_s is None or info.finished else f"{rate}, ETA {eta_s:.1f} s")
    if info.raw.get("waiting_reason") and not info.finished:
        console.print(f"[yellow]waiting: {info.raw['waiting_reason']}[/yellow]")
    if info.error:
        notes.print(f"[red]{info.error}[/red]")
    if info.live:
        console.print_json(data=info.live)
    emitted = info.raw.get("emissions")
    if emitted and emitted["energy_kwh"] > 0:
        saved = (
            f", {emitted['saved_share']:.0%} less than carbon-blind ({emitted['gco2_blind']:.1f} g)"
            if info.raw.get("carbon") == "prefer-clean"
            else ""
        )
        console.print(
            f"energy {emitted['energy_kwh'] * 1000:.2f} Wh "
            f"({emitted['energy_measured_kwh'] / emitted['energy_kwh']:.0%} measured), "
            f"{emitted['gco2']:.1f} gCO2{saved}"
        )


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
        save_output(job, output)
    if as_json:
        print_json(answer)
    else:
        print_answer(job.info())


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
    hydracompute workers label WORKER_ID LABEL...  label a worker (admin)
    """


@workers_group.command("list")
@json_option
@handle_errors
@with_client
def workers(client: Client, as_json: bool) -> None:
    """List the pool's workers: state, work done, speed per core of each kind."""
    found = client.workers()
    if as_json:
        print_json([{**w, "last_seen": _timestamp(w["last_seen_s"])} for w in found])
        return
    kinds = {k["name"]: k for k in client.kinds()}
    table = Table(
        Column("worker", no_wrap=True),
        "name",
        "cores",
        "state",
        "labels",
        "wasm",
        "grid",
        "chunks",
        "leases",
        "speed per core",
        "last seen",
    )
    for w in found:
        state = w["state"]
        if state == "paused" and w["state_reason"]:
            state += f": {w['state_reason']}"
        if w.get("barred"):  # found returning a wrong output: no more work
            state = f"barred: {w['barred']}"
        table.add_row(
            w["worker_id"],
            w["name"],
            str(w["cores"]),
            state,
            ", ".join(w.get("labels", [])),
            "yes" if w.get("accepts_wasm") else "no",
            _grid(w),
            str(w["chunks_done"]),
            str(w["leases"]),
            ", ".join(_speed(name, value, kinds.get(name)) for name, value in w["speeds"].items()),
            f"{w['last_seen_ago_s']:.0f} s ago",
        )
    print_table(table)


def _grid(worker: dict[str, Any]) -> str:
    """``DE 312 g/kWh``: a worker's grid zone and its intensity now ("" without a zone)."""
    zone = worker.get("grid_zone") or ""
    intensity = worker.get("grid_gco2_per_kwh")
    return f"{zone} {intensity:.0f} g/kWh" if zone and intensity is not None else zone


def _timestamp(epoch_s: float) -> str:
    """ISO 8601, UTC, to the second."""
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="seconds")


def _si(value: float) -> str:
    """``1.31M``: three significant digits and an SI prefix, as the dashboard shows."""
    for prefix in ("", "k", "M", "G", "T"):
        if abs(value) < 999.5 or prefix == "T":
            return f"{value:.3g}{prefix}"
        value /= 1000
    raise AssertionError("unreachable")


def _speed(name: str, units_per_s: float, kind: dict[str, Any] | None) -> str:
    """One kind's speed in its own work (``pi 1.31M samples/s``), as the dashboard shows it;
    in work units for a kind the coordinator no longer lists."""
    if kind is None:
        return f"{name} {_si(units_per_s)} units/s"
    return f"{name} {_si(units_per_s * kind['work_per_unit'])} {kind['work_name']}/s"


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
