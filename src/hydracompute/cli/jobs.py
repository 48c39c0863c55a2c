"""Commands for submitters: submit jobs, follow them, read answers, list the pool."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Column, Table

from hydracompute.cli.base import (
    FiniteFloat,
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
    name: str,
) -> None:
    if output and not wait:
        raise click.UsageError("-o/--output needs --wait (or use 'hydracompute result JOB -o')")
    verification = click.get_current_context().meta.get(VERIFICATION_META, {})
    job = client.submit(kind, name=name, target_chunk_s=target_chunk_s, **verification, **params)
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


#: Where the verification, placement, priority and carbon options leave what they were
#: given (every submit command takes them, and only ``_submit`` reads them).
VERIFICATION_META = "hydracompute.verification"


def _verification_option(name: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def keep(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value is not None:
            ctx.meta.setdefault(VERIFICATION_META, {})[name] = value

    return keep


def _keep_deadline(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    from hydracompute.cli.admin import parse_duration

    seconds = parse_duration(value)
    if seconds is not None:
        ctx.meta.setdefault(VERIFICATION_META, {})["deadline_s"] = seconds


submit_options = [
    click.option(
        "--name", default="", show_default=False, help="A name shown by 'jobs' and the dashboard."
    ),
    click.option("--wait", is_flag=True, help="Wait for the answer, with a progress bar."),
    click.option(
        "--replicas",
        type=click.IntRange(1, 5),
        default=None,
        expose_value=False,
        callback=_verification_option("replication"),
        help="Copies of each chunk, computed by different workers (volunteers), to verify it.",
    ),
    click.option(
        "--quorum",
        type=click.IntRange(1, 5),
        default=None,
        expose_value=False,
        callback=_verification_option("quorum"),
        help="Copies that must agree (default: both of two, a majority of more).",
    ),
    click.option(
        "--adaptive/--no-adaptive",
        default=None,
        expose_value=False,
        callback=_verification_option("adaptive"),
        help="Adaptive verification: replicate untrusted workers' outputs always, trusted "
        "ones' now and then (default: the coordinator's --verify).",
    ),
    click.option(
        "--priority",
        type=click.IntRange(-100, 100),
        default=None,
        expose_value=False,
        callback=_verification_option("priority"),
        help="Among your own running jobs, higher runs first (default 0); other "
        "submitters' share of the pool is not affected.",
    ),
    click.option(
        "--require-label",
        "required_labels",
        multiple=True,
        metavar="LABEL",
        expose_value=False,
        callback=lambda ctx, param, value: _verification_option("required_labels")(
            ctx, param, list(value) or None
        ),
        help="Only workers the pool's admin gave this label (e.g. trusted) get its chunks; "
        "repeat for several (docs/security.md).",
    ),
    click.option(
        "--deadline",
        default=None,
        metavar="DURATION",
        expose_value=False,
        callback=_keep_deadline,
        help="When it should be done, from now (e.g. 6h, 2d; at most 7d).",
    ),
    click.option(
        "--carbon",
        type=click.Choice(["blind", "prefer-clean"]),
        default=None,
        expose_value=False,
        callback=_verification_option("carbon"),
        help="prefer-clean: run on cleaner grids and at cleaner hours within --deadline "
        "(default: blind, as if no grid mattered).",
    ),
    click.option("-o", "--output", default=None, help="With --wait: save the main artefact."),
    click.option(
        "--target-chunk-s",
        default=None,
        type=FiniteFloat(0.01, 3600),
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
@click.option("--samples", required=True, type=FiniteFloat(), help="Number of samples, e.g. 1e10.")
@click.option("--seed", default=None, type=int, help="Random seed (chosen if omitted).")
@with_submit_options
@handle_errors
@with_client
def submit_pi(
    samples: float,
    seed: int | None,
    name: str,
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
    _submit(client, "pi", params, wait, as_json, output, target_chunk_s, name)


def _exclusive(ctx: click.Context, value: Any, other: str) -> Any:
    """Refuse ``--region`` with ``--center``, while options are parsed (before anything is
    contacted), whichever comes first."""
    if value and ctx.params.get(other):
        raise click.UsageError("--region and --center exclude each other: give one of them")
    return value


@submit.command("mandelbrot")
@click.option("--width", default=1024, type=int)
@click.option("--height", default=1024, type=int)
@click.option("--max-iter", default=1000, type=int)
@click.option(
    "--region",
    nargs=4,
    type=FiniteFloat(),
    default=None,
    metavar="X_MIN X_MAX Y_MIN Y_MAX",
    help="Default: the whole set.",
    callback=lambda ctx, param, value: _exclusive(ctx, value, "center"),
)
@click.option(
    "--center",
    nargs=3,
    type=FiniteFloat(),
    default=None,
    metavar="RE IM SPAN",
    help="Alternative to --region: centre and x extent.",
    callback=lambda ctx, param, value: _exclusive(ctx, value, "region"),
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
    name: str,
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
    _submit(client, "mandelbrot", params, wait, as_json, output, target_chunk_s, name)


@submit.command("wasm")
@click.argument("module", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--units", required=True, type=click.IntRange(1, 10**12), help="Work units.")
@click.option(
    "--input",
    "input_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A file the module may read (read-only), uploaded with it.",
)
@click.option(
    "--merge",
    type=click.Choice(["sum", "sum-f64", "concat"]),
    default="sum",
    show_default=True,
    help="How chunk outputs become the answer (docs/wasm.md).",
)
@click.option(
    "-p",
    "--param",
    "args",
    multiple=True,
    metavar="NAME=VALUE",
    help="A parameter of the module (an integer, a number or a string).",
    callback=lambda ctx, param, value: _params(value),
)
@click.option("--fuel-per-unit", type=click.IntRange(1, 10**12), default=None)
@click.option("--memory-mib", type=click.IntRange(1, 4096), default=None)
@click.option("--output-bytes", type=click.IntRange(1, 1 << 20), default=None)
@with_submit_options
@handle_errors
@with_client
def submit_wasm(
    module: Path,
    units: int,
    input_file: Path | None,
    merge: str,
    args: dict[str, Any],
    fuel_per_unit: int | None,
    memory_mib: int | None,
    output_bytes: int | None,
    name: str,
    wait: bool,
    output: str | None,
    target_chunk_s: float | None,
    client: Client,
    as_json: bool,
) -> None:
    """Run a WebAssembly MODULE (a .wasm file, or .wat text compiled here) over UNITS work
    units, in the sandbox of workers that opted in (docs/wasm.md)."""
    params: dict[str, Any] = {
        "module": client.upload(_module_bytes(module)),
        "units": units,
        "merge": merge,
        "args": args,
    }
    if input_file is not None:
        params["input"] = client.upload(input_file)
    limits = {
        "fuel_per_unit": fuel_per_unit,
        "memory_mib": memory_mib,
        "output_bytes": output_bytes,
    }
    params.update({key: value for key, value in limits.items() if value is not None})
    _submit(client, "wasm", params, wait, as_json, output, target_chunk_s, name)


def _module_bytes(path: Path) -> bytes:
    """A module's bytes; WebAssembly text (``.wat``) is compiled to binary first."""
    if path.suffix != ".wat":
        return path.read_bytes()
    import wasmtime

    try:
        return bytes(wasmtime.wat2wasm(path.read_text()))
    except wasmtime.WasmtimeError as exc:
        raise click.BadParameter(f"{path}: {exc}", param_hint="MODULE") from exc


