"""End to end: a real coordinator and real worker processes over loopback HTTP.

Answers are compared exactly with a direct single-process computation: whatever the
number of workers, the chunk sizes, the failures and the restarts, a job's answer is the
same.
"""

from __future__ import annotations

import io
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hydracompute.cli import EXIT_REFUSED
from hydracompute.client import Client
from hydracompute.demo import stop
from hydracompute.kinds.mandelbrot_kernel import render_tile
from hydracompute.kinds.pi_kernel import count_hits
from hydracompute.tls import CertificateMismatch
from tests.e2e_support import compute_processes, pool, wait_until

pytestmark = pytest.mark.e2e

SEED = 20261125
MANDELBROT = {
    "width": 333,
    "height": 250,
    "x_min": -1.9,
    "x_max": 0.6,
    "y_min": -1.1,
    "y_max": 1.0,
    "max_iter": 600,
}


def direct_mandelbrot() -> np.ndarray:
    m = MANDELBROT
    return render_tile(
        m["x_min"],
        m["x_max"],
        m["y_min"],
        m["y_max"],
        m["width"],
        m["height"],
        m["max_iter"],
        0,
        0,
        m["width"],
        m["height"],
    )


def downloaded_counts(client: Client, job_id: str) -> np.ndarray:
    return np.load(io.BytesIO(client.job(job_id).artefact("counts.npy")), allow_pickle=False)


@pytest.mark.parametrize(("workers", "target_chunk_s"), [(1, 0.05), (2, 0.3)])
def test_pi_and_mandelbrot_exact_whatever_the_pool(
    tmp_path: Path, workers: int, target_chunk_s: float
) -> None:
    samples = 3 * 10**8 + 12345  # not a whole number of blocks
    with pool(tmp_path / "pool", target_chunk_s=target_chunk_s) as p:
        for _ in range(workers):
            p.add_worker(cores=1)
        with p.client() as client:
            # All present before the jobs are (they last well under a second on a fast
            # machine): each asks for work at once, and gets a probe chunk.
            wait_until(
                lambda: sum(w["online"] for w in client.workers()) == workers,
                what="the workers join",
            )
            pi = client.submit("pi", samples=samples, seed=SEED)
            mandel = client.submit("mandelbrot", **MANDELBROT)
            answer = pi.wait(timeout=300).answer
            mandel.wait(timeout=300)
            counts = downloaded_counts(client, mandel.job_id)
            chunks = pi.info().raw
            served = {w["name"]: w["chunks_done"] for w in client.workers()}
    assert answer["hits"] == count_hits(SEED, 0, samples)
    assert answer["samples"] == samples
    assert abs(answer["estimate"] - math.pi) < 6 * answer["stderr"]
    np.testing.assert_array_equal(counts, direct_mandelbrot())
    assert chunks["state"] == "done"
    # Every worker took part.
    assert len(served) == workers and all(n > 0 for n in served.values())


def test_worker_killed_mid_job_loses_nothing(tmp_path: Path) -> None:
    samples = 10**10  # seconds of work even at the 6·10^9 samples/s per core seen here
    with pool(tmp_path / "pool", target_chunk_s=0.3, heartbeat_s=0.3) as p:
        doomed = p.add_worker(cores=1)
        with p.client() as client:
            job = client.submit("pi", samples=samples, seed=SEED)
            wait_until(lambda: 0 < job.progress() < 0.5, what="the first results")
            doomed.send_signal(signal.SIGKILL)
            doomed.wait()
            progress_at_kill = job.progress()
            p.add_worker(cores=1)
            answer = job.wait(timeout=300).answer
            leases = {w["name"]: w["chunks_done"] for w in client.workers()}
    assert progress_at_kill < 1
    assert leases["test-1"] > 0
    assert answer["hits"] == count_hits(SEED, 0, samples)


def test_compute_process_killed_the_worker_carries_on(tmp_path: Path) -> None:
    samples = 10**10
    with pool(tmp_path / "pool", target_chunk_s=0.5, heartbeat_s=0.5) as p:
        worker = p.add_worker(cores=2)
        with p.client() as client:
            job = client.submit("pi", samples=samples, seed=SEED)
            wait_until(lambda: 0 < job.progress() < 0.5, what="the first results")
            victims = wait_until(lambda: compute_processes(worker), what="compute processes")
            os.kill(victims[0], signal.SIGKILL)
            answer = job.wait(timeout=300).answer
            assert worker.poll() is None, "the worker itself must survive"
            assert len(compute_processes(worker)) == 2, "the pool was rebuilt"
    assert answer["hits"] == count_hits(SEED, 0, samples)


def test_coordinator_killed_and_restarted_finishes_exactly(tmp_path: Path) -> None:
    # Enough samples to be caught under way on a fast machine (over 6·10^9 per second per
    # core seen here), not so many that the direct count below takes long on a slow one.
    samples = 10**10
    with pool(tmp_path / "pool", target_chunk_s=0.2, heartbeat_s=0.3) as p:
        p.add_worker(cores=1)
        p.add_worker(cores=1)
        with p.client() as client:
            pi = client.submit("pi", samples=samples, seed=SEED)
            mandel = client.submit("mandelbrot", **MANDELBROT)
            wait_until(lambda: 0.05 < pi.progress() < 0.8, what="π to be under way")
        p.kill_coordinator()
        p.start_coordinator()  # same file, same port: the workers reconnect by themselves
        with p.client() as client:
            answer = client.job(pi.job_id).wait(timeout=300).answer
            client.job(mandel.job_id).wait(timeout=300)
            counts = downloaded_counts(client, mandel.job_id)
    assert answer["hits"] == count_hits(SEED, 0, samples)
    np.testing.assert_array_equal(counts, direct_mandelbrot())


