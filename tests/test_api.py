"""The coordinator's HTTP API, in process: Starlette's TestClient over a memory store.

Time on the coordinator is a :class:`FakeClock` the tests move by hand; the only real waiting
is the long-poll's own timeout, bounded by a 0.2 s heartbeat. Every refused request is
checked to be a problem document and to leave the pool exactly as it was.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import threading
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from PIL import Image
from starlette.types import Message

from hydracompute import __version__
from hydracompute.coordinator import app as app_module
from hydracompute.coordinator.app import create_app
from hydracompute.coordinator.auth import SecuritySettings
from hydracompute.coordinator.service import WAKE_BATCH, Coordinator
from hydracompute.core.carbon import IntensityView
from hydracompute.core.config import SchedulerConfig
from hydracompute.core.models import CredentialKind, Role
from hydracompute.kinds import KindRegistry
from hydracompute.kinds.mandelbrot import MandelbrotKind
from hydracompute.kinds.pi import PiKind
from hydracompute.store import Backend, MemoryBackend, Store
from tests.asgi_support import post_scope
from tests.sum_kind import SumKind, sum_registry

# Starlette warns at import that it would rather use the `httpx2` fork; the project depends on
# httpx, so silence that one import-time deprecation instead of failing collection.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient` is deprecated")
    from starlette.testclient import TestClient

JSON = dict[str, Any]

CONFIG = SchedulerConfig(target_chunk_s=1.0, heartbeat_s=5.0, max_failures=3)
TTL = CONFIG.lease_ttl_s
START_S = 1_700_000_000.0
PROBLEM_TYPE = "application/problem+json"
#: A well-formed lease id that no lease has.
NO_SUCH_LEASE = "ab" * 16


class FakeClock:
    """The coordinator's clock, moved only by the test."""

    def __init__(self, now: float = START_S) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


@dataclass(frozen=True)
class Volunteer:
    worker_id: str
    secret: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret}"}

    @property
    def exchange_url(self) -> str:
        return f"/api/v1/workers/{self.worker_id}/exchange"


def output_for(lease: JSON) -> JSON:
    chunk = lease["chunk"]
    return SumKind().compute(lease["params"], chunk["start"], chunk["stop"])


def result_for(lease: JSON, compute_s: float = 0.001) -> JSON:
    return {"lease_id": lease["lease_id"], "output": output_for(lease), "compute_s": compute_s}


def assert_problem(response: httpx.Response, status: int) -> JSON:
    """``response`` is an RFC 9457 problem document with ``status``; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_TYPE
    body: JSON = response.json()
    assert {"type", "title", "status", "detail"} <= body.keys()
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    assert "Traceback" not in response.text
    return body


@dataclass
class Pool:
    """A running coordinator app with helpers for the calls the tests repeat."""

    app: FastAPI
    client: TestClient
    clock: FakeClock
    join_token: str

    @property
    def coordinator(self) -> Coordinator:
        return self.app.state.coordinator  # type: ignore[no-any-return]

    def submit(self, n: int = 100, **extra: Any) -> JSON:
        response = self.client.post(
            "/api/v1/jobs", json={"kind": "sum", "params": {"n": n}, **extra}
        )
        assert response.status_code == 201, response.text
        return response.json()  # type: ignore[no-any-return]

    def job(self, job_id: str) -> JSON:
        response = self.client.get(f"/api/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def enrol(
        self,
        name: str = "laptop",
        kinds: tuple[str, ...] = ("sum",),
        cores: int = 4,
        **extra: Any,
    ) -> Volunteer:
        body = {
            "name": name,
            "cores": cores,
            "kinds": list(kinds),
            "join_token": self.join_token,
            **extra,
        }
        response = self.client.post("/api/v1/workers", json=body)
        assert response.status_code == 201, response.text
        enrolled = response.json()
        return Volunteer(enrolled["worker_id"], enrolled["secret"])

    def exchange(
        self,
        worker: Volunteer,
        results: list[JSON] | None = None,
        running: list[str] | None = None,
        want: int = 0,
        wait_s: float = 0.0,
    ) -> JSON:
        body = {"results": results or [], "running": running or [], "want": want, "wait_s": wait_s}
        response = self.client.post(worker.exchange_url, json=body, headers=worker.auth)
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def workers(self) -> dict[str, JSON]:
        response = self.client.get("/api/v1/workers")
        assert response.status_code == 200, response.text
        return {w["worker_id"]: w for w in response.json()["workers"]}

    def snapshot(self) -> tuple[object, object]:
        """Everything a client sees of the pool's jobs and workers."""
        jobs = self.client.get("/api/v1/jobs", params={"limit": 1000}).json()
        workers = self.client.get("/api/v1/workers").json()
        return jobs, workers

    def refused(self, status: int, method: str, url: str, **kwargs: Any) -> JSON:
        """Send a request that must be refused with ``status`` and change nothing."""
        # A moved clock makes a half-applied request visible (e.g. a worker's last_seen_s);
        # far less than a lease's lifetime, so the expiry loop has nothing to do meanwhile.
        self.clock.advance(0.001)
        before = self.snapshot()
        problem = assert_problem(self.client.request(method, url, **kwargs), status)
        assert self.snapshot() == before
        return problem

    def expire_leases(self) -> int:
        """Run an expiry pass on the coordinator's store thread, as its expiry loop does."""
        portal = self.client.portal
        assert portal is not None
        store = self.coordinator.store
        expired: int = portal.call(self.coordinator.call, store.expire_leases, self.clock())
        return expired


def registry_with_pi() -> KindRegistry:
    registry = sum_registry()
    registry.register(PiKind())
    return registry


#: Rate limits far above what a test sends: limits have tests of their own.
UNLIMITED = SecuritySettings(
    api_rate_per_s=1e6, api_burst=1e6, worker_rate_per_s=1e6, worker_burst=1e6
)


@contextmanager
def open_pool(
    config: SchedulerConfig = CONFIG,
    kinds: KindRegistry | None = None,
    backend: Backend | None = None,
    carbon: IntensityView | None = None,
) -> Iterator[Pool]:
    clock = FakeClock()
    store = Store(backend or MemoryBackend(), kinds or registry_with_pi(), config, carbon=carbon)
    _, admin_key = store.credentials.issue(CredentialKind.API_KEY, "admin", clock(), Role.ADMIN)
    _, join_token = store.credentials.issue(CredentialKind.JOIN_TOKEN, "test", clock())
    app = create_app(store, clock=clock, security=UNLIMITED)
    with TestClient(app) as client:
        client.headers["Authorization"] = f"Bearer {admin_key}"
        yield Pool(app, client, clock, join_token)


@pytest.fixture
def pool() -> Iterator[Pool]:
    with open_pool() as opened:
        yield opened


def finish_job(pool: Pool, worker: Volunteer, job_id: str, want: int = 1) -> None:
    """Compute every chunk of a job through ``worker`` (leases of other jobs stay held)."""
    leases = pool.exchange(worker, want=want)["leases"]
    for _ in range(100):
        if pool.job(job_id)["state"] != "running":
            break
        results = [result_for(x) for x in leases if x["job_id"] == job_id]
        assert results, "the job stalled"
        pool.clock.advance(0.01)
        leases = pool.exchange(worker, results, want=want)["leases"]
    assert pool.job(job_id)["state"] == "done"


# --- the job lifecycle ----------------------------------------------------------------------


