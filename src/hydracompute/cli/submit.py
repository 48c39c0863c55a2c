"""``hydracompute submit KIND``: submit a job of a built-in kind, a WebAssembly module, or
any installed kind.

Every submit command takes the same options (name, verification, placement, priority,
carbon, waiting, output); their callbacks leave what they were given in the command's
context, and only :func:`_submit` reads it, so each command names only its own parameters.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from hydracompute.cli.admin import parse_duration
from hydracompute.cli.base import FiniteFloat, handle_errors, main, notes, print_json, with_client
from hydracompute.cli.jobs import follow, print_answer, save_output
from hydracompute.client import Client
from hydracompute.kinds.mandelbrot_colour import COLOUR_MAPS

#: Where the submit options leave what they were given, by the name the client's
#: ``submit`` takes (and ``wait``, ``output``, ``as_json`` for the command itself).
SUBMIT_META = "hydracompute.submit"
#: The options that shape what the command does, not the job.
_LOCAL = ("wait", "output", "as_json")


def _same(value: Any) -> Any:
    return value


def _option(*names: str, keep: str, convert: Callable[[Any], Any] = _same, **kw: Any) -> Any:
    """A submit option that keeps its value (converted, unless ``None``) under ``keep``."""

    def keep_value(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        value = convert(value)
        if value is not None:
            ctx.meta.setdefault(SUBMIT_META, {})[keep] = value

    return click.option(*names, expose_value=False, callback=keep_value, **kw)


submit_options = [
    _option(
        "--name",
        keep="name",
        default="",
        show_default=False,
        help="A name shown by 'jobs' and the dashboard.",
    ),
    _option("--wait", keep="wait", is_flag=True, help="Wait for the answer, with a progress bar."),
    _option(
        "--replicas",
        keep="replication",
        type=click.IntRange(1, 5),
        default=None,
        help="Copies of each chunk, computed by different workers (volunteers), to verify it.",
    ),
    _option(
        "--quorum",
        keep="quorum",
        type=click.IntRange(1, 5),
        default=None,
        help="Copies that must agree (default: both of two, a majority of more).",
    ),
    _option(
        "--adaptive/--no-adaptive",
        keep="adaptive",
        default=None,
        help="Adaptive verification: replicate untrusted workers' outputs always, trusted "
        "ones' now and then (default: the coordinator's --verify).",
    ),
    _option(
        "--priority",
        keep="priority",
        type=click.IntRange(-100, 100),
        default=None,
        help="Among your own running jobs, higher runs first (default 0); other "
        "submitters' share of the pool is not affected.",
    ),
    _option(
        "--require-label",
        keep="required_labels",
        convert=lambda labels: list(labels) or None,
        multiple=True,
        metavar="LABEL",
        help="Only workers the pool's admin gave this label (e.g. trusted) get its chunks; "
        "repeat for several (docs/security.md).",
    ),
    _option(
        "--deadline",
        keep="deadline_s",
        convert=parse_duration,
        default=None,
        metavar="DURATION",
        help="When it should be done, from now (e.g. 6h, 2d; at most 7d).",
    ),
    _option(
        "--carbon",
        keep="carbon",
        type=click.Choice(["blind", "prefer-clean"]),
        default=None,
        help="prefer-clean: run on cleaner grids and at cleaner hours within --deadline "
        "(default: blind, as if no grid mattered).",
    ),
    _option(
        "-o", "--output", keep="output", default=None, help="With --wait: save the main artefact."
    ),
    _option(
        "--target-chunk-s",
        keep="target_chunk_s",
        default=None,
        type=FiniteFloat(0.01, 3600),
        help="Seconds per chunk for this job (default: the coordinator's).",
    ),
    _option("--json", keep="as_json", is_flag=True, help="Print JSON for scripts."),
]


def with_submit_options(fn: Callable[..., None]) -> Callable[..., None]:
    for option in reversed(submit_options):
        fn = option(fn)
    return fn


def _submit(client: Client, kind: str, params: dict[str, Any]) -> None:
    """Submit a job with the submit options given, then print its id, or wait for it and
    print (and with ``-o`` save) its answer."""
    given = dict(click.get_current_context().meta.get(SUBMIT_META, {}))
    wait, output, as_json = (given.pop(key, None) for key in _LOCAL)
    if output and not wait:
        raise click.UsageError("-o/--output needs --wait (or use 'hydracompute result JOB -o')")
    job = client.submit(kind, **given, **params)
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
    info = follow(job, bool(as_json))
    if output:
        save_output(job, output)
    if as_json:
        print_json(info.raw)
    else:
        print_answer(info)


@main.group()
def submit() -> None:
    """Submit a job."""


@submit.command("pi")
@click.option("--samples", required=True, type=FiniteFloat(), help="Number of samples, e.g. 1e10.")
@click.option("--seed", default=None, type=int, help="Random seed (chosen if omitted).")
@with_submit_options
@handle_errors
@with_client
def submit_pi(samples: float, seed: int | None, client: Client) -> None:
    """Estimate π by Monte-Carlo sampling."""
    params: dict[str, Any] = {"samples": samples}
    if seed is not None:
        params["seed"] = seed
    _submit(client, "pi", params)


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
    client: Client,
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
    _submit(client, "mandelbrot", params)


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
    client: Client,
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
    _submit(client, "wasm", params)


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
def submit_kind(kind: str, raw_params: dict[str, Any], client: Client) -> None:
    """Submit a job of any installed KIND, e.g. a third-party one."""
    _submit(client, kind, raw_params)


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