@submit.command("kind")
@click.argument("kind")
@click.option(
    "-p",
    "--param",
    "raw_params",
    multiple=True,
    metavar="NAME=JSON",
    help="A parameter; the value is JSON (numbers, strings in quotes...).",
    callback=lambda ctx, param, value: _params(value),
)
@with_submit_options
@handle_errors
@with_client
def submit_kind(
    kind: str,
    raw_params: dict[str, Any],
    name: str,
    wait: bool,
    output: str | None,
    target_chunk_s: float | None,
    client: Client,
    as_json: bool,
) -> None:
    """Submit a job of any installed KIND, e.g. a third-party one."""
    _submit(client, kind, raw_params, wait, as_json, output, target_chunk_s, name)


def _params(items: tuple[str, ...]) -> dict[str, Any]:
    """The ``-p NAME=VALUE`` options as parameters, read while options are parsed (so a
    bad one is refused before anything is contacted)."""
    params: dict[str, Any] = {}
    for item in items:
        param, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--param")
        params[param] = _param_value(param, value)
    return params


class _NotFinite(Exception):
    pass


def _finite_number(text: str) -> float:
    number = float(text)
    if number in (float("inf"), float("-inf")):  # e.g. 1e999
        raise _NotFinite(text)
    return number


def _refuse_constant(text: str) -> Any:
    raise _NotFinite(text)


def _param_value(param: str, value: str) -> Any:
    """A ``-p`` value read as JSON, else taken as a string; NaN and infinities (which
    Python's JSON reader would take, and JSON cannot carry) are a usage error."""
    try:
        return json.loads(value, parse_float=_finite_number, parse_constant=_refuse_constant)
    except _NotFinite as exc:
        raise click.BadParameter(
            f"{param}={value}: {exc} is not a finite number (to send it as a string, "
            f"quote it: {param}='\"{value}\"')",
            param_hint="--param",
        ) from exc
    except ValueError:
        return value


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