def test_submit_answers_201_with_location_of_the_job(pool: Pool) -> None:
    response = pool.client.post(
        "/api/v1/jobs", json={"kind": "sum", "params": {"n": 100}, "name": "hundred"}
    )
    assert response.status_code == 201
    job = response.json()
    assert response.headers["location"] == f"/api/v1/jobs/{job['job_id']}"
    assert job["state"] == "running"
    assert (job["kind"], job["name"], job["params"]) == ("sum", "hundred", {"n": 100})
    assert (job["units_done"], job["total_units"], job["progress"]) == (0, 100, 0.0)
    assert job["created_s"] == START_S
    fetched = pool.client.get(response.headers["location"]).json()
    assert fetched["job_id"] == job["job_id"]
    assert fetched["state"] == "running"


def test_list_is_newest_first_filters_by_state_and_honours_limit(pool: Pool) -> None:
    ids = []
    for n in (3, 4, 5):
        ids.append(pool.submit(n)["job_id"])
        pool.clock.advance(1.0)
    newest_first = ids[::-1]
    listed = pool.client.get("/api/v1/jobs").json()["jobs"]
    assert [j["job_id"] for j in listed] == newest_first
    two = pool.client.get("/api/v1/jobs", params={"limit": 2}).json()["jobs"]
    assert [j["job_id"] for j in two] == newest_first[:2]
    everything = pool.client.get("/api/v1/jobs", params={"limit": 1000}).json()["jobs"]
    assert len(everything) == 3

    finish_job(pool, pool.enrol(), ids[0])  # the oldest job is the first one leased
    done = pool.client.get("/api/v1/jobs", params={"state": "done"}).json()["jobs"]
    assert [j["job_id"] for j in done] == [ids[0]]
    running = pool.client.get("/api/v1/jobs", params={"state": "running"}).json()["jobs"]
    assert [j["job_id"] for j in running] == newest_first[:2]
    cancelled = pool.client.get("/api/v1/jobs", params={"state": "cancelled"}).json()["jobs"]
    assert cancelled == []


@pytest.mark.parametrize(
    "query",
    [{"limit": 0}, {"limit": 1001}, {"limit": -1}, {"limit": "many"}, {"state": "sleeping"}],
)
def test_list_refuses_out_of_range_queries(pool: Pool, query: dict[str, object]) -> None:
    pool.submit()
    problem = pool.refused(422, "GET", "/api/v1/jobs", params=query)
    assert next(iter(query)) in problem["detail"]


def test_enrol_answers_201_with_the_secret_and_timings(pool: Pool) -> None:
    response = pool.client.post(
        "/api/v1/workers",
        json={"name": "pi4", "cores": 4, "kinds": ["sum", "pi"], "join_token": pool.join_token},
    )
    assert response.status_code == 201
    enrolled = response.json()
    assert enrolled["worker_id"] and len(enrolled["secret"]) >= 32
    assert enrolled["heartbeat_s"] == CONFIG.heartbeat_s
    assert enrolled["lease_ttl_s"] == TTL
    assert enrolled["max_wait_s"] == CONFIG.max_wait_s
    (listed,) = pool.workers().values()
    assert listed["worker_id"] == enrolled["worker_id"]
    assert (listed["name"], listed["cores"], listed["kinds"]) == ("pi4", 4, ["pi", "sum"])
    assert listed["online"] is True
    assert "secret" not in listed
    assert enrolled["secret"] not in pool.client.get("/api/v1/workers").text


def test_a_job_runs_over_http_to_its_exact_answer(pool: Pool) -> None:
    n = 5000
    job_id = pool.submit(n)["job_id"]
    worker = pool.enrol()

    first = pool.exchange(worker, want=1)
    (lease,) = first["leases"]
    assert lease["job_id"] == job_id
    assert (lease["kind"], lease["params"]) == ("sum", {"n": n})
    assert lease["chunk"] == {"index": 0, "start": 0, "stop": SumKind.probe_units}
    assert lease["deadline_in_s"] == TTL
    assert first["accepted"] == [] and first["abandon"] == []
    assert first["next_exchange_s"] == CONFIG.heartbeat_s

    problem = pool.refused(409, "GET", f"/api/v1/jobs/{job_id}/result")
    assert problem["state"] == "running"

    pool.clock.advance(0.5)
    answer = pool.exchange(worker, [result_for(lease)], want=2)
    assert answer["accepted"] == [lease["lease_id"]]
    partial = pool.job(job_id)
    assert partial["units_done"] == SumKind.probe_units
    assert partial["progress"] == SumKind.probe_units / n
    assert len(answer["leases"]) == 2

    chunks = [lease["chunk"]]
    leases = answer["leases"]
    while leases:
        assert len(chunks) < 100, "the job never ends"
        chunks += [x["chunk"] for x in leases]
        pool.clock.advance(0.25)
        answer = pool.exchange(worker, [result_for(x) for x in leases], want=4)
        assert sorted(answer["accepted"]) == sorted(x["lease_id"] for x in leases)
        leases = answer["leases"]
    # The chunks tile the job exactly, in order, each within the kind's cap.
    assert [c["index"] for c in chunks] == list(range(len(chunks)))
    assert chunks[0]["start"] == 0 and chunks[-1]["stop"] == n
    assert all(a["stop"] == b["start"] for a, b in itertools.pairwise(chunks))
    assert max(c["stop"] - c["start"] for c in chunks) <= SumKind.max_chunk_units
    assert len(chunks) > n // SumKind.max_chunk_units

    job = pool.job(job_id)
    assert job["state"] == "done"
    assert (job["units_done"], job["progress"]) == (n, 1.0)
    assert job["answer"] == {"total": sum(range(n))}
    assert job["finished_s"] == pool.clock.now
    assert job["elapsed_s"] == pool.clock.now - START_S
    result = pool.client.get(f"/api/v1/jobs/{job_id}/result")
    assert result.status_code == 200
    assert result.json() == {
        "job_id": job_id,
        "kind": "sum",
        "params": {"n": n},
        "answer": {"total": 12_497_500},
    }
    me = pool.workers()[worker.worker_id]
    assert (me["chunks_done"], me["leases"]) == (len(chunks), 0)
    assert me["speeds"]["sum"] > 0
    pool.refused(409, "POST", f"/api/v1/jobs/{job_id}/cancel")


def test_workers_view_counts_chunks_done_and_leases_in_hand(pool: Pool) -> None:
    pool.submit(1000)
    busy, idle = pool.enrol("busy"), pool.enrol("idle")
    leases = pool.exchange(busy, want=3)["leases"]
    pool.exchange(busy, [result_for(leases[0])])
    workers = pool.workers()
    assert (workers[busy.worker_id]["chunks_done"], workers[busy.worker_id]["leases"]) == (1, 2)
    assert (workers[idle.worker_id]["chunks_done"], workers[idle.worker_id]["leases"]) == (0, 0)
    assert workers[busy.worker_id]["online"] and workers[idle.worker_id]["online"]
    pool.clock.advance(TTL + 1)
    assert not any(w["online"] for w in pool.workers().values())


