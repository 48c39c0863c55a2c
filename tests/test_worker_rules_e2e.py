"""The owner's rules with real processes: a coordinator and workers over TLS on loopback, a
CPU-hungry program started by the test, and the compute processes' state and CPU time read
from the operating system."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest
from click.testing import CliRunner

from hydracompute.cli import main
from hydracompute.client import Client
from hydracompute.kinds.pi_kernel import count_hits
from tests.e2e_support import Pool, compute_processes, pool, wait_until
from tests.worker_support import check_duty_share, core_time

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]

SEED = 7_2026_11_25
#: The rule under test: pause above 40% of the machine used by others, resume below 25%.
#: On this 2-core machine, one busy program is 50%.
POLITE = ["--cpu-pause-percent", "40", "--cpu-resume-percent", "25", "--cpu-window-s", "1"]


def start_worker(p: Pool, name: str, *options: str) -> tuple[subprocess.Popen[str], Path]:
    """``hydracompute worker URL --cores 1 OPTIONS``; returns it and its identity file."""
    identity = p.data_dir / "workers" / f"{name}.json"
    fingerprint = p.coordinator.ca_fingerprint
    assert fingerprint is not None
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hydracompute",
            "--log-level",
            "warning",
            "worker",
            p.url,
            "--ca-fingerprint",
            fingerprint,
            "--cores",
            "1",
            "--name",
            name,
            "--identity",
            str(identity),
            *options,
        ],
        env=dict(os.environ, HYDRACOMPUTE_JOIN_TOKEN=p.coordinator.join_token),
        text=True,
    )
    p.workers.append(process)
    return process, identity


@contextmanager
def cpu_hog() -> Iterator[subprocess.Popen[bytes]]:
    """A program that wants a whole core, until the block ends."""
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield hog
    finally:
        hog.kill()
        hog.wait()


def stopped(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_STOPPED
    except psutil.NoSuchProcess:
        return False


def cpu_s(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def local_status(identity: Path) -> dict[str, Any] | None:
    """What ``hydracompute worker status`` shows for this worker (None until it runs)."""
    result = CliRunner().invoke(main, ["worker", "status", "--identity", str(identity), "--json"])
    shown = json.loads(result.output)
    return shown[0] if result.exit_code == 0 and shown else None


def worker_named(client: Client, name: str) -> dict[str, Any]:
    (found,) = [w for w in client.workers() if w["name"] == name]
    return found


def test_a_cpu_hungry_program_pauses_the_worker_and_its_end_resumes_it(tmp_path: Path) -> None:
    with pool(tmp_path / "pool", target_chunk_s=1.0, heartbeat_s=0.5) as p, p.client() as client:
        worker, identity = start_worker(p, "polite", *POLITE)
        job = client.submit("pi", samples=10**13, seed=SEED)
        (pid,) = wait_until(lambda: compute_processes(worker), what="the compute process")
        wait_until(lambda: job.progress() > 0, what="the first results")
        with cpu_hog():
            began = time.monotonic()
            wait_until(lambda: stopped(pid), timeout=10, what="the worker to pause")
            paused_after_s = time.monotonic() - began
            shown = wait_until(
                lambda: (s := local_status(identity)) and s["state"] == "paused" and s,
                timeout=5,
                what="the status to say paused",
            )
            assert "other programs use" in shown["reason"]
            seen = wait_until(
                lambda: (w := worker_named(client, "polite"))["state"] == "paused" and w,
                timeout=5,
                what="the coordinator to know",
            )
            assert "other programs use" in seen["state_reason"]
            # Paused, it asks for nothing; the chunk in hand (none if the pause fell between
            # two chunks) stays leased: leases go back only after a long pause (default 60 s).
            assert seen["leases"] <= 1 and len(shown["leases"]) <= 1
            frozen, progress = cpu_s(pid), job.progress()
            time.sleep(1.0)  # a window in which it must not compute at all
            assert cpu_s(pid) - frozen < 0.05
            assert job.progress() == progress
        ended = time.monotonic()
        wait_until(lambda: not stopped(pid), timeout=10, what="the worker to resume")
        resumed_after_s = time.monotonic() - ended
        wait_until(lambda: job.progress() > progress, what="progress again")
        assert compute_processes(worker) == [pid]  # the same process carried on
        wait_until(lambda: worker_named(client, "polite")["state"] == "running", timeout=5)
        job.cancel()
    print(
        f"paused {paused_after_s:.2f} s after the hog began, resumed {resumed_after_s:.2f} s after"
    )
    assert paused_after_s < 5 and resumed_after_s < 5


def test_a_duty_cycle_gives_the_compute_processes_that_share_of_a_core(tmp_path: Path) -> None:
    window_s = 4.0
    with pool(tmp_path / "pool", target_chunk_s=2.0, heartbeat_s=1.0) as p, p.client() as client:
        # Normal priority: measure the duty cycle, not the competition for the core.
        worker, _ = start_worker(
            p, "half", "--duty-percent", "50", "--duty-period-s", "0.2", "--priority", "normal"
        )
        job = client.submit("pi", samples=10**13, seed=SEED)
        (pid,) = wait_until(lambda: compute_processes(worker), what="the compute process")
        wait_until(lambda: job.progress() > 0, what="full-size chunks")
        began, before = time.monotonic(), core_time(pid)
        time.sleep(window_s)  # the measured window
        figures = check_duty_share(before, core_time(pid), time.monotonic() - began, 0.5)
        seen = worker_named(client, "half")
        job.cancel()
    print(f"duty 50% over {window_s:.0f} s: {figures}")
    assert seen["state"] == "running" and seen["state_reason"] == "throttled to 50% of the time"


def test_a_long_pause_returns_the_leases_and_another_worker_finishes_exactly(
    tmp_path: Path,
) -> None:
    # Seconds of work for one core even at the 6·10^9 samples/s seen on fast machines: the
    # job must still be running when the pause has lasted long enough to return leases.
    samples = 3 * 10**10 + 4321
    with pool(tmp_path / "pool", target_chunk_s=1.0, heartbeat_s=0.5) as p, p.client() as client:
        paused, identity = start_worker(p, "paused", *POLITE, "--return-after-s", "1")
        job = client.submit("pi", samples=samples, seed=SEED)
        (pid,) = wait_until(lambda: compute_processes(paused), what="the compute process")
        wait_until(lambda: job.progress() > 0, what="the first results")
        with cpu_hog():
            shown = wait_until(
                lambda: (s := local_status(identity)) and s["leases_returned"] > 0 and s,
                timeout=15,
                what="the leases to go back",
            )
            assert shown["state"] == "paused" and shown["leases"] == []
            # The suspended computation was killed, not left holding its memory.
            wait_until(lambda: pid not in compute_processes(paused), timeout=10)
            seen = worker_named(client, "paused")
            assert (seen["state"], seen["leases"], seen["online"]) == ("paused", 0, True)
            progress = job.progress()
            assert progress < 1
            # Another worker, without rules, takes the returned chunk and the rest. With it
            # and the hog both busy, the first one stays paused throughout.
            start_worker(p, "other")
            answer = job.wait(timeout=120).answer
            done_by = {w["name"]: w["chunks_done"] for w in client.workers()}
            assert worker_named(client, "paused")["state"] == "paused"
    assert done_by["other"] > 0
    assert answer["hits"] == count_hits(SEED, 0, samples)
    assert answer["samples"] == samples
