"""A pool of several real coordinator processes sharing one store, and worker processes
given every coordinator's URL (for the end-to-end tests and bench/bench_failover.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydracompute.client import Client
from hydracompute.demo import LocalCoordinator, start_coordinator, stop
from hydracompute.worker.status import status_path


class SharedPool:
    """``count`` coordinators on the store at ``store_url``, each with a data directory of
    its own under ``root``, and worker processes that know them all."""

    def __init__(
        self,
        root: Path,
        store_url: str,
        count: int = 2,
        target_chunk_s: float = 0.2,
        heartbeat_s: float = 0.5,
    ) -> None:
        self.root, self.store_url = root, store_url
        self.options = [
            "--store",
            store_url,
            "--target-chunk-s",
            str(target_chunk_s),
            "--heartbeat-s",
            str(heartbeat_s),
        ]
        self.coordinators: list[LocalCoordinator | None] = [None] * count
        self.ports = [0] * count
        self.workers: list[tuple[subprocess.Popen[str], Path]] = []

    def start(self, i: int) -> LocalCoordinator:
        """Start coordinator ``i`` (again, on its port, if it ran before)."""
        for attempt in range(6):
            try:
                local = start_coordinator(self.root / f"c{i}", self.ports[i], self.options)
                break
            except RuntimeError as exc:  # the port a killed coordinator held, not yet free
                if "Address already in use" not in str(exc) or attempt == 5:
                    raise
                time.sleep(0.2 * 2**attempt)
        self.coordinators[i] = local
        self.ports[i] = int(local.url.rsplit(":", 1)[1])
        return local

    def coordinator(self, i: int) -> LocalCoordinator:
        local = self.coordinators[i]
        assert local is not None, f"coordinator {i} is not running"
        return local

    @property
    def urls(self) -> list[str]:
        return [f"https://127.0.0.1:{port}" for port in self.ports]

    def kill(self, i: int) -> None:
        """SIGKILL coordinator ``i``: no goodbye, its entry and connections just stop."""
        process = self.coordinator(i).process
        process.send_signal(signal.SIGKILL)
        process.wait()
        if process.stdout is not None:
            process.stdout.close()
        self.coordinators[i] = None

    def client(self, i: int) -> Client:
        """A client of coordinator ``i`` with the admin key (made by coordinator 0)."""
        admin = (self.root / "c0" / "admin.key").read_text().strip()
        local = self.coordinator(i)
        return Client(local.url, api_key=admin, ca_fingerprint=local.ca_fingerprint)

    def add_worker(self, order: list[int], cores: int = 1, extra: Sequence[str] = ()) -> Path:
        """Start a worker given the coordinators' URLs in ``order`` (its first is its
        preferred); returns its status file."""
        first = self.coordinator(order[0])
        name = f"w{len(self.workers)}"
        identity = self.root / "workers" / f"{name}.json"
        identity.parent.mkdir(parents=True, exist_ok=True)
        environment = dict(os.environ, HYDRACOMPUTE_JOIN_TOKEN=first.join_token)
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hydracompute",
                "--log-level",
                "warning",
                "worker",
                *[self.urls[i] for i in order],
                "--ca-fingerprint",
                str(first.ca_fingerprint),
                "--cores",
                str(cores),
                "--name",
                name,
                "--identity",
                str(identity),
                *extra,
            ],
            env=environment,
            text=True,
        )
        self.workers.append((process, identity))
        return status_path(identity)

    def close(self) -> None:
        for process, _ in self.workers:
            stop(process)
        for local in self.coordinators:
            if local is not None:
                stop(local.process)


def worker_status(status_file: Path) -> dict[str, Any]:
    """What a worker last wrote about itself ({} until it has)."""
    try:
        data = json.loads(status_file.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