def test_workers_view_gives_each_workers_real_state_and_when_it_was_seen(pool: Pool) -> None:
    names = ("running", "paused", "left", "revoked", "silent")
    volunteers = {name: pool.enrol(name) for name in names}
    pool.clock.advance(TTL + 1)  # "silent" is not heard from again
    for name in ("running", "left", "revoked"):
        pool.exchange(volunteers[name])
    paused = {"want": 0, "wait_s": 0, "state": "paused", "state_reason": "on battery"}
    url, auth = volunteers["paused"].exchange_url, volunteers["paused"].auth
    assert pool.client.post(url, json=paused, headers=auth).status_code == 200
    leave = f"/api/v1/workers/{volunteers['left'].worker_id}/leave"
    assert pool.client.post(leave, headers=volunteers["left"].auth).status_code == 200
    revoke = f"/api/v1/workers/{volunteers['revoked'].worker_id}/revoke"
    assert pool.client.post(revoke).status_code == 204
    pool.clock.advance(2.5)
    workers = {w["name"]: w for w in pool.workers().values()}
    # What a worker last reported ("running") is stale once it has left or been shut out.
    assert {name: workers[name]["state"] for name in names} == {
        "running": "running",
        "paused": "paused",
        "left": "left",
        "revoked": "revoked",
        "silent": "offline",
    }
    assert workers["paused"]["state_reason"] == "on battery"
    assert workers["left"]["left"] and not workers["running"]["left"]
    assert workers["running"]["last_seen_s"] == START_S + TTL + 1
    assert workers["running"]["last_seen_ago_s"] == 2.5
    assert workers["silent"]["last_seen_ago_s"] == TTL + 1 + 2.5


def test_cancel_answers_200_then_409_and_holders_abandon(pool: Pool) -> None:
    job_id = pool.submit(100)["job_id"]
    worker = pool.enrol()
    (lease,) = pool.exchange(worker, want=1)["leases"]
    pool.clock.advance(2.0)

    response = pool.client.post(f"/api/v1/jobs/{job_id}/cancel")
    assert response.status_code == 200
    assert response.json()["state"] == "cancelled"
    assert response.json()["finished_s"] == START_S + 2.0
    assert pool.job(job_id)["state"] == "cancelled"

    second = pool.refused(409, "POST", f"/api/v1/jobs/{job_id}/cancel")
    assert job_id in second["detail"]
    result = pool.refused(409, "GET", f"/api/v1/jobs/{job_id}/result")
    assert result["state"] == "cancelled"
    answer = pool.exchange(worker, running=[lease["lease_id"]], want=1)
    assert answer["abandon"] == [lease["lease_id"]]
    assert answer["leases"] == []


def test_a_chunk_failing_on_every_try_fails_the_job(pool: Pool) -> None:
    job_id = pool.submit(2)["job_id"]  # one probe-sized chunk
    worker = pool.enrol()
    for attempt in range(CONFIG.max_failures):
        (lease,) = pool.exchange(worker, want=1)["leases"]
        assert lease["chunk"]["index"] == 0  # a failed chunk is offered again, after a wait
        error = {"lease_id": lease["lease_id"], "error": f"kernel crashed ({attempt})"}
        assert pool.exchange(worker, [error])["accepted"] == [lease["lease_id"]]
        pool.clock.advance(TTL)
    job = pool.job(job_id)
    assert job["state"] == "failed"
    assert "kernel crashed (2)" in job["error"]
    problem = pool.refused(409, "GET", f"/api/v1/jobs/{job_id}/result")
    assert problem["state"] == "failed"
    assert "kernel crashed (2)" in problem["detail"]


def test_a_pi_job_runs_with_the_real_kind(pool: Pool) -> None:
    response = pool.client.post(
        "/api/v1/jobs", json={"kind": "pi", "params": {"samples": 1000, "seed": 7}}
    )
    assert response.status_code == 201
    job_id = response.json()["job_id"]
    worker = pool.enrol(kinds=("pi",))
    (lease,) = pool.exchange(worker, want=1)["leases"]
    chunk = lease["chunk"]
    assert (chunk["start"], chunk["stop"]) == (0, 1)
    output = PiKind().compute(lease["params"], chunk["start"], chunk["stop"])
    implausible = {"lease_id": lease["lease_id"], "output": {"hits": 0, "samples": 1000}}
    body = {"results": [implausible]}
    problem = pool.refused(422, "POST", worker.exchange_url, json=body, headers=worker.auth)
    assert problem["lease_id"] == lease["lease_id"]
    pool.exchange(worker, [{"lease_id": lease["lease_id"], "output": output}])
    answer = pool.client.get(f"/api/v1/jobs/{job_id}/result").json()["answer"]
    assert answer["samples"] == 1000
    assert answer["hits"] == output["hits"]
    assert answer["estimate"] == 4 * output["hits"] / 1000
    assert abs(answer["estimate"] - 3.14159) < 8 * answer["stderr"]
    pool.refused(404, "GET", f"/api/v1/jobs/{job_id}/chunks/0/preview")  # π draws nothing


# --- the pool's own endpoints ---------------------------------------------------------------


def test_health_reports_kinds_jobs_and_online_workers(pool: Pool) -> None:
    pool.submit()
    pool.enrol()
    response = pool.client.get("/api/v1/health")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "version": __version__,
        "kinds": ["pi", "sum"],
        "jobs_running": 1,
        "workers_online": 1,
    }
    pool.clock.advance(TTL + 1)
    assert pool.client.get("/api/v1/health").json()["workers_online"] == 0


def test_kinds_lists_installed_kinds(pool: Pool) -> None:
    response = pool.client.get("/api/v1/kinds")
    assert response.status_code == 200
    kinds = {k["name"]: k for k in response.json()["kinds"]}
    assert list(kinds) == ["pi", "sum"]
    assert (kinds["pi"]["unit_name"], kinds["pi"]["work_name"]) == ("block", "samples")
    samples = kinds["pi"]["fields"][0]
    assert (samples["name"], samples["type"], samples["required"]) == ("samples", "integer", True)
    assert (samples["minimum"], samples["maximum"]) == (1, 10**15)
    assert kinds["sum"]["fields"] == []  # a kind without fields: the form takes JSON


def test_docs_schema_and_index_are_served(pool: Pool) -> None:
    docs = pool.client.get("/docs")
    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
    assert "swagger" in docs.text.lower()
    schema = pool.client.get("/openapi.json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    for path in (
        "/api/v1/jobs",
        "/api/v1/jobs/{job_id}",
        "/api/v1/jobs/{job_id}/result",
        "/api/v1/workers",
        "/api/v1/workers/{worker_id}/exchange",
        "/api/v1/workers/{worker_id}/leave",
        "/api/v1/health",
    ):
        assert path in paths
    index = pool.client.get("/")
    assert index.status_code == 200
    assert index.headers["content-type"].startswith("text/html")
    assert "Hydra Compute" in index.text and 'href="/docs"' in index.text
    for asset in ("/static/app.js", "/static/style.css"):
        assert pool.client.get(asset).status_code == 200


# --- refused requests: problem documents that change nothing --------------------------------


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"n": 0}, "n"),
        ({"n": 10**10}, "n"),
        ({}, "n"),
        ({"n": 5, "colour": "red"}, "colour"),
        ({"n": "5"}, "n"),
        ({"n": 2.5}, "n"),
        ({"n": True}, "n"),
        ({"n": None}, "n"),
    ],
)
def test_invalid_params_name_the_field(pool: Pool, params: JSON, field: str) -> None:
    pool.submit()
    problem = pool.refused(422, "POST", "/api/v1/jobs", json={"kind": "sum", "params": params})
    assert problem["title"] == "Invalid job parameters"
    assert isinstance(problem["errors"], dict)
    assert list(problem["errors"]) == [field]
    assert field in problem["detail"]


