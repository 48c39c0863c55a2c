"""The command line against a real coordinator and worker on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from PIL import Image

from hydracompute.cli import EXIT_REFUSED, EXIT_UNREACHABLE, main
from hydracompute.kinds.pi_kernel import count_hits
from tests.e2e_support import Pool, pool, wait_until

pytestmark = pytest.mark.e2e


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
