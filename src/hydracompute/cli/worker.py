"""The ``worker`` command group: run a volunteer worker, show its status, install it as a
service."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
import ssl
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from hydracompute.cli.base import (
    handle_errors,
    json_option,
    main,
    notes,
    print_json,
)
from hydracompute.cli.pool import default_data_dir
from hydracompute.client import DEFAULT_URL
from hydracompute.errors import CoordinatorUnavailable
from hydracompute.worker.rules import PRIORITIES, SETTINGS, Rules, Setting

F = TypeVar("F", bound=Callable[..., Any])
#: What ``install-service --print`` shows in place of the join token.
SHOWN_TOKEN = "<join token>"
#: The token of files only printed when none was given (an environment file's value).
PLACEHOLDER_TOKEN = "JOIN-TOKEN"


def default_identity_file(url: str, name: str | None) -> Path:
    key = hashlib.sha256(f"{url.rstrip('/')}\n{name or ''}".encode()).hexdigest()[:16]
    return default_data_dir() / "workers" / f"{key}.json"


class WorkerGroup(click.Group):
    """``hydracompute worker URL [options]`` runs a worker, as it always has; ``worker
    status`` and ``worker install-service`` are subcommands. A first argument that names no
    subcommand is taken as the start of the ``run`` command's arguments."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0] not in self.commands and args[0] != "--help"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


#: Options as ``HYDRACOMPUTE_WORKER_<OPTION>`` whichever subcommand reads them.
_WORKER_ENV = {"auto_envvar_prefix": "HYDRACOMPUTE_WORKER"}


def _rule_option(setting: Setting) -> Callable[[F], F]:
    flag = "--" + setting.key.replace("_", "-")
    text = f"{setting.help} [default: {setting.default_text}]"
    if setting.kind == "bool":
        return click.option(f"{flag}/--no-{flag[2:]}", setting.key, default=None, help=text)
    if setting.kind == "hours":
        return click.option(flag, setting.key, multiple=True, metavar="WINDOW", help=text)
    if setting.kind == "choice":
        return click.option(flag, setting.key, type=click.Choice(PRIORITIES), help=text)
    if setting.kind == "zone":
        return click.option(flag, setting.key, metavar="ZONE", help=text)
    return click.option(flag, setting.key, type=int if setting.kind == "int" else float, help=text)