def test_an_unknown_kind_is_refused(pool: Pool) -> None:
    problem = pool.refused(422, "POST", "/api/v1/jobs", json={"kind": "tsp", "params": {"n": 5}})
    assert problem["title"] == "Unknown job kind"
    assert "tsp" in problem["detail"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "sum", "params": {"n": 5}, "urgency": 1}, "urgency"),
        ({"kind": "sum", "params": {"n": 5}, "priority": 101}, "priority"),
        ({"kind": "sum", "params": {"n": 5}, "priority": 1.0}, "priority"),
        ({"kind": 5, "params": {"n": 5}}, "kind"),
        ({"kind": "Sum Kind!", "params": {"n": 5}}, "kind"),
        ({"params": {"n": 5}}, "kind"),
        ({"kind": "sum", "params": [5]}, "params"),
        ({"kind": "sum", "params": "n=5"}, "params"),
        ({"kind": "sum", "params": {"n": 5}, "name": 5}, "name"),
        ({"kind": "sum", "params": {"n": 5}, "name": "x" * 201}, "name"),
        ({"kind": "sum", "params": {"n": 5}, "target_chunk_s": "fast"}, "target_chunk_s"),
        ({"kind": "sum", "params": {"n": 5}, "target_chunk_s": 0}, "target_chunk_s"),
        ([{"kind": "sum"}], "body"),
    ],
)
def test_malformed_submissions_are_refused(pool: Pool, body: object, field: str) -> None:
    problem = pool.refused(422, "POST", "/api/v1/jobs", json=body)
    assert problem["title"] == "Invalid request"
    assert field in problem["detail"]
    assert isinstance(problem["errors"], dict)
    assert any(field in where for where in problem["errors"])


@pytest.mark.parametrize(
    "raw",
    [
        b'{"kind": "sum", "params": {"n": 5}',
        b"{'kind': 'sum'}",
        b"",
        b"null",
        b'{"kind": "sum", "name": "\xff"}',
    ],
)
def test_a_body_that_is_not_a_json_object_is_refused(pool: Pool, raw: bytes) -> None:
    headers = {"content-type": "application/json"}
    pool.refused(422, "POST", "/api/v1/jobs", content=raw, headers=headers)


@pytest.mark.parametrize(
    "body",
    [
        {"name": "w", "cores": 1, "kinds": ["sum"], "gpu": True},
        {"name": "w", "cores": "four", "kinds": ["sum"]},
        {"name": "w", "cores": 0, "kinds": ["sum"]},
        {"name": "w", "cores": 1, "kinds": "sum"},
        {"name": "w", "cores": 1, "kinds": []},
        {"name": "", "cores": 1, "kinds": ["sum"]},
        {"cores": 1, "kinds": ["sum"]},
    ],
)
def test_malformed_enrolments_are_refused(pool: Pool, body: JSON) -> None:
    pool.enrol()
    pool.refused(422, "POST", "/api/v1/workers", json={**body, "join_token": pool.join_token})


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/jobs/{job}"),
        ("GET", "/api/v1/jobs/{job}/result"),
        ("POST", "/api/v1/jobs/{job}/cancel"),
        ("GET", "/api/v1/jobs/{job}/artefacts/image.png"),
    ],
)
def test_an_unknown_job_is_404(pool: Pool, method: str, path: str) -> None:
    pool.submit()
    problem = pool.refused(404, method, path.format(job="0123456789ab"))
    assert "0123456789ab" in problem["detail"]


@pytest.mark.parametrize("path", ["/api/v1/nothing", "/nothing", "/api/v2/jobs"])
def test_an_unknown_route_is_a_404_problem(pool: Pool, path: str) -> None:
    pool.refused(404, "GET", path)


def test_a_wrong_method_is_a_405_problem(pool: Pool) -> None:
    pool.refused(405, "DELETE", "/api/v1/jobs")


def test_a_405_names_the_allowed_methods(pool: Pool) -> None:
    response = pool.client.delete("/api/v1/jobs")
    assert_problem(response, 405)
    # Starlette names the methods of the first route matching the path: here POST.
    allowed = set(response.headers["allow"].replace(" ", "").split(","))
    assert allowed and allowed <= {"GET", "POST"}


@pytest.mark.parametrize(
    "header",
    [None, "Bearer wrong-secret", "Bearer ", "Basic {secret}", "{secret}", "Bearer {other}"],
)
def test_an_exchange_without_the_workers_secret_is_401(pool: Pool, header: str | None) -> None:
    pool.submit()
    worker, other = pool.enrol("me"), pool.enrol("other")
    headers = {}
    if header is not None:
        headers["Authorization"] = header.format(secret=worker.secret, other=other.secret)
    problem = pool.refused(401, "POST", worker.exchange_url, json={"want": 1}, headers=headers)
    assert worker.secret not in problem["detail"]


def test_an_exchange_for_an_unknown_worker_is_401(pool: Pool) -> None:
    worker = pool.enrol()
    url = "/api/v1/workers/w-000000000000/exchange"
    pool.refused(401, "POST", url, json={"want": 1}, headers=worker.auth)


def test_a_401_carries_a_bearer_challenge(pool: Pool) -> None:
    worker = pool.enrol()
    response = pool.client.post(worker.exchange_url, json={"want": 1})
    assert_problem(response, 401)
    assert response.headers["www-authenticate"].lower().startswith("bearer")


def test_a_result_for_a_lease_that_does_not_exist_is_404(pool: Pool) -> None:
    pool.submit()
    worker = pool.enrol()
    pool.exchange(worker, want=1)
    body = {"results": [{"lease_id": NO_SUCH_LEASE, "output": {"total": 1}}]}
    problem = pool.refused(404, "POST", worker.exchange_url, json=body, headers=worker.auth)
    assert problem["lease_id"] == NO_SUCH_LEASE


def test_a_result_for_another_workers_lease_is_403(pool: Pool) -> None:
    pool.submit()
    holder, thief = pool.enrol("holder"), pool.enrol("thief")
    (lease,) = pool.exchange(holder, want=1)["leases"]
    body = {"results": [result_for(lease)]}
    problem = pool.refused(403, "POST", thief.exchange_url, json=body, headers=thief.auth)
    assert problem["lease_id"] == lease["lease_id"]


def test_an_output_failing_the_kinds_check_is_422(pool: Pool) -> None:
    pool.submit()
    worker = pool.enrol()
    (lease,) = pool.exchange(worker, want=1)["leases"]
    wrong = {"lease_id": lease["lease_id"], "output": {"total": output_for(lease)["total"] + 1}}
    body = {"results": [wrong]}
    problem = pool.refused(422, "POST", worker.exchange_url, json=body, headers=worker.auth)
    assert problem["title"] == "Invalid chunk result"
    assert problem["lease_id"] == lease["lease_id"]


