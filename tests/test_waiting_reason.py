"""A job that no online worker can run says why it waits: in its view, in the answer to
its submission, in lists, and on the event stream that dashboards read."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

from hydracompute.coordinator.capacity import PoolCapacity
from hydracompute.core.models import Worker
from tests.test_api import TTL, Pool, Volunteer, finish_job, pool  # noqa: F401 - a fixture


def a_worker(kinds: list[str], last_seen_s: float = 100.0, **fields: object) -> Worker:
    return Worker("w-1", "w", 1, kinds, "", 0.0, last_seen_s, **fields)  # type: ignore[arg-type]


def test_the_reason_names_what_is_missing() -> None:
    now = 100.0
    nobody = PoolCapacity.of([], now, TTL)
    assert nobody.waiting_reason("sum") == "no worker is online to run kind sum"
    others = PoolCapacity.of([a_worker(["pi"])], now, TTL)
    assert others.waiting_reason("sum") == "no online worker has kind sum"
    assert others.waiting_reason("pi") is None
    paused = PoolCapacity.of([a_worker(["sum"], state="paused")], now, TTL)
    assert (
        paused.waiting_reason("sum") == "every online worker with kind sum is paused by its owner"
    )
    gone = [a_worker(["sum"], last_seen_s=now - TTL - 1), a_worker(["sum"], left=True)]
    assert PoolCapacity.of(gone, now, TTL).waiting_reason("sum") == (
        "no worker is online to run kind sum"
    )


def test_a_job_says_why_it_waits_until_a_worker_that_can_run_it_joins(pool: Pool) -> None:  # noqa: F811
    submitted = pool.submit(n=50)
    assert submitted["waiting_reason"] == "no worker is online to run kind sum"
    pool.enrol(name="pi only", kinds=("pi",))
    assert pool.job(submitted["job_id"])["waiting_reason"] == "no online worker has kind sum"
    listed = pool.client.get("/api/v1/jobs").json()["jobs"]
    assert [j["waiting_reason"] for j in listed] == ["no online worker has kind sum"]
    worker = pool.enrol(name="sums", kinds=("sum",))
    assert pool.job(submitted["job_id"])["waiting_reason"] is None
    finish_job(pool, worker, submitted["job_id"])
    assert pool.job(submitted["job_id"])["waiting_reason"] is None


def test_a_worker_paused_by_its_owner_is_named_as_the_reason(pool: Pool) -> None:  # noqa: F811
    worker = pool.enrol(kinds=("sum",))
    body = {"state": "paused", "state_reason": "on battery"}
    assert pool.client.post(worker.exchange_url, json=body, headers=worker.auth).status_code == 200
    submitted = pool.submit(n=50)
    assert submitted["waiting_reason"] == "every online worker with kind sum is paused by its owner"
    leave(pool, worker)
    assert pool.job(submitted["job_id"])["waiting_reason"] == "no worker is online to run kind sum"


def test_the_event_stream_carries_the_reason_and_its_end(pool: Pool) -> None:  # noqa: F811
    submitted = pool.submit(n=50)
    with pool.client.stream("GET", "/api/v1/events", params={"job": submitted["job_id"]}) as s:
        lines = s.iter_lines()
        seen = read_job_events(lines, submitted["job_id"], 1)
        assert seen[0]["waiting_reason"] == "no worker is online to run kind sum"
        pool.enrol(kinds=("sum",))  # no change to the job itself: the pool's capacity changed
        seen = read_job_events(lines, submitted["job_id"], 1)
        assert seen[0]["waiting_reason"] is None


def leave(pool: Pool, worker: Volunteer) -> None:  # noqa: F811
    url = f"/api/v1/workers/{worker.worker_id}/leave"
    assert pool.client.post(url, headers=worker.auth).status_code == 200


def read_job_events(lines: Iterator[str], job_id: str, count: int) -> list[dict[str, object]]:
    """The next ``count`` views of ``job_id`` sent as ``jobs`` events, within 20 s (the
    stream sends a ``pool`` event every 2 s, so the deadline is looked at)."""
    found: list[dict[str, object]] = []
    event = ""
    deadline = time.monotonic() + 20
    for line in lines:
        assert time.monotonic() < deadline, "no view of the job came"
        if line.startswith("event: "):
            event = line[len("event: ") :]
        elif line.startswith("data: ") and event == "jobs":
            found += [j for j in json.loads(line[len("data: ") :]) if j["job_id"] == job_id]
            if len(found) >= count:
                return found
    raise AssertionError("the stream ended")


def test_a_verified_job_with_too_few_workers_says_so(pool: Pool) -> None:  # noqa: F811
    pool.enrol(name="one", kinds=("sum",))
    replicated = pool.submit(n=50, replication=2)
    assert replicated["waiting_reason"] == (
        "its chunks are verified by 2 different workers and 1 online worker with kind sum "
        "can compute it"
    )
    adaptive = pool.submit(n=50, adaptive=True)
    assert adaptive["waiting_reason"] is not None  # an untrusted output waits for another's
    assert pool.submit(n=50)["waiting_reason"] is None  # one copy: one worker will do
    pool.enrol(name="two", kinds=("sum",))
    assert pool.job(replicated["job_id"])["waiting_reason"] is None
    assert pool.job(adaptive["job_id"])["waiting_reason"] is None


def test_barred_workers_do_not_count_for_verification() -> None:
    now = 100.0
    honest, barred = a_worker(["sum"]), a_worker(["sum"], barred="lied")
    capacity = PoolCapacity.of([honest, barred], now, TTL)
    assert capacity.waiting_reason("sum") is None
    assert capacity.waiting_reason("sum", workers_needed=2) is not None
    assert PoolCapacity.of([honest, a_worker(["sum"])], now, TTL).waiting_reason("sum", 2) is None


def test_a_job_older_workers_cannot_run_says_which_version_it_needs() -> None:
    now = 100.0
    old = PoolCapacity.of([a_worker(["mandelbrot"], version="0.1.0")], now, TTL)
    assert old.waiting_reason("mandelbrot") is None
    assert old.waiting_reason("mandelbrot", min_version="0.2.0") == (
        "no online worker with kind mandelbrot runs Hydra Compute 0.2.0 or later, "
        "which this job's parameters need"
    )
    new = PoolCapacity.of(
        [a_worker(["mandelbrot"], version="0.1.0"), a_worker(["mandelbrot"], version="0.2.0")],
        now,
        TTL,
    )
    assert new.waiting_reason("mandelbrot", min_version="0.2.0") is None
    # One of that version, but of another kind only: still waiting.
    mixed = PoolCapacity.of(
        [a_worker(["pi"], version="0.2.0"), a_worker(["mandelbrot"], version="0.1.0")], now, TTL
    )
    assert "runs Hydra Compute 0.2.0" in str(
        mixed.waiting_reason("mandelbrot", min_version="0.2.0")
    )


def test_the_labels_and_the_version_a_job_needs_are_looked_for_on_one_worker() -> None:
    # One worker carries the label but is too old, the other is recent but unlabelled:
    # neither can run the job.
    now = 100.0
    split = PoolCapacity.of(
        [
            a_worker(["mandelbrot"], version="0.1.0", labels=["gpu"]),
            a_worker(["mandelbrot"], version="0.2.0"),
        ],
        now,
        TTL,
    )
    assert "runs Hydra Compute 0.2.0" in str(
        split.waiting_reason("mandelbrot", required_labels=["gpu"], min_version="0.2.0")
    )
    both = PoolCapacity.of([a_worker(["mandelbrot"], version="0.2.0", labels=["gpu"])], now, TTL)
    assert both.waiting_reason("mandelbrot", required_labels=["gpu"], min_version="0.2.0") is None


def test_the_capacity_does_not_depend_on_the_order_of_the_workers() -> None:
    # Its equality says whether to send the running jobs to open dashboards again. (Sets
    # of kinds have no total order: sorting pairs that hold them kept the order met.)
    now = 100.0
    workers = [a_worker([f"k{n}"], version=v) for n in range(40) for v in ("0.1.0", "0.2.0")]
    assert PoolCapacity.of(workers, now, TTL) == PoolCapacity.of(workers[::-1], now, TTL)