def worker_options(fn: F, token_required: bool = True) -> F:
    """The options of a worker: where it joins, as whom, and the owner's rules."""
    options = [
        click.argument("urls", nargs=-1, envvar="HYDRACOMPUTE_URL"),
        click.option(
            "--token",
            envvar="HYDRACOMPUTE_JOIN_TOKEN",
            default=None,
            help="The pool's join token (the coordinator prints it in its join command); "
            "needed to enrol, not to rejoin."
            + ("" if token_required else " Not needed with --print."),
        ),
        click.option(
            "--ca-fingerprint",
            envvar="HYDRACOMPUTE_CA_FINGERPRINT",
            default=None,
            help="SHA-256 fingerprint of the coordinator's own certificate authority, to pin it.",
        ),
        click.option(
            "--cores",
            default=None,
            type=click.IntRange(1, 1024),
            help="Compute processes to run: the CPU cap in cores [default: every core].",
        ),
        click.option("--name", default=None, help="Name shown in the pool (default: host name)."),
        click.option(
            "--identity",
            type=click.Path(dir_okay=False, path_type=Path),
            default=None,
            help="Where the worker keeps its id and secret between runs "
            "(default: one file per pool URL and name in the user data directory).",
        ),
        click.option(
            "--config",
            type=click.Path(dir_okay=False, path_type=Path),
            default=None,
            help="A TOML file of rules (default: worker.toml in the user config directory, "
            "if it exists). Flags override it.",
        ),
        *(_rule_option(s) for s in SETTINGS if s.key != "cores"),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def default_rules_file() -> Path:
    import platformdirs

    return Path(platformdirs.user_config_dir("hydracompute")) / "worker.toml"


def _given_rules(flags: dict[str, Any]) -> dict[str, Any]:
    """The rule flags actually given on the command line (or in the environment)."""
    given = {}
    for key, value in flags.items():
        if value is None or value == ():
            continue
        given[key] = list(value) if isinstance(value, tuple) else value
    return given


#: Coordinators a worker may be given at most.
MAX_COORDINATORS = 16
#: The config file's setting that lists the pool's coordinators (used when no URL is given).
COORDINATORS_SETTING = "coordinators"


def load_rules(
    config: Path | None, cores: int | None, flags: dict[str, Any], urls: Sequence[str] = ()
) -> tuple[Rules, Path | None, list[str]]:
    """The owner's rules from the config file and the flags, and the coordinators' URLs:
    ``urls`` if any, else the file's ``coordinators`` list, else the default URL; usage
    errors if any is bad."""
    from hydracompute.worker.rules import InvalidRules, read_rules_file, rules_from_values

    if config is None and default_rules_file().is_file():
        config = default_rules_file()
    given = _given_rules(flags) | ({"cores": cores} if cores is not None else {})
    try:
        values = read_rules_file(config) if config is not None else {}
        source = str(config) if config is not None else ""
        listed = values.pop(COORDINATORS_SETTING, None)
        rules = rules_from_values(values | given, os.cpu_count() or 1, source)
    except InvalidRules as exc:
        raise click.UsageError(exc.detail) from exc
    if listed is not None and (
        not isinstance(listed, list)
        or not 1 <= len(listed) <= MAX_COORDINATORS
        or not all(isinstance(u, str) and u.startswith(("http://", "https://")) for u in listed)
    ):
        raise click.UsageError(
            f"{config}: {COORDINATORS_SETTING} must be a list of 1 to {MAX_COORDINATORS} "
            "http:// or https:// URLs"
        )
    chosen = list(urls) or listed or [DEFAULT_URL]
    if len(chosen) > MAX_COORDINATORS:
        raise click.UsageError(f"at most {MAX_COORDINATORS} coordinator URLs")
    return rules, config, [u.rstrip("/") for u in chosen]


@main.group(cls=WorkerGroup, invoke_without_command=False)
def worker() -> None:
    """Volunteer this machine: join the pool at URL and compute chunks until Ctrl-C.

    \b
    hydracompute worker URL [OPTIONS]       run a worker (same as 'worker run')
    hydracompute worker status             what the local worker is doing, and why
    hydracompute worker install-service    run it as a service of your session

    The owner's rules (flags, or a TOML file given by --config) say when it may compute:
    see docs/worker.md.
    """


@worker.command("run", context_settings=_WORKER_ENV)
@worker_options
@handle_errors
def worker_run(
    urls: tuple[str, ...],
    token: str | None,
    ca_fingerprint: str | None,
    cores: int | None,
    name: str | None,
    identity: Path | None,
    config: Path | None,
    **rule_flags: Any,
) -> None:
    """Join the pool at URL and compute chunks until Ctrl-C.

    Give the URLs of every coordinator of a pool that has several (as its join command
    does): the worker uses the first, and moves to another within seconds when it stops
    answering. The first run enrols with the join token and pins the coordinator's CA (given by
    --ca-fingerprint); later runs rejoin as the same worker, even with other --cores or
    kinds, and need neither. The owner's rules decide when it computes; 'hydracompute
    worker status' shows what it does.
    """
    from hydracompute.worker.agent import WorkerAgent
    from hydracompute.worker.governor import check_measurable
    from hydracompute.worker.link import has_identity
    from hydracompute.worker.pinning import pinned_ca_path
    from hydracompute.worker.rules import InvalidRules
    from hydracompute.worker.status import status_path

    rules, config, pool = load_rules(config, cores, rule_flags, urls)
    url = pool[0]
    try:
        for warning in check_measurable(rules):
            notes.print(f"[yellow]{warning}[/yellow]")
    except InvalidRules as exc:
        raise click.UsageError(exc.detail) from exc
    if any(u.startswith("http://") for u in pool):
        notes.print("[yellow]plain HTTP: the join token and results cross the network in clear[/]")
    identity = identity or default_identity_file(url, name)
    if not token and not has_identity(identity, pool):
        raise click.UsageError(
            f"this worker has not joined the pool at {url} yet (no identity in {identity}): "
            "give the join token with --token or HYDRACOMPUTE_JOIN_TOKEN"
        )
    try:
        verify = _verification_with_retries(pool, ca_fingerprint, pinned_ca_path(identity))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--ca-fingerprint") from exc
    agent = WorkerAgent(
        pool,
        rules.cores,
        token or "",
        verify=verify,
        name=name,
        identity_file=identity,
        rules=rules,
        status_file=status_path(identity),
        cache_dir=identity.parent / f"{identity.stem}.cache",
    )
    logging.getLogger("hydracompute.worker").info(
        "rules%s: %s", f" from {config}" if config else "", rules.summary()
    )

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, agent.stop)
        await agent.run()

    try:
        asyncio.run(run())
    except InvalidRules as exc:  # a usage error (exit 2), not a refusal
        raise click.UsageError(exc.detail) from exc
    click.echo(f"Stopped after {agent.stats.chunks_done} chunk(s).", err=True)