def test_a_resent_result_is_acknowledged_and_a_different_one_refused(pool: Pool) -> None:
    job_id = pool.submit(100)["job_id"]
    worker = pool.enrol()
    (lease,) = pool.exchange(worker, want=1)["leases"]
    pool.exchange(worker, [result_for(lease)])
    done = pool.job(job_id)["units_done"]
    assert done == SumKind.probe_units

    pool.clock.advance(1.0)
    again = pool.exchange(worker, [result_for(lease)])
    assert again["accepted"] == [lease["lease_id"]]
    assert pool.job(job_id)["units_done"] == done
    assert pool.workers()[worker.worker_id]["chunks_done"] == 1

    different = {"lease_id": lease["lease_id"], "output": {"total": 999}}
    error = {"lease_id": lease["lease_id"], "error": "it crashed after all"}
    for result in (different, error):
        body = {"results": [result]}
        problem = pool.refused(409, "POST", worker.exchange_url, json=body, headers=worker.auth)
        assert problem["lease_id"] == lease["lease_id"]
    assert pool.job(job_id)["units_done"] == done


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            {"results": [{"lease_id": NO_SUCH_LEASE, "output": {"total": 1}, "error": "x"}]},
            "results",
        ),
        ({"results": [{"lease_id": NO_SUCH_LEASE}]}, "results"),
        ({"results": [{"lease_id": NO_SUCH_LEASE, "output": {}, "extra": 1}]}, "extra"),
        ({"results": [{"lease_id": "NOT-HEX", "output": {"total": 1}}]}, "lease_id"),
        ({"results": [{"lease_id": NO_SUCH_LEASE, "output": [1]}]}, "output"),
        ({"results": [{"lease_id": NO_SUCH_LEASE, "output": {}, "compute_s": -1}]}, "compute_s"),
        ({"results": {"lease_id": NO_SUCH_LEASE}}, "results"),
        ({"want": 257}, "want"),
        ({"want": -1}, "want"),
        ({"want": "lots"}, "want"),
        ({"want": 1, "wait_s": 601}, "wait_s"),
        ({"want": 1, "wait_s": -1}, "wait_s"),
        ({"running": "abc"}, "running"),
        ({"wnat": 1}, "wnat"),
    ],
)
def test_malformed_exchanges_are_refused(pool: Pool, body: JSON, field: str) -> None:
    pool.submit()
    worker = pool.enrol()
    pool.exchange(worker, want=1)
    problem = pool.refused(422, "POST", worker.exchange_url, json=body, headers=worker.auth)
    assert field in problem["detail"] or field in str(problem["errors"])


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("exchange", {"want": True}),
        ("exchange", {"want": "1"}),
        ("workers", {"name": "w", "cores": True, "kinds": ["sum"]}),
        ("jobs", {"kind": "sum", "params": {"n": 10}, "target_chunk_s": "2"}),
    ],
)
def test_booleans_and_strings_are_not_numbers(pool: Pool, path: str, body: JSON) -> None:
    worker = pool.enrol()
    url = {"exchange": worker.exchange_url}.get(path, f"/api/v1/{path}")
    if path == "workers":
        body = {**body, "join_token": pool.join_token}
    headers = worker.auth if path == "exchange" else {}  # else the admin key
    pool.refused(422, "POST", url, json=body, headers=headers)


@pytest.mark.parametrize(
    ("content", "headers", "where"),
    [
        (b'{"want": 1', {}, "body"),  # not JSON
        (b"\xff\xfe", {}, "body"),  # not UTF-8
        (b"", {}, "body"),
        (b'{"want": 1}', {"Content-Type": "text/plain"}, "body"),
        (b'{"want": 1}', {"Authorization": "Bearer " + "x" * 300}, "header.authorization"),
    ],
)
def test_unreadable_exchanges_are_refused(
    pool: Pool, content: bytes, headers: dict[str, str], where: str
) -> None:
    pool.submit()
    worker = pool.enrol()
    sent = {"Content-Type": "application/json", **worker.auth, **headers}
    problem = pool.refused(422, "POST", worker.exchange_url, content=content, headers=sent)
    assert problem["title"] == "Invalid request"
    assert any(key.startswith(where) for key in problem["errors"]), problem


@pytest.mark.parametrize(
    ("refused", "status"),
    [("unknown lease", 404), ("other's lease", 403), ("wrong output", 422), ("changed", 409)],
)
def test_an_exchange_with_one_refused_result_records_none(
    pool: Pool, refused: str, status: int
) -> None:
    job_id = pool.submit(1000)["job_id"]
    worker, other = pool.enrol("me"), pool.enrol("other")
    good, pending, reported = pool.exchange(worker, want=3)["leases"]
    (others,) = pool.exchange(other, want=1)["leases"]
    pool.exchange(worker, [result_for(reported)])
    units_before = pool.job(job_id)["units_done"]

    bad = {
        "unknown lease": {"lease_id": NO_SUCH_LEASE, "output": {"total": 0}},
        "other's lease": result_for(others),
        "wrong output": {"lease_id": pending["lease_id"], "output": {"total": -1}},
        "changed": {"lease_id": reported["lease_id"], "output": {"total": -1}},
    }[refused]
    body = {"results": [result_for(good), bad], "want": 1}
    problem = pool.refused(status, "POST", worker.exchange_url, json=body, headers=worker.auth)
    assert problem["lease_id"] == bad["lease_id"]
    assert pool.job(job_id)["units_done"] == units_before
    assert pool.workers()[worker.worker_id]["leases"] == 2  # good and pending still held

    retry = pool.exchange(worker, [result_for(good)])
    assert retry["accepted"] == [good["lease_id"]]
    units = good["chunk"]["stop"] - good["chunk"]["start"]
    assert pool.job(job_id)["units_done"] == units_before + units


# --- request size ---------------------------------------------------------------------------

LIMIT = 2048
SMALL_JOB = b'{"kind": "sum", "params": {"n": 5}}'


def padded_job(size: int) -> bytes:
    """A valid submission of exactly ``size`` bytes (JSON allows trailing whitespace)."""
    return SMALL_JOB + b" " * (size - len(SMALL_JOB))


@pytest.fixture
def small_limit_pool(monkeypatch: pytest.MonkeyPatch) -> Iterator[Pool]:
    monkeypatch.setattr(app_module, "MAX_BODY_BYTES", LIMIT)
    with open_pool() as opened:
        yield opened


def test_a_body_over_the_limit_by_content_length_is_413(small_limit_pool: Pool) -> None:
    pool, headers = small_limit_pool, {"content-type": "application/json"}
    problem = pool.refused(
        413, "POST", "/api/v1/jobs", content=padded_job(LIMIT + 1), headers=headers
    )
    assert str(LIMIT) in problem["detail"]
    pool.refused(413, "POST", "/api/v1/workers", content=b" " * (LIMIT + 1), headers=headers)
    at_limit = pool.client.post("/api/v1/jobs", content=padded_job(LIMIT), headers=headers)
    assert at_limit.status_code == 201, at_limit.text


def stream(data: bytes, piece: int = 256) -> Iterator[bytes]:
    for i in range(0, len(data), piece):
        yield data[i : i + piece]


def send_in_pieces(pool: Pool, path: str, pieces: list[bytes]) -> tuple[int, bytes]:
    """POST ``pieces`` as separate ASGI messages without a Content-Length, on the app's loop."""
    scope = post_scope(
        path,
        [
            (b"content-type", b"application/json"),
            (b"transfer-encoding", b"chunked"),
            (b"authorization", pool.client.headers["Authorization"].encode()),
        ],
    )
    incoming: list[Message] = [
        {"type": "http.request", "body": p, "more_body": True} for p in pieces
    ] + [{"type": "http.request", "body": b"", "more_body": False}]
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    async def run() -> None:
        await pool.app(scope, receive, send)

    portal = pool.client.portal
    assert portal is not None
    portal.call(run)
    (start,) = [m for m in sent if m["type"] == "http.response.start"]
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return int(start["status"]), body


def test_a_streamed_body_within_the_limit_is_accepted(small_limit_pool: Pool) -> None:
    pool, headers = small_limit_pool, {"content-type": "application/json"}
    response = pool.client.post("/api/v1/jobs", content=stream(padded_job(LIMIT)), headers=headers)
    assert response.status_code == 201, response.text
    status, _ = send_in_pieces(pool, "/api/v1/jobs", list(stream(padded_job(LIMIT), 100)))
    assert status == 201


def test_a_streamed_body_over_the_limit_is_413(small_limit_pool: Pool) -> None:
    pool, headers = small_limit_pool, {"content-type": "application/json"}
    body = stream(padded_job(LIMIT + 1))  # chunked transfer encoding: no Content-Length
    problem = pool.refused(413, "POST", "/api/v1/jobs", content=body, headers=headers)
    assert str(LIMIT) in problem["detail"]


