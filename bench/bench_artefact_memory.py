"""The coordinator's peak memory while it serves a large Mandelbrot job's artefacts.

Target (issue 14, item 5): downloading ``image.png`` and ``counts.npy`` of a 2^28-pixel job
(16384×16384, the largest allowed) keeps the coordinator's peak resident memory under
500 MB; it used to reach about 3 GB, as the whole image was assembled, coloured and encoded
in memory.

A real ``hydracompute coordinator`` process (TLS, SQLite file, blob folder beside it) and
one real ``hydracompute worker`` process compute the job with fast parameters (``max_iter``
8 by default: the cost under test is the image's size, not its iterations). Once the job
is done the worker is stopped, the coordinator's peak RSS is reset (``/proc/PID/clear_refs``)
and each artefact is downloaded twice, streamed to a file: the first download renders it
into the blob store, the second is served from there. The peak is read from the kernel's
high-water mark (``VmHWM``, exact) and from psutil's RSS sampled every 10 ms. The files
downloaded are checked: ``counts.npy`` has the image's shape and its counts sum to the
job's ``iterations``; ``image.png`` has the image's size.

    .venv/bin/python bench/bench_artefact_memory.py [--side 16384] [--max-iter 8]
        [--cores 2] [--limit-mb 500] [--json]

Exits with status 1 if the peak during the downloads exceeds ``--limit-mb``.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

from bench_support import stdout_to_stderr
from hydracompute.demo import LocalCoordinator, start_coordinator, start_worker, stop


class PeakSampler:
    """The highest RSS of a process, sampled on a thread every ``period_s``."""

    def __init__(self, process: psutil.Process, period_s: float = 0.01) -> None:
        self.process, self.period_s = process, period_s
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self.peak_bytes = max(self.peak_bytes, self.process.memory_info().rss)


def high_water_mark_bytes(pid: int) -> int:
    """The kernel's peak RSS of the process (VmHWM) since it started or was last reset."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc (not Linux?)")


def reset_high_water_mark(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux ≥ 4.0); whether it could be."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def download(http: httpx.Client, url: str, key: str, to: Path) -> tuple[float, int, int]:
    """Stream an artefact to a file: (seconds, bytes, Content-Length)."""
    began = time.monotonic()
    size = 0
    with http.stream("GET", url, headers={"Authorization": f"Bearer {key}"}) as response:
        if response.status_code != 200:
            raise RuntimeError(f"GET {url}: {response.status_code} {response.read()[:300]!r}")
        with to.open("wb") as out:
            for piece in response.iter_bytes(1 << 20):
                out.write(piece)
                size += len(piece)
    return time.monotonic() - began, size, int(response.headers["content-length"])


def check_counts(path: Path, side: int, iterations: int) -> None:
    counts = np.load(path, mmap_mode="r")
    if counts.shape != (side, side) or counts.dtype != np.dtype("<u4"):
        raise RuntimeError(f"counts.npy is {counts.dtype} {counts.shape}")
    total = sum(int(counts[r : r + 1024].sum(dtype=np.uint64)) for r in range(0, side, 1024))
    if total != iterations:
        raise RuntimeError(f"counts sum to {total}, the job's answer says {iterations}")


def check_png(path: Path, side: int) -> None:
    with path.open("rb") as png:
        head = png.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n" or struct.unpack(">II", head[16:24]) != (side, side):
        raise RuntimeError("image.png is not a PNG of the job's size")


def run(coordinator: LocalCoordinator, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    process = psutil.Process(coordinator.process.pid)
    figures: dict[str, Any] = {"side": args.side, "pixels": args.side**2}
    figures["max_iter"] = args.max_iter
    client = coordinator.client()
    params = {"width": args.side, "height": args.side, "max_iter": args.max_iter}
    began = time.monotonic()
    job = client.submit("mandelbrot", **params)
    with stdout_to_stderr():
        worker = start_worker(coordinator, args.cores, "bench")
    try:
        info = job.wait()
    finally:
        stop(worker)
    if info.state != "done":
        raise RuntimeError(f"the job ended {info.state}: {info.error}")
    figures["compute_s"] = time.monotonic() - began
    figures["peak_while_computing_mb"] = high_water_mark_bytes(process.pid) / 2**20
    time.sleep(1.0)  # the last exchanges answered, the worker gone
    figures["rss_before_downloads_mb"] = process.memory_info().rss / 2**20
    figures["hwm_reset"] = reset_high_water_mark(process.pid)
    http = httpx.Client(verify=str(coordinator.data_dir / "tls" / "ca.pem"), timeout=600.0)
    downloads: list[dict[str, Any]] = []
    with PeakSampler(process) as sampler, http:
        for name in ("image.png", "counts.npy"):
            for attempt in ("rendered", "stored"):
                url = f"{coordinator.url}/api/v1/jobs/{job.job_id}/artefacts/{name}"
                seconds, size, length = download(http, url, coordinator.admin_key, folder / name)
                if size != length:
                    raise RuntimeError(f"{name}: {size} bytes for Content-Length {length}")
                downloads.append({"name": name, "from": attempt, "s": seconds, "mb": size / 2**20})
    figures["downloads"] = downloads
    figures["peak_sampled_mb"] = sampler.peak_bytes / 2**20
    if figures["hwm_reset"]:
        figures["peak_hwm_mb"] = high_water_mark_bytes(process.pid) / 2**20
    figures["peak_mb"] = max(figures["peak_sampled_mb"], figures.get("peak_hwm_mb", 0.0))
    check_png(folder / "image.png", args.side)
    check_counts(folder / "counts.npy", args.side, int(info.answer["iterations"]))
    blobs = coordinator.data_dir.glob("*-blobs/jobs/*/**/*")
    figures["blob_mb"] = sum(p.stat().st_size for p in blobs if p.is_file()) / 2**20
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=16384, help="image width and height")
    parser.add_argument("--max-iter", type=int, default=8)
    parser.add_argument("--cores", type=int, default=2, help="the worker's cores")
    parser.add_argument("--limit-mb", type=float, default=500.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-artefacts-") as tmp:
        with stdout_to_stderr():
            coordinator = start_coordinator(Path(tmp) / "coordinator")
        try:
            figures = run(coordinator, args, Path(tmp))
        finally:
            stop(coordinator.process)
    figures["limit_mb"] = args.limit_mb
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(
            f"{args.side}×{args.side} Mandelbrot (max_iter {args.max_iter}), "
            f"computed in {figures['compute_s']:.1f} s"
        )
        print(
            f"coordinator peak RSS while computing: {figures['peak_while_computing_mb']:.0f} MB; "
            f"RSS before the downloads: {figures['rss_before_downloads_mb']:.0f} MB"
        )
        for d in figures["downloads"]:
            print(f"  {d['name']:<10} {d['from']:<8} {d['mb']:8.1f} MB in {d['s']:6.1f} s")
        hwm = figures.get("peak_hwm_mb")
        print(
            f"peak RSS during the downloads: {figures['peak_mb']:.0f} MB "
            f"(VmHWM {'n/a' if hwm is None else f'{hwm:.0f} MB'}, "
            f"sampled {figures['peak_sampled_mb']:.0f} MB); limit {args.limit_mb:.0f} MB"
        )
        print(f"blob folder: {figures['blob_mb']:.0f} MB")
    if figures["peak_mb"] > args.limit_mb:
        sys.exit(1)


if __name__ == "__main__":
    main()
