"""End to end, with real processes: two honest workers and a liar (tests/liar_worker.py,
whose outputs pass every check a kind can make alone). With replication, and with adaptive
verification, the answers are bit-identical to a direct computation and the liar is
barred; a coordinator killed with SIGKILL during verification changes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hydracompute.client import Client
from hydracompute.kinds.pi_kernel import count_hits
from tests.e2e_support import Pool, wait_until
from tests.test_cli import run
from tests.test_e2e import MANDELBROT, SEED, direct_mandelbrot, downloaded_counts

pytestmark = pytest.mark.e2e

LIAR = Path(__file__).with_name("liar_worker.py")


def add_liar(p: Pool, *options: str) -> subprocess.Popen[str]:
    """A worker process joined like ``Pool.add_worker``'s, running the lying kinds."""
    c = p.coordinator
    pin = ["--ca-fingerprint", fp] if (fp := c.ca_fingerprint) else []
    root = str(Path(__file__).parent.parent)
    env = dict(os.environ, HYDRACOMPUTE_JOIN_TOKEN=c.join_token, PYTHONPATH=root)
    process = subprocess.Popen(
        [
            sys.executable,
            str(LIAR),
            "--log-level",
            "warning",
            "worker",
            c.url,
            *pin,
            "--cores",
            "1",
            "--name",
            "liar",
            "--identity",
            str(c.data_dir / "workers" / "liar.json"),
            *options,
        ],
        env=env,
        text=True,
    )
    p.workers.append(process)
    return process


def barred(client: Client) -> dict[str, str]:
    return {w["name"]: w["barred"] for w in client.workers() if w["barred"]}


def two_honest_workers_and_a_liar(p: Pool, client: Client, *options: str) -> None:
    """Join two honest workers and a liar to ``p`` (all with ``options``), and wait until
    all three are online."""
    p.add_worker(1, *options)
    p.add_worker(1, *options)
    add_liar(p, *options)
    wait_until(lambda: sum(w["online"] for w in client.workers()) == 3, what="joins")


def start_pool(tmp_path: Path, *options: str) -> Pool:
    p = Pool(tmp_path / "pool", target_chunk_s=0.05, heartbeat_s=0.5)
    p.options += list(options)
    p.start_coordinator()
    return p


@pytest.mark.parametrize(
    "verify",
    [
        pytest.param({"replication": 2, "quorum": 2}, id="replicas-2-quorum-2"),
        pytest.param({"adaptive": True}, id="adaptive"),
    ],
)
def test_a_liar_is_barred_and_the_answers_are_exact(
    tmp_path: Path, verify: dict[str, object]
) -> None:
    samples = 6 * 10**8 + 7
    # Trust after 10 confirmed outputs, so that honest workers earn it within the test.
    p = start_pool(tmp_path, "--error-bound", "0.01", "--saboteur-share", "0.2")
    try:
        with p.client() as client:
            two_honest_workers_and_a_liar(p, client)
            pi = client.submit("pi", samples=samples, seed=SEED, **verify)  # type: ignore[arg-type]
            mandel = client.submit("mandelbrot", **MANDELBROT, **verify)  # type: ignore[arg-type]
            pi_answer = pi.wait(timeout=300).answer
            assert mandel.wait(timeout=300).state == "done"
            counts = downloaded_counts(client, mandel.job_id)
            found = barred(client)
            listed = run(p, "workers").output  # the CLI says so, with the reason
    finally:
        p.close()
    assert pi_answer["hits"] == count_hits(SEED, 0, samples)
    np.testing.assert_array_equal(counts, direct_mandelbrot())
    assert list(found) == ["liar"]
    row = next(line for line in listed.splitlines() if "liar" in line)
    assert "barred: its output for chunk" in row, listed


def test_coordinator_killed_during_verification_keeps_its_verdicts(tmp_path: Path) -> None:
    samples = 4 * 10**9
    p = start_pool(tmp_path)
    try:
        with p.client() as client:
            two_honest_workers_and_a_liar(p, client)
            job = client.submit("pi", samples=samples, seed=SEED, replication=2)
            wait_until(lambda: barred(client), what="the liar to be barred")
            progress = job.progress()
        p.kill_coordinator()
        p.start_coordinator()  # same file and port: the workers reconnect by themselves
        with p.client() as client:
            assert list(barred(client)) == ["liar"]  # the verdict is durable
            info = client.job(job.job_id).wait(timeout=300)
            assert list(barred(client)) == ["liar"]
    finally:
        p.close()
    assert progress < 1, "the job must still have been running when the coordinator died"
    assert info.state == "done"
    assert info.answer["hits"] == count_hits(SEED, 0, samples)
