"""Where one short Mandelbrot job's time goes: a timeline of each job, and CPU by process.

A real coordinator (SQLite, loopback, TLS) with N worker processes of one core each, as in
``bench_e2e.py``; the default 4096² view at max_iter 1000 is submitted ``--jobs`` times one
after the other (the first job of a worker of unknown speed gets a probe chunk; the later
ones do not). For each job it prints, on the coordinator's clock: submission → first lease;
each worker's chunks (issued, compute seconds, units, and the gap before its next chunk was
issued: the round trip, the upload and checking of the result, the start of the next
compute); the last result → the job's end → the answer in the client's hands; and the CPU
seconds each process used during the job (coordinator, worker agents, compute processes),
read from ``/proc`` — on a 2-core machine the coordinator's CPU is taken from the workers.

    .venv/bin/python bench/bench_timeline.py [--workers 2] [--jobs 4] [--size 4096]
        [--max-iter 1000] [--view default|high-variance] [--tile 16|32|64] [--json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from hydracompute.demo import start_coordinator, start_worker, stop
from hydracompute.kinds.mandelbrot import MandelbrotKind


def _cpu_s(pids: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds (user + system) used so far by each group of processes."""
    used: dict[str, float] = {}
    for name, group in pids.items():
        total = 0.0
        for pid in group:
            try:
                times = psutil.Process(pid).cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
        used[name] = total
    return used


def _groups(coordinator_pid: int, worker_pids: list[int]) -> dict[str, list[int]]:
    computes = [
        child.pid for pid in worker_pids for child in psutil.Process(pid).children(recursive=True)
    ]
    return {"coordinator": [coordinator_pid], "agents": worker_pids, "computes": computes}


def _job_timeline(db: Path, job_id: str) -> dict[str, Any]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        created_s, finished_s = con.execute(
            "SELECT created_s, finished_s FROM jobs WHERE job_id = ?", (job_id,)
        ).fetchone()
        rows = con.execute(
            "SELECT l.worker_id, l.issued_s, l.compute_s, l.state, c.start, c.stop "
            'FROM leases l JOIN chunks c ON c.job_id = l.job_id AND c."index" = l.chunk_index '
            "WHERE l.job_id = ? ORDER BY l.issued_s",
            (job_id,),
        ).fetchall()
    workers: dict[str, list[dict[str, Any]]] = {}
    for worker_id, issued_s, compute_s, state, start, stop_ in rows:
        workers.setdefault(worker_id, []).append(
            {
                "issued": issued_s - created_s,
                "compute_s": compute_s,
                "state": state,
                "units": stop_ - start,
            }
        )
    for chunks in workers.values():
        for this, following in itertools.pairwise(chunks):
            if this["compute_s"] is not None:
                this["gap_s"] = following["issued"] - this["issued"] - this["compute_s"]
    last_end = max(
        (c["issued"] + c["compute_s"] for cs in workers.values() for c in cs if c["compute_s"]),
        default=0.0,
    )
    return {
        "created_s": created_s,
        "finished": finished_s - created_s,
        "first_lease": min((c["issued"] for cs in workers.values() for c in cs), default=None),
        "last_compute_end": last_end,
        "workers": workers,
    }


def run(workers: int, jobs: int, params: dict[str, Any]) -> list[dict[str, Any]]:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        coordinator = start_coordinator(Path(tmp), 0)
        procs = [start_worker(coordinator, 1, f"bench-{k}") for k in range(workers)]
        try:
            with coordinator.client() as client:
                deadline = time.monotonic() + 120
                while sum(w["online"] for w in client.workers()) < workers:
                    if time.monotonic() > deadline:
                        raise RuntimeError("workers did not join")
                    time.sleep(0.05)
                groups = _groups(coordinator.process.pid, [p.pid for p in procs])
                for _ in range(jobs):
                    cpu_before = _cpu_s(groups)
                    submitted = time.time()
                    job = client.submit("mandelbrot", **params)
                    info = job.wait()
                    answered = time.time()
                    cpu_after = _cpu_s(groups)
                    if info.state != "done":
                        raise RuntimeError(f"the job ended {info.state}: {info.error}")
                    timeline = _job_timeline(Path(tmp) / "coordinator.db", job.job_id)
                    timeline["submitted"] = submitted - timeline["created_s"]
                    timeline["answered"] = answered - timeline["created_s"]
                    timeline["wall_s"] = answered - submitted
                    timeline["cpu_s"] = {k: cpu_after[k] - cpu_before[k] for k in groups}
                    results.append(timeline)
        finally:
            for proc in procs:
                stop(proc)
            stop(coordinator.process)
    return results


def _print(k: int, t: dict[str, Any]) -> None:
    print(
        f"job {k + 1}: {t['wall_s']:.3f}s from submission to answer; coordinator clock from "
        f"the job's creation: submitted {t['submitted'] * 1000:+.0f} ms, first lease "
        f"{t['first_lease'] * 1000:.0f} ms, last result computed "
        f"{t['last_compute_end'] * 1000:.0f} ms, job ended {t['finished'] * 1000:.0f} ms, "
        f"answer received {t['answered'] * 1000:.0f} ms"
    )
    cpu = ", ".join(f"{name} {s:.2f}s" for name, s in t["cpu_s"].items())
    print(f"  CPU during the job: {cpu}")
    for n, (worker_id, chunks) in enumerate(sorted(t["workers"].items())):
        busy = sum(c["compute_s"] or 0.0 for c in chunks)
        cells = []
        for c in chunks:
            compute = "—" if c["compute_s"] is None else f"{c['compute_s'] * 1000:.0f}"
            gap = f" gap {c['gap_s'] * 1000:.0f}" if "gap_s" in c else ""
            cells.append(f"@{c['issued'] * 1000:.0f} {c['units']}u {compute}ms{gap}")
        print(f"  worker {n + 1} ({worker_id[:6]}): computing {busy:.3f}s; " + "; ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--max-iter", type=int, default=1000)
    parser.add_argument(
        "--view",
        choices=["default", "high-variance"],
        default="default",
        help="high-variance: centre -0.7436+0.1318i, span 0.01 (max_iter 100,000 unless given)",
    )
    parser.add_argument("--tile", type=int, default=None, help="name a tile side (else chosen)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    raw: dict[str, Any] = {"width": args.size, "height": args.size, "max_iter": args.max_iter}
    if args.view == "high-variance":
        raw |= {"center_re": -0.7436, "center_im": 0.1318, "span": 0.01}
        if "--max-iter" not in sys.argv:
            raw["max_iter"] = 100_000
    if args.tile is not None:
        raw["tile"] = args.tile
    params = MandelbrotKind().validate(raw)
    results = run(args.workers, args.jobs, params)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    for k, timeline in enumerate(results):
        _print(k, timeline)


if __name__ == "__main__":
    main()