def test_a_body_over_the_limit_in_many_messages_is_413(small_limit_pool: Pool) -> None:
    pool = small_limit_pool
    before = pool.snapshot()
    status, body = send_in_pieces(pool, "/api/v1/jobs", list(stream(padded_job(LIMIT + 1), 100)))
    assert pool.snapshot() == before
    assert status == 413, body


# --- long-polling ---------------------------------------------------------------------------


@pytest.mark.parametrize("trigger", ["a job is submitted", "a worker leaves"])
def test_a_held_exchange_answers_as_soon_as_work_appears(
    monkeypatch: pytest.MonkeyPatch, trigger: str
) -> None:
    slow = SchedulerConfig(target_chunk_s=1.0, heartbeat_s=30.0, max_wait_s=30.0)
    with open_pool(slow) as pool, ThreadPoolExecutor(max_workers=1) as thread:
        quitter = pool.enrol("quitter")
        if trigger == "a worker leaves":
            job_id = pool.submit(SumKind.probe_units)["job_id"]  # one chunk, held by quitter
            assert len(pool.exchange(quitter, want=1)["leases"]) == 1
        waiter = pool.enrol("waiter")

        # Know when the held exchange has looked for work and found none, without sleeping.
        store = pool.coordinator.store
        real_exchange = store.exchange
        looked = threading.Event()
        found: list[int] = []

        def spy(*args: Any, **kwargs: Any) -> Any:
            outcome = real_exchange(*args, **kwargs)
            if args[0] == waiter.worker_id:
                found.append(len(outcome.leases))
                looked.set()
            return outcome

        monkeypatch.setattr(store, "exchange", spy)
        started = time.monotonic()
        held_exchange = thread.submit(
            pool.client.post,
            waiter.exchange_url,
            json={"want": 1, "wait_s": 30.0},
            headers=waiter.auth,
        )
        assert looked.wait(timeout=10)
        assert found == [0] and not held_exchange.done()

        if trigger == "a job is submitted":
            job_id = pool.submit(10)["job_id"]
        else:
            left = pool.client.post(
                f"/api/v1/workers/{quitter.worker_id}/leave", headers=quitter.auth
            )
            assert left.json() == {"returned": 1}
        response = held_exchange.result(timeout=20)
        elapsed = time.monotonic() - started

    assert response.status_code == 200, response.text
    (lease,) = response.json()["leases"]
    assert lease["job_id"] == job_id
    assert lease["chunk"]["index"] == 0
    assert elapsed < 10.0  # far below the 30 s the exchange could have been held


@pytest.mark.parametrize("work", ["one chunk is released", "a job is submitted"])
def test_work_wakes_a_few_held_exchanges_not_all_and_each_taker_wakes_more(
    monkeypatch: pytest.MonkeyPatch, work: str
) -> None:
    slow = SchedulerConfig(target_chunk_s=1.0, heartbeat_s=30.0, max_wait_s=30.0)
    held = 20
    with open_pool(slow) as pool, ThreadPoolExecutor(max_workers=held) as threads:
        quitter = pool.enrol("quitter")
        if work == "one chunk is released":
            pool.submit(SumKind.probe_units)  # one chunk, held by the quitter
            assert len(pool.exchange(quitter, want=1)["leases"]) == 1
        waiters = [pool.enrol(f"waiter {n}", cores=1) for n in range(held)]
        ids = {w.worker_id for w in waiters}

        # Count the exchanges the held workers make, and know when each has looked once.
        store = pool.coordinator.store
        real_exchange = store.exchange
        looks: list[str] = []
        first_looks = threading.Semaphore(0)

        def spy(*args: Any, **kwargs: Any) -> Any:
            outcome = real_exchange(*args, **kwargs)
            if args[0] in ids:
                looks.append(args[0])
                first_looks.release()
            return outcome

        monkeypatch.setattr(store, "exchange", spy)
        answers = [
            threads.submit(
                pool.client.post, w.exchange_url, json={"want": 1, "wait_s": 30.0}, headers=w.auth
            )
            for w in waiters
        ]
        for _ in waiters:
            assert first_looks.acquire(timeout=20)
        assert not any(a.done() for a in answers)
        del looks[:]

        if work == "one chunk is released":
            left = pool.client.post(
                f"/api/v1/workers/{quitter.worker_id}/leave", headers=quitter.auth
            )
            assert left.json() == {"returned": 1}
            # The oldest four look; the one given the chunk wakes four more; no one else.
            done = wait_until_one_done(answers)
            assert sum(1 for a in done if a.result().json()["leases"]) == 1
            wait_for(lambda: len(looks) >= 2 * WAKE_BATCH)
        else:
            pool.submit(10 * held)  # a chunk for every one of them, and more
            for answer in answers:  # each answered with a chunk, long before 30 s
                assert len(answer.result(timeout=20).json()["leases"]) == 1
        pool.coordinator.release_waiters_soon()  # answer the rest: the test is over
        for answer in answers:
            assert answer.result(timeout=20).status_code == 200
    if work == "one chunk is released":
        assert len(looks) == 2 * WAKE_BATCH  # not one per held exchange (20)
    else:
        assert len(looks) == held  # one look each: woken all at once


def wait_until_one_done(futures: list[Any]) -> list[Any]:
    """The futures done once one of them is, without sleeping."""
    done = threading.Event()
    for future in futures:
        future.add_done_callback(lambda _: done.set())
    assert done.wait(timeout=20)
    return [f for f in futures if f.done()]


