"""The command line for a pool's newcomer and its admin, against a real coordinator on
loopback: a job no worker can run says so, workers are removed, and the coordinator's
forgetting of long-gone workers is set."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from hydracompute.cli import EXIT_REFUSED, main
from tests.e2e_support import Pool, pool
from tests.test_cli import run

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def empty_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    """A coordinator with no worker at all."""
    with pool(tmp_path_factory.mktemp("cli-admin") / "pool") as p:
        yield p


def test_a_job_no_worker_can_run_warns_at_submission_and_in_its_status(
    empty_pool: Pool,
) -> None:
    submitted = run(empty_pool, "submit", "pi", "--samples", "1e9")
    assert submitted.exit_code == 0, submitted.output
    job_id = submitted.stdout.strip()
    assert "warning: no worker is online to run kind pi" in submitted.stderr
    assert job_id in submitted.stderr  # which job waits
    shown = run(empty_pool, "status", job_id)
    assert shown.exit_code == 0, shown.output
    assert "waiting: no worker is online to run kind pi" in shown.stdout
    as_json = run(empty_pool, "submit", "pi", "--samples", "1e9", "--json")
    assert '"waiting_reason": "no worker is online to run kind pi"' in as_json.stdout
    assert "warning" not in as_json.stderr  # scripts read the field
    assert run(empty_pool, "cancel", job_id).exit_code == 0
    assert "waiting" not in run(empty_pool, "status", job_id).stdout


def test_an_admin_removes_a_worker_and_an_unknown_one_is_refused(empty_pool: Pool) -> None:
    with empty_pool.client() as client:
        token = empty_pool.coordinator.join_token
        body = {"name": "old laptop", "cores": 1, "kinds": ["pi"], "join_token": token}
        enrolled = client.request("POST", "/api/v1/workers", json=body).json()
        listed = run(empty_pool, "workers", "--json")
        assert enrolled["worker_id"] in listed.stdout
        removed = run(empty_pool, "workers", "remove", enrolled["worker_id"])
        assert removed.exit_code == 0, removed.output
        assert f"removed {enrolled['worker_id']}" in removed.stderr
        assert all(w["worker_id"] != enrolled["worker_id"] for w in client.workers())
    again = run(empty_pool, "workers", "remove", enrolled["worker_id"])
    assert again.exit_code == EXIT_REFUSED
    assert "no worker" in again.stderr


@pytest.mark.parametrize("value", ["soon", "5m", "-1d", "30x"])
def test_a_bad_forgetting_time_is_a_usage_error(value: str, tmp_path: Path) -> None:
    started = time.monotonic()
    result = CliRunner().invoke(
        main,
        ["coordinator", "--data-dir", str(tmp_path), "--forget-workers-after", value],
    )
    assert result.exit_code == 2, result.output
    assert "--forget-workers-after" in result.output
    assert time.monotonic() - started < 30  # refused before anything started
    assert not (tmp_path / "coordinator.db").exists()


@pytest.mark.parametrize(
    ("value", "seconds"), [("never", None), ("NEVER", None), ("1h", 3600.0), ("30d", 2592000.0)]
)
def test_forgetting_times_read_as_durations(value: str, seconds: float | None) -> None:
    from hydracompute.cli.pool import _forget_after_s

    assert _forget_after_s(value) == seconds


def test_the_default_forgetting_time_is_thirty_days() -> None:
    shown = CliRunner().invoke(main, ["coordinator", "--help"])
    assert "--forget-workers-after DURATION" in shown.output
    assert "[default: 30d]" in " ".join(shown.output.split())
