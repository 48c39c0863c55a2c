"""PNG plots of a simulation report (needs matplotlib: the ``sim`` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402

#: Compute categories as the work plot shows them, in order.
CATEGORIES = (
    "useful",
    "verification",
    "lies",
    "rejected_honest",
    "superseded",
    "expired",
    "returned",
    "abandoned",
    "unfinished",
)


def draw_plots(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """Write rates.png, work.png, chunk_sizes.png and credit.png into ``out_dir``."""
    title = f"{report['scenario']} ({report['workers']:,} workers, seed {report['seed']})"
    return [
        _rates(report, out_dir / "rates.png", title),
        _work(report, out_dir / "work.png", title),
        _chunk_sizes(report, out_dir / "chunk_sizes.png", title),
        _credit(report, out_dir / "credit.png", title),
    ]


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _rates(report: dict[str, Any], path: Path, title: str) -> Path:
    series = report["series"]
    minutes = [t / 60 for t in series["time_s"]]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True)
    top.plot(minutes, series["results_per_s"], label="results/s")
    top.plot(minutes, series["exchanges_per_s"], label="exchanges/s", alpha=0.7)
    top.axhline(report["results"]["allowed_per_s"], color="red", ls="--", label="allowed results/s")
    top.set_ylabel("per second")
    top.legend(loc="upper right", fontsize=8)
    top.set_title(title, fontsize=10)
    bottom.plot(minutes, series["chunk_target_s"], color="green", label="chunk target (s)")
    bottom.set_ylabel("chunk target (s)")
    right = bottom.twinx()
    right.plot(minutes, series["workers_online"], color="grey", alpha=0.6, label="workers online")
    right.set_ylabel("workers online")
    bottom.set_xlabel("virtual time (min)")
    return _save(fig, path)


def _work(report: dict[str, Any], path: Path, title: str) -> Path:
    core_s = report["work"]["core_s"]
    shown = [c for c in CATEGORIES if core_s.get(c, 0) > 0]
    fig, axes = plt.subplots(figsize=(7, 3.5))
    values = [core_s[c] / 3600 for c in shown]
    axes.barh(shown, values)
    axes.set_xlabel("core-hours computed")
    axes.invert_yaxis()
    axes.set_title(
        f"{title}\nmakespan {report['makespan_s']:.0f} s, ideal {report['ideal_makespan_s']:.0f} s"
        f" ({report['efficiency']:.1%}); wrong chunks accepted {report['wrong_chunks_accepted']}",
        fontsize=9,
    )
    return _save(fig, path)


def _chunk_sizes(report: dict[str, Any], path: Path, title: str) -> Path:
    fig, axes = plt.subplots(figsize=(7, 3.5))
    for kind, sizes in report["chunk_sizes"].items():
        histogram = sizes["seconds_histogram"]
        edges, counts = histogram["edges_s"], histogram["counts"]
        axes.stairs(counts, edges, label=kind)
    axes.set_xscale("log")
    axes.set_xlabel("chunk compute time (s)")
    axes.set_ylabel("chunks")
    axes.legend(fontsize=8)
    axes.set_title(title, fontsize=10)
    return _save(fig, path)


def _credit(report: dict[str, Any], path: Path, title: str) -> Path:
    credit = report["credit"]
    values = sorted(credit["values"], reverse=True)
    fig, axes = plt.subplots(figsize=(7, 3.5))
    if values:
        axes.plot(range(1, len(values) + 1), values)
        axes.set_yscale("symlog")
    axes.set_xlabel("volunteers, by credit")
    axes.set_ylabel("credit")
    axes.set_title(
        f"{title}\n{credit['volunteers']:,} volunteers, Gini {credit['gini']:.2f}, "
        f"to saboteurs {credit['to_saboteurs']:.3g}",
        fontsize=9,
    )
    return _save(fig, path)