def wait_for(condition: Any, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_held_exchange_with_no_work_answers_empty_after_the_heartbeat() -> None:
    quick = SchedulerConfig(target_chunk_s=1.0, heartbeat_s=0.2, max_wait_s=20.0)
    with open_pool(quick) as pool:
        worker = pool.enrol()
        started = time.monotonic()
        answer = pool.exchange(worker, want=1, wait_s=10.0)
        elapsed = time.monotonic() - started
        assert answer == {"accepted": [], "leases": [], "abandon": [], "next_exchange_s": 0.2}
        assert 0.15 <= elapsed < 2.0

        started = time.monotonic()
        pool.exchange(worker, want=0, wait_s=10.0)  # wanting nothing is never held
        pool.exchange(worker, want=1, wait_s=0.0)
        assert time.monotonic() - started < 0.19  # either one held would take 0.2 s


@pytest.mark.parametrize("ending", ["its last result", "a cancel"])
def test_a_held_job_status_answers_as_soon_as_the_job_ends(
    monkeypatch: pytest.MonkeyPatch, ending: str
) -> None:
    with open_pool() as pool, ThreadPoolExecutor(max_workers=1) as thread:
        job_id = pool.submit(SumKind.probe_units)["job_id"]  # one chunk
        worker = pool.enrol()
        (lease,) = pool.exchange(worker, want=1)["leases"]

        # Know when the held request is waiting for the job's end, without sleeping.
        hub = pool.coordinator.events
        real_job_end = hub.job_end
        holding = threading.Event()

        @contextmanager
        def spy(job: str) -> Iterator[Any]:
            with real_job_end(job) as ended:
                holding.set()
                yield ended

        monkeypatch.setattr(hub, "job_end", spy)
        started = time.monotonic()
        url = f"/api/v1/jobs/{job_id}"
        held = thread.submit(pool.client.get, url, params={"wait_s": 20})
        assert holding.wait(timeout=10)
        assert not held.done()
        if ending == "its last result":
            pool.exchange(worker, [result_for(lease)])
        else:
            assert pool.client.post(f"{url}/cancel").status_code == 200
        response = held.result(timeout=15)
        elapsed = time.monotonic() - started

    assert response.status_code == 200, response.text
    assert response.json()["state"] == ("done" if ending == "its last result" else "cancelled")
    assert elapsed < 10.0  # far below the 20 s it could have been held


def test_a_held_job_status_answers_after_wait_s_or_at_once_if_finished(pool: Pool) -> None:
    job_id = pool.submit(SumKind.probe_units)["job_id"]
    url = f"/api/v1/jobs/{job_id}"
    started = time.monotonic()
    running = pool.client.get(url, params={"wait_s": 0.2})
    assert running.json()["state"] == "running"
    assert 0.15 <= time.monotonic() - started < 5.0
    for wait_s in (-1, 20.5, "soon"):
        pool.refused(422, "GET", url, params={"wait_s": wait_s})
    pool.client.post(f"{url}/cancel")
    started = time.monotonic()
    assert pool.client.get(url, params={"wait_s": 20}).json()["state"] == "cancelled"
    assert time.monotonic() - started < 5.0


# --- leases that come back ------------------------------------------------------------------


def test_an_expired_lease_goes_to_another_worker(pool: Pool) -> None:
    job_id = pool.submit(100)["job_id"]
    slow, fast = pool.enrol("slow"), pool.enrol("fast")
    (first,) = pool.exchange(slow, want=1)["leases"]
    assert pool.exchange(fast, want=0)["leases"] == []

    pool.clock.advance(TTL / 2)  # a renewal pushes the deadline on
    renewed = pool.exchange(slow, running=[first["lease_id"]])
    assert renewed["abandon"] == []
    pool.clock.advance(TTL * 0.9)
    pool.expire_leases()
    assert pool.workers()[slow.worker_id]["leases"] == 1

    pool.clock.advance(TTL)
    pool.expire_leases()
    assert pool.workers()[slow.worker_id]["leases"] == 0
    (second,) = pool.exchange(fast, want=1)["leases"]
    assert second["chunk"] == first["chunk"]
    assert second["lease_id"] != first["lease_id"]

    late = pool.exchange(slow, running=[first["lease_id"]])
    assert late["abandon"] == [first["lease_id"]]

    pool.exchange(fast, [result_for(second)])
    units = first["chunk"]["stop"] - first["chunk"]["start"]
    assert pool.job(job_id)["units_done"] == units
    straggler = pool.exchange(slow, [result_for(first)])  # harmless, not counted twice
    assert straggler["accepted"] == [first["lease_id"]]
    assert pool.job(job_id)["units_done"] == units


def test_a_leaving_worker_returns_its_leases_to_the_pool(pool: Pool) -> None:
    pool.submit(100)
    leaving, staying = pool.enrol("leaving"), pool.enrol("staying")
    leases = pool.exchange(leaving, want=2)["leases"]
    pool.exchange(staying, want=1)
    leave_url = f"/api/v1/workers/{leaving.worker_id}/leave"

    pool.refused(401, "POST", leave_url)
    pool.refused(401, "POST", leave_url, headers={"Authorization": "Bearer not-the-secret"})
    unknown = "/api/v1/workers/w-000000000000/leave"
    pool.refused(401, "POST", unknown, headers=leaving.auth)

    response = pool.client.post(leave_url, headers=leaving.auth)
    assert response.status_code == 200
    assert response.json() == {"returned": 2}
    workers = pool.workers()
    assert workers[leaving.worker_id]["leases"] == 0
    assert workers[leaving.worker_id]["online"] is False
    assert workers[staying.worker_id]["leases"] == 1
    assert pool.client.post(leave_url, headers=leaving.auth).json() == {"returned": 0}

    regained = pool.exchange(staying, want=2)["leases"]
    assert [x["chunk"] for x in regained] == [x["chunk"] for x in leases]


def test_the_snapshot_sees_even_a_workers_heartbeat(pool: Pool) -> None:
    """So an unchanged snapshot after a refused exchange means it really wrote nothing."""
    worker = pool.enrol()
    pool.clock.advance(0.001)
    before = pool.snapshot()
    pool.exchange(worker)
    assert pool.snapshot() != before


@pytest.mark.parametrize("depth", [9, 50, 100_000])
def test_deeply_nested_bodies_are_refused(pool: Pool, depth: int) -> None:
    nested = "[" * depth + "]" * depth
    body = '{"kind": "sum", "params": {"n": 10, "x": ' + nested + "}}"
    headers = {"content-type": "application/json"}
    problem = pool.refused(422, "POST", "/api/v1/jobs", content=body.encode(), headers=headers)
    assert problem["title"] == "Invalid request"


def test_nested_chunk_outputs_are_refused(pool: Pool) -> None:
    pool.submit()
    worker = pool.enrol()
    (lease,) = pool.exchange(worker, want=1)["leases"]
    output: JSON = {"total": 1}
    for _ in range(10):
        output = {"total": output}
    body = {"results": [{"lease_id": lease["lease_id"], "output": output}]}
    problem = pool.refused(422, "POST", worker.exchange_url, json=body, headers=worker.auth)
    assert "nested deeper" in problem["detail"]


def test_pool_view_stays_small_with_a_thousand_workers(pool: Pool) -> None:
    for n in range(1000):
        pool.coordinator.store.enrol_worker(f"w{n:04}", 2, ["sum"], now=pool.clock())
    view = pool.client.get("/api/v1/pool", params={"limit": 200}).json()
    assert (view["workers_total"], view["workers_online"], view["cores_online"]) == (
        1000,
        1000,
        2000,
    )
    assert [w["name"] for w in view["workers"]] == [f"w{n:04}" for n in range(200)]


def test_only_a_worker_with_a_credential_may_send_a_big_exchange(
    small_limit_pool: Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = small_limit_pool
    pool.submit()
    worker = pool.enrol()
    big = {"want": 1, "running": [], "results": [], "wait_s": 0.0}
    body = json.dumps(big).encode() + b" " * (LIMIT * 4)  # over the general limit
    headers = {"content-type": "application/json", **worker.auth}
    response = pool.client.post(worker.exchange_url, content=body, headers=headers)
    assert response.status_code == 200, response.text
    # Without credentials, refused before its body is read at all.
    anonymous = {"content-type": "application/json", "Authorization": ""}
    pool.refused(401, "POST", worker.exchange_url, content=body, headers=anonymous)


def test_a_deferred_artefact_is_rendered_once_on_first_download(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    renders: list[str] = []
    original = MandelbrotKind.render_stream

    def counted(self: MandelbrotKind, params: JSON, outputs: Any, name: str, scratch: Any) -> Any:
        renders.append(name)
        return original(self, params, outputs, name, scratch)

    monkeypatch.setattr(MandelbrotKind, "render_stream", counted)
    kinds = registry_with_pi()
    kinds.register(MandelbrotKind())
    with open_pool(kinds=kinds) as pool:
        params = {"width": 70, "height": 64, "max_iter": 50}
        response = pool.client.post("/api/v1/jobs", json={"kind": "mandelbrot", "params": params})
        job_id = response.json()["job_id"]
        url = f"/api/v1/jobs/{job_id}/artefacts/image.png"
        pool.refused(404, "GET", url)  # not finished yet: nothing to render
        worker = pool.enrol(kinds=("mandelbrot",), cores=2)
        leases = pool.exchange(worker, want=2)["leases"]
        while leases:
            results = []
            for lease in leases:
                chunk = lease["chunk"]
                output = MandelbrotKind().compute(lease["params"], chunk["start"], chunk["stop"])
                results.append({"lease_id": lease["lease_id"], "output": output})
            pool.clock.advance(0.01)
            leases = pool.exchange(worker, results, want=2)["leases"]
        job = pool.job(job_id)
        assert job["state"] == "done" and renders == []  # done without rendering anything
        first = pool.client.get(url)
        again = pool.client.get(url)
        assert first.status_code == again.status_code == 200
        assert first.content == again.content and first.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(first.content)).size == (70, 64)
        counts = pool.client.get(f"/api/v1/jobs/{job_id}/artefacts/counts.npy")
        assert np.load(io.BytesIO(counts.content)).shape == (64, 70)
        assert renders == ["image.png", "counts.npy"]  # each once; then served as stored
        pool.refused(404, "GET", f"/api/v1/jobs/{job_id}/artefacts/other.png")
        # Each finished chunk has a picture: a PNG whose pieces cover the image exactly once.
        finished = pool.client.get(f"/api/v1/jobs/{job_id}/chunks").json()["finished"]
        covered = np.zeros((64, 70), dtype=np.int32)
        for index in finished:
            picture = pool.client.get(f"/api/v1/jobs/{job_id}/chunks/{index}/preview").json()
            sheet = Image.open(io.BytesIO(base64.b64decode(picture["png"])))
            for x, y, w, h, at_x, at_y in picture["pieces"]:
                assert x + w <= sheet.width and y + h <= sheet.height
                covered[at_y : at_y + h, at_x : at_x + w] += 1
        assert (covered == 1).all()
        pool.refused(404, "GET", f"/api/v1/jobs/{job_id}/chunks/{len(finished)}/preview")


def test_a_mandelbrot_job_shows_its_progress_in_iterations() -> None:
    """Progress counts the accepted tiles' iterations against the view's estimate, not
    tiles; once done, the count replaces the estimate."""
    kinds = registry_with_pi()
    kinds.register(MandelbrotKind())
    with open_pool(kinds=kinds) as pool:
        params = {
            "width": 512,
            "height": 512,
            "max_iter": 3000,
            "center_re": -0.7436,
            "center_im": 0.1318,
            "span": 0.01,
        }
        job_id = pool.client.post(
            "/api/v1/jobs", json={"kind": "mandelbrot", "params": params}
        ).json()["job_id"]
        worker = pool.enrol(kinds=("mandelbrot",), cores=1)
        leases = pool.exchange(worker, want=1)["leases"]
        seen = []
        while leases:
            (lease,) = leases
            chunk = lease["chunk"]
            output = MandelbrotKind().compute(lease["params"], chunk["start"], chunk["stop"])
            pool.clock.advance(2.0)
            result = {"lease_id": lease["lease_id"], "output": output, "compute_s": 2.0}
            leases = pool.exchange(worker, [result], want=1)["leases"]
            seen.append(pool.job(job_id))
        running = seen[0]
        assert running["work_name"] == "iterations" and running["state"] == "running"
        assert running["work_done"] == running["live"]["iterations"]
        assert running["progress"] == pytest.approx(
            running["live"]["iterations"] / running["work_total"]
        )
        assert running["eta_s"] > 0
        done = seen[-1]
        assert done["state"] == "done" and done["progress"] == 1.0 and done["eta_s"] is None
        assert done["work_done"] == done["work_total"] == done["answer"]["iterations"]


def test_the_eta_counts_the_work_in_flight_before_any_is_reported() -> None:
    """The ETA's rate counts the work the job's leases should have computed by now, not
    only what is reported: as the clock moves on a chunk in progress, the ETA shortens."""
    with open_pool() as pool:
        job_id = pool.submit(n=10**7)["job_id"]
        worker = pool.enrol(cores=1)
        (probe,) = pool.exchange(worker, want=1)["leases"]
        chunk = probe["chunk"]
        output = SumKind().compute(probe["params"], chunk["start"], chunk["stop"])
        pool.clock.advance(0.5)
        result = {"lease_id": probe["lease_id"], "output": output, "compute_s": 0.5}
        (lease,) = pool.exchange(worker, [result], want=1)["leases"]
        target = CONFIG.target_chunk_s  # the chunk was sized to it
        reported = pool.job(job_id)
        pool.clock.advance(target / 2)  # half the chunk computed, none of it reported
        later = pool.job(job_id)
        assert later["work_done"] == reported["work_done"] > 0
        # Counting only what is reported, the rate would have fallen as the clock moved:
        # with the half chunk in flight it rose.
        assert later["eta_s"] < reported["eta_s"]
        units = lease["chunk"]["stop"] - lease["chunk"]["start"]
        reached = later["work_done"] + units / 2
        elapsed = later["elapsed_s"]
        assert later["eta_s"] == pytest.approx(
            (later["work_total"] - reached) / (reached / elapsed), rel=0.02
        )
        # The list of jobs shows the same ETA.
        (listed,) = pool.client.get("/api/v1/jobs").json()["jobs"]
        assert listed["eta_s"] == later["eta_s"]


def test_the_eta_stretches_the_work_in_flight_by_how_late_the_jobs_chunks_were() -> None:
    """A job whose chunks took three times as long as their holders' speeds foretold (a
    speed learnt on another job, say) counts its chunks in flight at that pace too."""
    with open_pool() as pool:
        job_id = pool.submit(n=10**8)["job_id"]
        worker = pool.enrol(cores=1)
        target = CONFIG.target_chunk_s
        (lease,) = pool.exchange(worker, want=1)["leases"]  # a probe: no expectation
        for compute_s in (0.5, 3 * target):
            chunk = lease["chunk"]
            output = SumKind().compute(lease["params"], chunk["start"], chunk["stop"])
            pool.clock.advance(compute_s)
            result = {"lease_id": lease["lease_id"], "output": output, "compute_s": compute_s}
            (lease,) = pool.exchange(worker, [result], want=1)["leases"]
        # The job's one sized chunk: expected to take a target, it took three. Drawn
        # towards 1 by a target: twice as long.
        stretch = (3 * target + target) / (target + target)
        pool.clock.advance(target / 2)
        job = pool.job(job_id)
        units = lease["chunk"]["stop"] - lease["chunk"]["start"]
        (shown,) = pool.workers().values()
        expected_s = units / shown["speeds"]["sum"]
        reached = job["work_done"] + units * (target / 2) / (expected_s * stretch)
        assert job["eta_s"] == pytest.approx(
            (job["work_total"] - reached) / (reached / job["elapsed_s"]), rel=0.02
        )
        unstretched = job["work_done"] + units * (target / 2) / expected_s
        unstretched_eta = (job["work_total"] - unstretched) / (unstretched / job["elapsed_s"])
        assert job["eta_s"] > 1.04 * unstretched_eta  # 6.4 units reached, not 6.8


def test_a_kinds_plan_runs_before_the_jobs_clock_starts() -> None:
    """A kind's plan (a Mandelbrot view's cost estimate) runs before the job is created:
    its time counts in neither the job's elapsed time nor its rate (nor its ETA)."""
    planned: list[float] = []

    class SlowPlan(SumKind):
        name = "slow-plan"

        def plan(self, params: dict[str, Any]) -> dict[str, Any]:
            planned.append(clock.advance(0.5))  # the estimate takes half a second
            return params

    kinds = registry_with_pi()
    kinds.register(SlowPlan())
    with open_pool(kinds=kinds) as pool:
        clock = pool.clock
        submitted = clock()
        job = pool.client.post("/api/v1/jobs", json={"kind": "slow-plan", "params": {"n": 10}})
        assert job.status_code == 201, job.text
        assert planned and planned[0] == submitted + 0.5
        assert job.json()["created_s"] >= planned[0]
