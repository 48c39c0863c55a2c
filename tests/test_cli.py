"""The command line against a real coordinator and worker on loopback."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from PIL import Image

from hydracompute import connection
from hydracompute.cli import EXIT_REFUSED, EXIT_UNREACHABLE, main
from hydracompute.kinds.pi_kernel import count_hits
from tests.e2e_support import Pool, pool, wait_until

pytestmark = pytest.mark.e2e
#: A pinned coordinator that does not answer: a command given it must refuse its input
#: before contacting anything (fetching the pinned CA would fail with exit 3).
NOWHERE = ["--url", "https://127.0.0.1:9", "--ca-fingerprint", "sha256:" + "ab" * 32]


@pytest.fixture(scope="module")
def live_pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    with pool(tmp_path_factory.mktemp("cli") / "pool", target_chunk_s=0.1) as p:
        p.add_worker(cores=2)
        yield p


def credentials(p: Pool) -> dict[str, str]:
    fingerprint = p.coordinator.ca_fingerprint
    assert fingerprint is not None
    return {"url": p.url, "api-key": p.coordinator.admin_key, "ca-fingerprint": fingerprint}


def run(p: Pool | None, *args: str, env: dict[str, str] | None = None) -> Result:
    options = []
    if p is not None:
        for name, value in credentials(p).items():
            options += [f"--{name}", value]
    return CliRunner().invoke(main, [*args, *options], env=env, catch_exceptions=False)


def test_submit_pi_and_wait_prints_the_exact_answer(live_pool: Pool) -> None:
    result = run(live_pool, "submit", "pi", "--samples", "2e7", "--seed", "9", "--wait", "--json")
    assert result.exit_code == 0, result.output
    job = json.loads(result.output)
    assert job["state"] == "done"
    assert job["answer"]["hits"] == count_hits(9, 0, 2 * 10**7)
    shown = run(live_pool, "status", job["job_id"], "--json")
    assert json.loads(shown.output)["live"] == job["answer"]
    answer = run(live_pool, "result", job["job_id"], "--json")
    assert json.loads(answer.output) == job["answer"]
    listed = json.loads(run(live_pool, "jobs", "--json").output)
    assert job["job_id"] in [j["job_id"] for j in listed]


def test_submit_mandelbrot_saves_the_png(live_pool: Pool, tmp_path: Path) -> None:
    out = tmp_path / "m.png"
    result = run(
        live_pool,
        "submit",
        "mandelbrot",
        "--width",
        "120",
        "--height",
        "90",
        "--max-iter",
        "100",
        "--wait",
        "-o",
        str(out),
    )
    assert result.exit_code == 0, result.output
    with Image.open(out) as image:
        assert image.size == (120, 90)


def test_submit_any_installed_kind(live_pool: Pool) -> None:
    result = run(
        live_pool,
        "submit",
        "kind",
        "pi",
        "-p",
        "samples=1000000",
        "-p",
        "seed=4",
        "--wait",
        "--json",
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["answer"]["hits"] == count_hits(4, 0, 10**6)


def test_refused_requests_exit_4_with_the_reason(live_pool: Pool) -> None:
    result = run(live_pool, "submit", "pi", "--samples", "0")
    assert result.exit_code == EXIT_REFUSED
    assert "samples" in result.output
    assert run(live_pool, "status", "nosuchjob").exit_code == EXIT_REFUSED
    done = json.loads(run(live_pool, "submit", "pi", "--samples", "1e6", "--wait", "--json").output)
    cancelled = run(live_pool, "cancel", done["job_id"])
    assert cancelled.exit_code == EXIT_REFUSED
    assert "already done" in cancelled.output


def test_cancel_a_running_job(live_pool: Pool) -> None:
    job_id = run(live_pool, "submit", "pi", "--samples", "1e14").output.strip()
    result = run(live_pool, "cancel", job_id, "--json")
    assert result.exit_code == 0
    assert json.loads(result.output)["state"] == "cancelled"


def test_workers_lists_the_pool(live_pool: Pool) -> None:
    workers = wait_until(
        lambda: json.loads(run(live_pool, "workers", "--json").output), what="the worker enrols"
    )
    assert [w["cores"] for w in workers] == [2]
    assert workers[0]["online"]


def test_url_from_the_environment(live_pool: Pool) -> None:
    env = {
        f"HYDRACOMPUTE_{k.upper().replace('-', '_')}": v for k, v in credentials(live_pool).items()
    }
    result = run(None, "workers", "--json", env=env)
    assert result.exit_code == 0
    assert len(json.loads(result.output)) == 1


def test_unreachable_coordinator_exits_3() -> None:
    result = run(None, "jobs", "--url", "http://127.0.0.1:9")
    assert result.exit_code == EXIT_UNREACHABLE
    assert "cannot reach" in result.output


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["submit", "pi", "--samples", "inf"], "--samples"),
        (["submit", "pi", "--samples", "1e6", "--target-chunk-s", "nan"], "--target-chunk-s"),
        (["submit", "mandelbrot", "--center", "nan", "0", "1"], "--center"),
        (["submit", "mandelbrot", "--region", "-2", "1", "-inf", "1"], "--region"),
        (["submit", "kind", "pi", "-p", "samples=NaN"], "samples=NaN"),
        (["submit", "kind", "pi", "-p", "samples=-Infinity"], "samples=-Infinity"),
        (["submit", "kind", "pi", "-p", "samples=1e999"], "samples=1e999"),
        (["coordinator", "--heartbeat-s", "nan"], "--heartbeat-s"),
        (["demo", "--samples", "inf"], "--samples"),
    ],
)
def test_nan_and_infinity_are_usage_errors_naming_the_parameter(
    args: list[str], named: str
) -> None:
    if args[0] == "submit":  # refused before anything is contacted: NOWHERE does not answer
        args = [*args, *NOWHERE]
    result = run(None, *args)
    assert result.exit_code == 2, result.output
    assert named in result.output and "not a finite number" in result.output


def test_a_quoted_nan_is_sent_as_a_string_and_refused_by_the_coordinator(live_pool: Pool) -> None:
    result = run(live_pool, "submit", "kind", "pi", "-p", 'samples="NaN"')
    assert result.exit_code == EXIT_REFUSED
    assert "samples" in result.output


@pytest.mark.parametrize(
    "views",
    [
        ["--region", "0", "1", "0", "1", "--center", "0", "0", "1"],
        ["--center", "0", "0", "1", "--region", "0", "1", "0", "1"],
    ],
)
def test_region_and_center_exclude_each_other(views: list[str]) -> None:
    result = run(None, "submit", "mandelbrot", *views, *NOWHERE)  # refused before contacting
    assert result.exit_code == 2
    assert "--region and --center exclude each other" in result.output


def test_submit_names_the_job(live_pool: Pool) -> None:
    result = run(live_pool, "submit", "pi", "--samples", "1e6", "--name", "my π", "--json")
    assert result.exit_code == 0, result.output
    job = json.loads(result.output)
    assert job["name"] == "my π"
    listed = run(live_pool, "jobs").output
    assert any(job["job_id"] in line and "my π" in line for line in listed.splitlines())


def test_every_submit_option_reaches_the_job(live_pool: Pool) -> None:
    result = run(
        live_pool,
        "submit",
        "pi",
        "--samples",
        "1e6",
        "--name",
        "checked",
        "--replicas",
        "3",
        "--quorum",
        "2",
        "--no-adaptive",
        "--priority",
        "7",
        "--require-label",
        "trusted",
        "--require-label",
        "fast",
        "--deadline",
        "90m",
        "--carbon",
        "prefer-clean",
        "--target-chunk-s",
        "0.5",
        "--json",
    )
    assert result.exit_code == 0, result.output
    job = json.loads(result.output)
    assert (job["name"], job["replication"], job["quorum"], job["adaptive"]) == (
        "checked",
        3,
        2,
        False,
    )
    assert job["priority"] == 7 and sorted(job["required_labels"]) == ["fast", "trusted"]
    assert job["carbon"] == "prefer-clean"
    # A time (epoch seconds): ninety minutes from the submission.
    assert job["deadline_s"] - time.time() == pytest.approx(90 * 60, abs=120)
    assert run(live_pool, "cancel", job["job_id"]).exit_code == 0
    # Options left out are not sent: the pool's defaults apply.
    plain = json.loads(run(live_pool, "submit", "pi", "--samples", "1e6", "--json").output)
    assert (plain["replication"], plain["priority"], plain["carbon"]) == (1, 0, "blind")
    assert plain["required_labels"] == [] and plain["deadline_s"] is None


def test_workers_shows_whole_ids_speeds_in_the_kinds_units_and_the_real_state(
    live_pool: Pool,
) -> None:
    def computed_pi() -> Any:
        found = json.loads(run(live_pool, "workers", "--json").output)
        return found if found and "pi" in found[0]["speeds"] else None

    run(live_pool, "submit", "pi", "--samples", "1e7", "--wait")
    (worker,) = wait_until(computed_pi, what="the worker learns its π speed")
    assert worker["state"] == "running" and not worker["left"]
    seen = datetime.fromisoformat(worker["last_seen"])
    assert seen.tzinfo is not None and seen.timestamp() == int(worker["last_seen_s"])
    assert 0 <= worker["last_seen_ago_s"] < 60
    # Not on a terminal: as wide as the content, never squeezed into 80 columns.
    row = next(line for line in run(live_pool, "workers").output.splitlines() if "running" in line)
    assert worker["worker_id"] in row and worker["name"] in row
    assert re.search(r"pi [0-9.]+[kMGT]? samples/s", row), row
    assert re.search(r"\d+ s ago", row), row


def test_key_list_has_no_uses_column_and_token_list_has(live_pool: Pool) -> None:
    keys = run(live_pool, "key", "list").output.splitlines()
    tokens = run(live_pool, "token", "list").output.splitlines()
    key_header = next(line for line in keys if " id " in line)
    token_header = next(line for line in tokens if " id " in line)
    assert "uses" not in key_header and "role" in key_header
    assert "uses" in token_header and "role" not in token_header


def test_the_join_command_is_printed_on_one_line(live_pool: Pool) -> None:
    log = (live_pool.data_dir / "coordinator.log").read_text()
    join = re.compile(
        r"^Join workers with:  HYDRACOMPUTE_JOIN_TOKEN=\S+ hydracompute worker https://\S+ "
        r"--ca-fingerprint sha256:[0-9a-f]{64}$",
        re.MULTILINE,
    )
    assert join.search(log), log


def test_login_reads_a_piped_key_plainly(live_pool: Pool, tmp_path: Path) -> None:
    fingerprint = credentials(live_pool)["ca-fingerprint"]
    environment = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path))
    logged_in = subprocess.run(
        [sys.executable, "-m", "hydracompute", "login", live_pool.url],
        input=live_pool.coordinator.admin_key + "\n",
        env=environment | {"HYDRACOMPUTE_CA_FINGERPRINT": fingerprint},
        capture_output=True,
        text=True,
        timeout=120,
        start_new_session=True,  # no controlling terminal, as in a pipeline or a cron job
    )
    assert logged_in.returncode == 0, logged_in.stderr
    assert "Warning" not in logged_in.stderr and "signed in" in logged_in.stderr
    profile = json.loads((tmp_path / "hydracompute" / "profile.json").read_text())
    assert profile["api_key"] == live_pool.coordinator.admin_key


def test_errors_say_what_to_do(live_pool: Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    key = live_pool.coordinator.admin_key
    unpinned = run(None, "login", live_pool.url, "--api-key", key)
    assert unpinned.exit_code == EXIT_UNREACHABLE
    assert "CERTIFICATE_VERIFY_FAILED" in unpinned.output
    assert "pass it with --ca-fingerprint" in unpinned.output
    plain = live_pool.url.replace("https://", "http://")
    refused = run(None, "jobs", "--url", plain, "--api-key", key)
    assert refused.exit_code == EXIT_UNREACHABLE
    assert f"probably serves TLS; try {live_pool.url}" in refused.output
    monkeypatch.setattr(connection, "DEFAULT_URL", "http://127.0.0.1:9")
    nowhere = run(None, "jobs")
    assert nowhere.exit_code == EXIT_UNREACHABLE
    assert "no coordinator is configured" in nowhere.output
    assert "hydracompute login URL" in nowhere.output