def test_ctrl_c_returns_unfinished_leases(tmp_path: Path) -> None:
    with pool(tmp_path / "pool", target_chunk_s=2.0, heartbeat_s=5.0) as p:
        first = p.add_worker(cores=1)
        with p.client() as client:
            job = client.submit("pi", samples=10**11, seed=SEED)

            def first_holds_lease() -> bool:
                return any(w["leases"] for w in client.workers())

            wait_until(first_holds_lease, what="a lease in hand")
            first.send_signal(signal.SIGINT)
            assert first.wait(timeout=60) == 0
            # Returned, not left to expire (the TTL here is 15 s): no lease is held.
            assert not first_holds_lease()
            assert not any(w["online"] for w in client.workers())
            client.job(job.job_id).cancel()


def test_worker_with_a_wrong_fingerprint_refuses_to_connect(tmp_path: Path) -> None:
    with pool(tmp_path / "pool") as p:
        assert p.url.startswith("https://")  # TLS is the default
        wrong = "sha256:" + "ab" * 32
        env = dict(os.environ, HYDRACOMPUTE_JOIN_TOKEN=p.coordinator.join_token)
        refused = subprocess.run(
            [sys.executable, "-m", "hydracompute", "worker", p.url, "--ca-fingerprint", wrong],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert refused.returncode == EXIT_REFUSED
        assert "fingerprint" in refused.stderr and wrong in refused.stderr
        with p.client() as client:
            assert client.workers() == []  # it never enrolled


def test_client_with_a_wrong_fingerprint_refuses_to_connect(tmp_path: Path) -> None:
    with pool(tmp_path / "pool") as p, pytest.raises(CertificateMismatch):
        Client(p.url, api_key=p.coordinator.admin_key, ca_fingerprint="sha256:" + "00" * 32)


def test_a_restarted_worker_rejoins_as_itself(tmp_path: Path) -> None:
    with pool(tmp_path / "pool") as p, p.client() as client:
        first = p.add_worker(cores=1)
        wait_until(lambda: p.online_workers() == 1, what="the worker to join")
        (before,) = client.workers()
        first.send_signal(signal.SIGINT)
        assert first.wait(timeout=60) == 0
        p.workers.remove(first)
        p.add_worker(cores=1)  # same pool, same name: the saved identity is used
        wait_until(lambda: p.online_workers() == 1, what="the worker to rejoin")
        (after,) = client.workers()
        assert after["worker_id"] == before["worker_id"]
        # A revoked worker is refused; restarted with a valid join token, it enrols anew.
        client.request("POST", f"/api/v1/workers/{before['worker_id']}/revoke")
        stop(p.workers.pop())
        p.add_worker(cores=1)
        wait_until(lambda: p.online_workers() == 1, what="a fresh enrolment")
        ids = {w["worker_id"]: w["revoked"] for w in client.workers()}
        assert len(ids) == 2 and ids[before["worker_id"]] is True


def test_a_newcomers_worker_keeps_its_identity_and_pinned_ca_across_changes(
    tmp_path: Path,
) -> None:
    """The README's promise, as a newcomer follows it: the first run joins with a
    single-use token and the CA's fingerprint; later runs with other cores rejoin as the
    same worker with neither (the token spent, still in the environment, or gone)."""
    with pool(tmp_path / "pool") as p, p.client() as client:
        token = client.request("POST", "/api/v1/join-tokens", json={"max_uses": 1}).json()
        home = tmp_path / "volunteer"  # the worker machine's own home directories
        env = dict(
            os.environ,
            XDG_DATA_HOME=str(home / "data"),
            XDG_CONFIG_HOME=str(home / "config"),
            HYDRACOMPUTE_JOIN_TOKEN=token["secret"],
        )
        fingerprint = p.coordinator.ca_fingerprint
        assert fingerprint is not None

        def run_worker(cores: int, *extra: str, **changes: str | None) -> None:
            environment = {k: v for k, v in {**env, **changes}.items() if v is not None}
            command = [sys.executable, "-m", "hydracompute", "worker", p.url, *extra]
            worker = subprocess.Popen(
                [*command, "--cores", str(cores), "--name", "newcomer"], env=environment
            )
            try:
                wait_until(
                    lambda: [w["cores"] for w in client.workers() if w["online"]] == [cores],
                    what=f"the worker to join with {cores} core(s)",
                )
            finally:
                stop(worker)
            assert worker.returncode == 0

        run_worker(1, "--ca-fingerprint", fingerprint)
        (first,) = client.workers()
        run_worker(2)  # the spent token in the environment, no fingerprint
        run_worker(3, HYDRACOMPUTE_JOIN_TOKEN=None)  # neither
        (last,) = client.workers()
        assert last["worker_id"] == first["worker_id"]
        assert last["cores"] == 3
        tokens = client.request("GET", "/api/v1/join-tokens").json()["credentials"]
        assert {t["id"]: t["uses"] for t in tokens}[token["id"]] == 1
        kept = list((home / "data" / "hydracompute" / "workers").glob("*.ca.pem"))
        assert len(kept) == 1 and kept[0].stat().st_mode & 0o077 == 0


def test_a_worker_that_never_joined_needs_a_token(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "HYDRACOMPUTE_JOIN_TOKEN"}
    refused = subprocess.run(
        [sys.executable, "-m", "hydracompute", "worker", "https://127.0.0.1:9"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2
    assert "has not joined the pool" in refused.stderr and "--token" in refused.stderr
