"""wasm jobs end to end, with real processes: the command line uploads a module (the
repository's π example, as text) and its job's answer is bit-identical to the built-in π
kind's; only workers whose owners opted in compute it, only labelled workers compute a job
that requires the label, and replication catches a worker that lies about a wasm chunk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hydracompute.kinds.pi import BLOCK_SAMPLES
from hydracompute.kinds.pi_kernel import count_hits
from tests.e2e_support import Pool, wait_until
from tests.test_cli import run
from tests.test_e2e_verification import barred, start_pool, two_honest_workers_and_a_liar
from tests.wasm_support import EXAMPLES, example_c

pytestmark = pytest.mark.e2e

PI_WAT = str(EXAMPLES / "pi.wat")
SEED = 20261207


def submit_pi(p: Pool, samples: int, *options: str, module: str = PI_WAT) -> dict[str, object]:
    """``hydracompute submit wasm examples/wasm/pi.wat`` (or ``module``) over ``samples``,
    waited for."""
    units = -(-samples // BLOCK_SAMPLES)
    result = run(
        p, "submit", "wasm", module, "--units", str(units), "--merge", "sum",
        "-p", f"seed={SEED}", "-p", f"samples={samples}", "--wait", "--json", *options,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    job: dict[str, object] = json.loads(result.output)
    return job


def chunks_done(p: Pool) -> dict[str, int]:
    with p.client() as client:
        return {w["name"]: w["chunks_done"] for w in client.workers()}


def test_only_consenting_and_labelled_workers_run_a_wasm_job_to_its_exact_answer(
    tmp_path: Path,
) -> None:
    samples = 40 * BLOCK_SAMPLES + 99
    p = start_pool(tmp_path)
    try:
        p.add_worker(1, "--accept-wasm")  # test-0
        p.add_worker(1)  # test-1: its owner did not opt in
        wait_until(lambda: p.online_workers() == 2, what="joins")
        job = submit_pi(p, samples)
        listed = run(p, "workers").output
        done = chunks_done(p)
        # Labels: only test-0, once labelled, gets the job that requires the label.
        with p.client() as client:
            workers = {w["name"]: w["worker_id"] for w in client.workers()}
        p.add_worker(1, "--accept-wasm")  # test-2: consents, but is not labelled
        wait_until(lambda: p.online_workers() == 3, what="the third join")
        labelled = run(p, "workers", "label", workers["test-0"], "trusted")
        assert labelled.exit_code == 0, labelled.output
        before = chunks_done(p)
        trusted = submit_pi(p, samples, "--require-label", "trusted")
        after = chunks_done(p)
    finally:
        p.close()
    hits = count_hits(SEED, 0, samples)
    assert job["state"] == "done" and job["answer"]["values"] == [hits, samples]  # type: ignore[index]
    assert done["test-0"] > 0 and done["test-1"] == 0
    rows = {line.split("│")[2].strip(): line for line in listed.splitlines() if "test-" in line}
    assert "yes" in rows["test-0"].split("│")[6] and "no" in rows["test-1"].split("│")[6]
    assert trusted["answer"]["values"] == [hits, samples]  # type: ignore[index]
    assert trusted["required_labels"] == ["trusted"]
    assert after["test-0"] > before["test-0"]
    assert after["test-1"] == before["test-1"] and after.get("test-2", 0) == 0


def test_replication_catches_a_worker_lying_about_a_wasm_chunk(tmp_path: Path) -> None:
    samples = 60 * BLOCK_SAMPLES + 5
    p = start_pool(tmp_path)
    try:
        with p.client() as client:
            two_honest_workers_and_a_liar(p, client, "--accept-wasm")
            job = submit_pi(p, samples, "--replicas", "2")
            found = barred(client)
    finally:
        p.close()
    assert job["answer"]["values"] == [count_hits(SEED, 0, samples), samples]  # type: ignore[index]
    assert list(found) == ["liar"]


def test_the_c_pi_example_built_from_source_answers_like_the_built_in_pi_kind(
    tmp_path: Path,
) -> None:
    example_c("pi", tmp_path)
    samples = 30 * BLOCK_SAMPLES + 7
    p = start_pool(tmp_path)
    try:
        p.add_worker(1, "--accept-wasm")
        wait_until(lambda: p.online_workers() == 1, what="the join")
        job = submit_pi(p, samples, module=str(tmp_path / "pi.wasm"))
    finally:
        p.close()
    assert job["state"] == "done"
    assert job["answer"]["values"] == [count_hits(SEED, 0, samples), samples]  # type: ignore[index]
