"""Real coordinator and worker processes on loopback, for the end-to-end tests."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydracompute.client import Client
from hydracompute.demo import LocalCoordinator, start_coordinator, start_worker, stop

WAIT_S = 120.0


def wait_until(condition: Callable[[], Any], timeout: float = WAIT_S, what: str = "") -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.02)


def compute_processes(worker: subprocess.Popen[str]) -> list[int]:
    """Process ids of a worker's compute processes (Linux: read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == worker.pid and b"resource_tracker" not in cmdline:
            found.append(int(entry.name))
    return found


class Pool:
    """A coordinator on a SQLite file and any number of worker processes."""

    def __init__(
        self, data_dir: Path, target_chunk_s: float = 0.2, heartbeat_s: float = 0.5
    ) -> None:
        self.data_dir = data_dir
        self.options = ["--target-chunk-s", str(target_chunk_s), "--heartbeat-s", str(heartbeat_s)]
        self.local: LocalCoordinator | None = None
        self.workers: list[subprocess.Popen[str]] = []
        self.port = 0

    @property
    def coordinator(self) -> LocalCoordinator:
        assert self.local is not None, "no coordinator started"
        return self.local

    @property
    def url(self) -> str:
        return self.coordinator.url

    def start_coordinator(self) -> None:
        for attempt in range(5):
            try:
                self.local = start_coordinator(self.data_dir, self.port, self.options)
                break
            except RuntimeError as exc:
                # Restarting on the port a killed coordinator held: the kernel may not have
                # let go of it yet. Anything else is a real failure.
                if "Address already in use" not in str(exc) or attempt == 4:
                    raise
                time.sleep(0.2 * 2**attempt)
        self.port = int(self.url.rsplit(":", 1)[1])

    def kill_coordinator(self) -> None:
        process = self.coordinator.process
        process.send_signal(signal.SIGKILL)
        process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def add_worker(self, cores: int = 1, options: Sequence[str] = ()) -> subprocess.Popen[str]:
        process = start_worker(self.coordinator, cores, f"test-{len(self.workers)}", options)
        self.workers.append(process)
        return process

    def client(self) -> Client:
        return self.coordinator.client()

    def online_workers(self) -> int:
        with self.client() as client:
            return sum(1 for w in client.workers() if w["online"])

    def close(self) -> None:
        for process in self.workers:
            stop(process)
        if self.local is not None:
            stop(self.local.process)


@contextmanager
def pool(data_dir: Path, **options: float) -> Iterator[Pool]:
    p = Pool(data_dir, **options)
    try:
        p.start_coordinator()
        yield p
    finally:
        p.close()
