"""Credit end to end, with real processes: two honest workers and a liar on a replicated
job, the coordinator killed with SIGKILL mid-job. The ledger credits each honest worker the
job's work exactly once (nothing lost, nothing duplicated), the liar nothing for its lies,
and the CSV statement adds up."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

from hydracompute.cli import main
from hydracompute.kinds.pi_kernel import count_hits
from tests.e2e_support import wait_until
from tests.test_cli import run
from tests.test_e2e import SEED
from tests.test_e2e_verification import barred, start_pool, two_honest_workers_and_a_liar

pytestmark = pytest.mark.e2e


def test_verified_work_is_credited_once_through_a_sigkill_and_the_liar_earns_nothing(
    tmp_path: Path,
) -> None:
    samples = 4 * 10**9
    p = start_pool(tmp_path, "--watts-per-core", "20")
    try:
        with p.client() as client:
            two_honest_workers_and_a_liar(p, client)
            job = client.submit("pi", samples=samples, seed=SEED, replication=2)
            wait_until(lambda: barred(client), what="the liar to be barred")
            progress = job.progress()
        p.kill_coordinator()
        p.start_coordinator()  # same file: the ledger is what was committed with verdicts
        with p.client() as client:
            info = client.job(job.job_id).wait(timeout=300)
            names = {w["worker_id"]: w["name"] for w in client.workers()}
        as_csv = run(p, "credit", "--by", "worker", "--csv", "--rate-per-kwh", "0.30")
        as_json = run(p, "credit", "--by", "worker", "--json")
        # A volunteer sees its own credit in `worker status` (asked of the coordinator).
        identity = str(p.coordinator.data_dir / "workers" / "test-0.json")
        status = CliRunner().invoke(main, ["worker", "status", "--identity", identity])
        status_json = CliRunner().invoke(
            main, ["worker", "status", "--identity", identity, "--json"]
        )
    finally:
        p.close()
    assert progress < 1, "the job must still have been running when the coordinator died"
    assert info.state == "done" and info.answer["hits"] == count_hits(SEED, 0, samples)
    assert as_csv.exit_code == 0, as_csv.output
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    *lines, total = rows
    credit = {line["name"]: Decimal(line["credit"]) for line in lines}
    # Every chunk was verified by the two honest workers (the liar disagreed every time):
    # each earned the job's samples once, the liar nothing.
    assert credit == {"test-0": samples, "test-1": samples}
    assert "liar" in names.values()
    # The statement adds up, to the millionth.
    for column in ("chunks", "work", "credit", "energy_kwh", "payout"):
        assert sum(Decimal(line[column]) for line in lines) == Decimal(total[column]), column
    (own,) = json.loads(status_json.stdout)
    assert own["credit"]["credit"] == samples and own["credit"]["chunks"] > 0
    assert f"Credit: {samples:,} for {own['credit']['chunks']} verified chunk(s)" in status.stdout
    statement = json.loads(as_json.stdout)
    assert statement["watts_per_core"] == 20.0
    assert statement["total"]["credit"] == 2 * samples
    assert Decimal(total["payout"]) * 1_000_000 == sum(
        line["payout_micros"] for line in statement["lines"]
    )


@pytest.mark.parametrize(
    "args",
    [
        ["--since", "last tuesday"],
        ["--until", "2026-13-01"],
        ["--since", "2026-12-02", "--until", "2026-12-01"],
        ["--json", "--csv"],
        ["--rate-per-kwh", "-1"],
        ["--by", "planet"],
    ],
)
def test_bad_statement_options_are_usage_errors(args: list[str]) -> None:
    result = CliRunner().invoke(main, ["credit", "--url", "http://127.0.0.1:9", *args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
