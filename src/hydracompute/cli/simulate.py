"""``hydracompute simulate``: run a scenario against the real scheduler with virtual workers."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from hydracompute.cli.base import console, main, notes
from hydracompute.errors import InvalidParams


@main.command()
@click.argument("scenario")
@click.option("--seed", default=0, type=click.IntRange(0, 2**63 - 1), help="Random seed.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write report.json and PNG plots (with the 'sim' extra installed) here.",
)
@click.option(
    "--measure-speeds",
    is_flag=True,
    help="Print the speed of each of the scenario's kinds on one core of this machine "
    "(units/s, for its first job of that kind) instead of simulating.",
)
def simulate(scenario: str, seed: int, out_dir: Path | None, measure_speeds: bool) -> None:
    """Simulate SCENARIO (a TOML file, or a shipped one: home-lan, university-lab,
    volunteer-project, internet-scale) and print its report's main figures."""
    from hydracompute.sim import load_scenario
    from hydracompute.sim import simulate as run

    try:
        loaded = load_scenario(scenario)
    except (InvalidParams, FileNotFoundError) as exc:
        detail = exc.errors if isinstance(exc, InvalidParams) else str(exc)
        raise click.UsageError(f"scenario {scenario}: {detail}") from exc
    if measure_speeds:
        _print_speeds(loaded)
        return
    # The store logs each barred worker; thousands of virtual saboteurs would flood the
    # output (the report counts them).
    # Restored after: the command may run inside a longer process (tests, a notebook).
    store_log = logging.getLogger("hydracompute.store")
    level = store_log.level
    store_log.setLevel(logging.ERROR)
    try:
        report, _ = run(loaded, seed)
    finally:
        store_log.setLevel(level)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "report.json").write_text(json.dumps(report, indent=1) + "\n")
        try:
            from hydracompute.sim.plots import draw_plots
        except ImportError:
            notes.print("matplotlib is not installed (pip install 'hydracompute[sim]'): no plots")
        else:
            for path in draw_plots(report, out_dir):
                notes.print(f"wrote {path}")
    console.print(summary(report))


def summary(report: dict[str, object]) -> str:
    """The report's main figures, one per line."""
    r: dict[str, object] = report
    results = r["results"]
    work = r["work"]
    measured = r["measured"]
    assert isinstance(results, dict) and isinstance(work, dict) and isinstance(measured, dict)
    lines = [
        f"scenario {r['scenario']} (seed {r['seed']}): {r['workers']} workers, "
        f"{r['saboteurs']} saboteurs",
        f"makespan {r['makespan_s']:.1f} s, ideal {r['ideal_makespan_s']:.1f} s, "
        f"efficiency {r['efficiency']:.1%}" + ("" if r["all_jobs_ended"] else " (jobs left)"),
        f"wasted {work['wasted_share']:.2%} of compute; verification overhead "
        f"{r['verification_overhead']:.2%}; wrong chunks accepted {r['wrong_chunks_accepted']}; "
        f"units missing {r['units_missing']}",
        f"results: {results['total']} ({results['max_per_s']:.0f}/s at most, "
        f"{results['allowed_per_s']:.0f}/s allowed); chunk targets {r['chunk_targets_s']}",
        f"measured: {measured['cpu_per_exchange_us']:.0f} µs of CPU per exchange "
        f"({measured['backend']}), {measured['wall_s']:.1f} s wall, "
        f"{measured['process_cpu_s']:.1f} s CPU",
    ]
    return "\n".join(lines)


def _print_speeds(scenario: object) -> None:
    from hydracompute.kinds import default_registry
    from hydracompute.sim.scenario import Scenario
    from hydracompute.sim.speeds import measure_speed

    assert isinstance(scenario, Scenario)
    registry = default_registry()
    seen: set[str] = set()
    for job in scenario.jobs:
        if job.kind in seen:
            continue
        seen.add(job.kind)
        kind = registry.get(job.kind)
        speed = measure_speed(kind, kind.plan(kind.validate(job.params)))
        console.print(f"{job.kind} = {speed:.6g}  # units/s on one core of this machine")