@worker.command("status")
@click.option(
    "--identity",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The identity file of the worker to show (default: every worker of this user).",
)
@json_option
def worker_status(identity: Path | None, as_json: bool) -> None:
    """What the worker running on this machine is doing, and why.

    Exits with 0 if a worker is running and reporting, 1 if none is.
    """
    from hydracompute.worker.own_credit import credit_line, own_credit
    from hydracompute.worker.status import (
        SUFFIX,
        describe,
        identity_of,
        read_statuses,
        status_path,
    )

    folder = default_data_dir() / "workers"
    paths = [status_path(identity)] if identity else sorted(folder.glob(f"*{SUFFIX}"))
    seen = read_statuses(paths)
    running = [s for s in seen if s.alive]
    # Its credit is the coordinator's to say (asked of it, briefly, for running workers).
    credit = {s.path: own_credit(identity_of(s.path)) for s in running}
    if as_json:
        print_json(
            [
                {
                    "status_file": str(s.path),
                    "running": s.alive,
                    "stale": s.stale,
                    **s.status,
                    "credit": credit.get(s.path),
                }
                for s in (running or seen)
            ]
        )
    elif not seen:
        where = paths[0] if identity else folder
        click.echo(f"No worker is running: none has written its status in {where}.")
    else:
        click.echo(
            "\n\n".join(
                describe(s) + (f"\n{credit_line(credit[s.path])}" if s.path in credit else "")
                for s in (running or seen[:1])
            )
        )
        if not running:
            click.echo("No worker is running.")
    sys.exit(0 if running and not all(s.stale for s in running) else 1)


def _token_optional(fn: F) -> F:
    return worker_options(fn, token_required=False)


@worker.command("install-service", context_settings=_WORKER_ENV)
@_token_optional
@click.option("--print", "print_only", is_flag=True, help="Show the files; write nothing.")
@click.option(
    "--platform",
    "target",
    type=click.Choice(["linux", "macos"]),
    default=None,
    help="The kind of service to write [default: this machine's].",
)
def worker_install_service(
    urls: tuple[str, ...],
    token: str | None,
    ca_fingerprint: str | None,
    cores: int | None,
    name: str | None,
    identity: Path | None,
    config: Path | None,
    print_only: bool,
    target: str | None,
    **rule_flags: Any,
) -> None:
    """Run the worker as a service of your session, at the lowest priority.

    Writes a systemd user unit (Linux) or a launchd agent (macOS) that runs 'hydracompute
    worker URL' with these options, and prints how to enable it. The join token goes in a
    private file (mode 0600), never on the command line. With --print no token is needed:
    the files show a placeholder where it goes.
    """
    from hydracompute import tls
    from hydracompute.private_files import write_atomic
    from hydracompute.worker import service

    if token is None and not print_only:
        raise click.UsageError("Missing option '--token' (or HYDRACOMPUTE_JOIN_TOKEN).")
    token = token or PLACEHOLDER_TOKEN
    platform_name = target or ("macos" if sys.platform == "darwin" else "linux")
    if platform_name == "linux" and target is None and not sys.platform.startswith("linux"):
        raise click.UsageError("services are written for Linux (systemd) and macOS (launchd)")
    rules, config, pool = load_rules(config, cores, rule_flags, urls)
    url = pool[0]
    if ca_fingerprint:
        try:
            ca_fingerprint = tls.parse_fingerprint(ca_fingerprint)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--ca-fingerprint") from exc
    command = [sys.executable, "-m", "hydracompute", "worker", *(urls if urls else ())]
    for option, value in (
        ("--ca-fingerprint", ca_fingerprint),
        ("--cores", cores),
        ("--name", name),
        ("--identity", identity and identity.resolve()),
        ("--config", config and config.resolve()),
    ):
        if value is not None:
            command += [option, str(value)]
    command += _flags_of(_given_rules(rule_flags))
    environment = {}
    if rules.input_idle_minutes is not None:  # the desktop session's display, to ask it
        environment = {k: os.environ[k] for k in ("DISPLAY", "XAUTHORITY") if k in os.environ}
    try:
        if platform_name == "linux":
            import platformdirs

            config_home = Path(platformdirs.user_config_dir())
            description = f"Hydra Compute volunteer worker for {url}"
            files = service.systemd_files(command, token, config_home, description, environment)
        else:
            files = service.launchd_files(command, token, Path.home(), environment)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--token") from exc
    for file in files:
        if print_only:
            shown = file.content.replace(token, SHOWN_TOKEN)
            click.echo(f"# {file.path} (mode {file.mode:o})\n{shown}")
            continue
        file.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(file.path, file.content.encode(), file.mode)
        click.echo(f"Wrote {file.path} (mode {file.mode:o})", err=True)
    click.echo(f"Rules: {rules.summary()}", err=True)
    if print_only:
        return
    click.echo("Then:", err=True)
    for step, why in service.enable_steps(platform_name, files):  # type: ignore[arg-type]
        click.echo(f"  {step:<60} # {why}", err=True)


def _flags_of(rules: dict[str, Any]) -> list[str]:
    """Command-line flags that give ``rules`` (setting name to value) again."""
    flags: list[str] = []
    for key, value in rules.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else f"--no-{flag[2:]}")
        elif isinstance(value, list):
            for item in value:
                flags += [flag, str(item)]
        else:
            flags += [flag, str(value)]
    return flags


def _verification_with_retries(
    urls: Sequence[str], ca_fingerprint: str | None, ca_file: Path
) -> ssl.SSLContext | bool:
    """The pinned CA (kept in ``ca_file`` from an earlier run, or fetched from the first
    coordinator that answers and checked against ``ca_fingerprint``: the coordinators of a
    pool share one), waiting with backoff while none is up yet."""
    from hydracompute.worker import pinning
    from hydracompute.worker.link import backoff_s

    attempt = 0
    while True:
        for url in urls:
            try:
                return pinning.verification(url, ca_fingerprint, ca_file)
            except CoordinatorUnavailable as exc:
                notes.print(exc.detail)
        attempt += 1
        delay = backoff_s(attempt)
        notes.print(f"no coordinator answered; retrying in {delay:.1f} s")
        time.sleep(delay)
