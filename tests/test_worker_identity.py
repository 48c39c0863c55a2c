"""A worker's identity over HTTP: rejoining with other cores or kinds, removal by an admin,
forgetting long-gone workers, a spent join token that says so; and the coordinator's log
of workers and jobs coming and going."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest

from hydracompute.coordinator.app import create_app
from hydracompute.core.models import CredentialKind, Role
from hydracompute.store import MemoryBackend, Store
from tests.test_api import (
    CONFIG,
    UNLIMITED,
    FakeClock,
    Pool,
    TestClient,
    Volunteer,
    assert_problem,
    finish_job,
    registry_with_pi,
)

DAY_S = 86400.0


@pytest.fixture
def pool() -> Iterator[Pool]:
    yield from _open(forget_after_s=30 * DAY_S)


def _open(forget_after_s: float | None) -> Iterator[Pool]:
    clock = FakeClock()
    store = Store(MemoryBackend(), registry_with_pi(), CONFIG)
    _, admin = store.credentials.issue(CredentialKind.API_KEY, "admin", clock(), Role.ADMIN)
    _, join_token = store.credentials.issue(CredentialKind.JOIN_TOKEN, "test", clock())
    app = create_app(store, clock=clock, security=UNLIMITED, forget_workers_after_s=forget_after_s)
    with TestClient(app) as client:
        client.headers["Authorization"] = f"Bearer {admin}"
        yield Pool(app, client, clock, join_token)


def rejoin_url(worker: Volunteer) -> str:
    return f"/api/v1/workers/{worker.worker_id}/rejoin"


def test_a_worker_rejoins_with_other_cores_and_kinds_and_keeps_its_id(pool: Pool) -> None:
    worker = pool.enrol(cores=1, kinds=("sum",))
    finish_job(pool, worker, pool.submit(n=20)["job_id"])
    before = pool.workers()[worker.worker_id]
    pool.clock.advance(60)
    body = {"cores": 3, "kinds": ["sum", "pi"], "version": "1"}
    response = pool.client.post(rejoin_url(worker), json=body, headers=worker.auth)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "worker_id": worker.worker_id,
        "heartbeat_s": CONFIG.heartbeat_s,
        "lease_ttl_s": CONFIG.lease_ttl_s,
        "max_wait_s": CONFIG.max_wait_s,
    }
    (after,) = pool.workers().values()
    assert after["worker_id"] == worker.worker_id
    assert (after["cores"], after["kinds"], after["online"]) == (3, ["pi", "sum"], True)
    assert after["speeds"] == before["speeds"] and after["chunks_done"] == before["chunks_done"]
    # The new cores count at once: one core would hold at most two leases.
    pool.submit(n=1000)
    assert len(pool.exchange(worker, want=6)["leases"]) > 2


@pytest.mark.parametrize(
    "body",
    [
        {"cores": 0, "kinds": ["sum"]},
        {"cores": 1025, "kinds": ["sum"]},
        {"cores": "2", "kinds": ["sum"]},
        {"cores": 2, "kinds": []},
        {"cores": 2, "kinds": ["Bad Name"]},
        {"cores": 2, "kinds": ["k"] * 101},
        {"cores": 2, "kinds": ["sum"], "secret": "x"},
        {"kinds": ["sum"]},
    ],
)
def test_a_bad_profile_is_refused_and_changes_nothing(pool: Pool, body: dict[str, object]) -> None:
    worker = pool.enrol()
    pool.refused(422, "POST", rejoin_url(worker), json=body, headers=worker.auth)


def test_rejoining_needs_the_workers_own_secret(pool: Pool) -> None:
    worker = pool.enrol()
    other = pool.enrol(name="other")
    body = {"cores": 2, "kinds": ["sum"]}
    pool.refused(401, "POST", rejoin_url(worker), json=body, headers=other.auth)
    pool.refused(401, "POST", rejoin_url(worker), json=body)
    pool.refused(
        401, "POST", "/api/v1/workers/w-000000000000/rejoin", json=body, headers=worker.auth
    )


def test_an_admin_removes_a_worker_whose_secret_then_stops_working(pool: Pool) -> None:
    gone = pool.enrol(name="gone")
    other = pool.enrol(name="other")
    pool.submit(n=100)
    (held,) = pool.exchange(gone, want=1)["leases"]  # its secret is now known as verified
    viewer = pool.coordinator.store.credentials.issue(
        CredentialKind.API_KEY, "v", pool.clock(), Role.VIEWER
    )[1]
    url = f"/api/v1/workers/{gone.worker_id}"
    pool.refused(403, "DELETE", url, headers={"Authorization": f"Bearer {viewer}"})
    assert pool.client.delete(url).status_code == 204
    assert list(pool.workers()) == [other.worker_id]
    (again,) = pool.exchange(other, want=1)["leases"]
    assert again["chunk"] == held["chunk"]
    problem = pool.refused(401, "POST", gone.exchange_url, json={}, headers=gone.auth)
    assert "worker" in problem["detail"]
    pool.refused(404, "DELETE", url)


def test_workers_gone_for_longer_than_the_setting_are_forgotten(pool: Pool) -> None:
    old = pool.enrol(name="old")
    pool.submit(n=100)
    (held,) = pool.exchange(old, want=1)["leases"]
    pool.clock.advance(29 * DAY_S)
    recent = pool.enrol(name="recent")
    portal = pool.client.portal
    assert portal is not None
    assert portal.call(pool.coordinator.forget_gone_workers) == 0
    pool.clock.advance(1 * DAY_S + 1)
    assert portal.call(pool.coordinator.forget_gone_workers) == 1
    assert list(pool.workers()) == [recent.worker_id]
    (again,) = pool.exchange(recent, want=1)["leases"]
    assert again["chunk"] == held["chunk"]
    pool.refused(401, "POST", old.exchange_url, json={}, headers=old.auth)


def test_the_coordinator_forgets_gone_workers_by_itself() -> None:
    # A short setting is looked for often (the clock only moves when the test moves it).
    for pool in _open(forget_after_s=0.1):
        gone = pool.enrol(name="gone")
        pool.clock.advance(1)
        kept = pool.enrol(name="kept")
        deadline = time.monotonic() + 30
        while gone.worker_id in pool.workers():
            assert time.monotonic() < deadline, "the worker was not forgotten"
            time.sleep(0.02)
        assert list(pool.workers()) == [kept.worker_id]


def test_never_forgetting_keeps_every_worker() -> None:
    for pool in _open(forget_after_s=None):
        worker = pool.enrol()
        pool.clock.advance(10_000 * DAY_S)
        portal = pool.client.portal
        assert portal is not None
        assert portal.call(pool.coordinator.forget_gone_workers) == 0
        assert list(pool.workers()) == [worker.worker_id]


def test_a_spent_join_token_says_so_and_a_wrong_one_does_not(pool: Pool) -> None:
    issued = pool.client.post("/api/v1/join-tokens", json={"max_uses": 1}).json()
    body = {"name": "w", "cores": 1, "kinds": ["sum"], "join_token": issued["secret"]}
    assert pool.client.post("/api/v1/workers", json=body).status_code == 201
    problem = pool.refused(401, "POST", "/api/v1/workers", json=body)
    assert "used up" in problem["detail"] and "rejoins without it" in problem["detail"]
    wrong = issued["secret"][: issued["secret"].rindex("_") + 1] + "guess"
    problem = pool.refused(401, "POST", "/api/v1/workers", json={**body, "join_token": wrong})
    assert "used up" not in problem["detail"]


def test_workers_and_jobs_coming_and_going_are_logged_once_each(
    pool: Pool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hydracompute.coordinator")
    worker = pool.enrol(name="laptop", cores=2)
    pool.client.post(rejoin_url(worker), json={"cores": 4, "kinds": ["sum"]}, headers=worker.auth)
    done = pool.submit(n=20)["job_id"]
    finish_job(pool, worker, done)
    cancelled = pool.submit(n=20)["job_id"]
    assert pool.client.post(f"/api/v1/jobs/{cancelled}/cancel").status_code == 200
    assert pool.client.post(f"/api/v1/workers/{worker.worker_id}/leave", headers=worker.auth)
    assert pool.client.delete(f"/api/v1/workers/{worker.worker_id}").status_code == 204
    portal = pool.client.portal
    assert portal is not None
    deadline = time.monotonic() + 30
    while not any(f"job {done} (sum) done" in m for m in caplog.messages):
        assert time.monotonic() < deadline, caplog.messages
        portal.call(pool.coordinator.call, lambda: None)  # let the logging task run
    lines = [m for m in caplog.messages if worker.worker_id in m or " job " in f" {m}"]
    wanted = [
        f"worker {worker.worker_id} (laptop) joined with 2 core(s) for sum",
        f"worker {worker.worker_id} (laptop) rejoined with 4 core(s) for sum",
        f"job {done} (sum, 20 units) submitted by",
        f"job {done} (sum) done after",
        f"job {cancelled} (sum, 20 units) submitted by",
        f"job {cancelled} (sum) cancelled after",
        f"worker {worker.worker_id} left, giving back 0 lease(s)",
        f"worker {worker.worker_id} (laptop) removed by",
    ]
    for start in wanted:
        assert sum(m.startswith(start) for m in lines) == 1, (start, lines)
    assert all(r.levelno == logging.INFO for r in caplog.records if r.message in lines)


def test_a_refused_request_is_still_a_problem_document(pool: Pool) -> None:
    assert_problem(pool.client.delete("/api/v1/workers/w-nobody"), 404)


def test_after_a_long_stop_workers_get_a_day_to_come_back_before_being_forgotten() -> None:
    clock = FakeClock()
    store = Store(MemoryBackend(), registry_with_pi(), CONFIG)
    # Heard from last 40 days ago, when the coordinator stopped.
    worker, _ = store.enrol_worker("laptop", 1, ["sum"], now=clock() - 40 * DAY_S)
    app = create_app(store, clock=clock, security=UNLIMITED, forget_workers_after_s=30 * DAY_S)
    with TestClient(app) as client:
        portal = client.portal
        assert portal is not None
        coordinator = app.state.coordinator
        assert portal.call(coordinator.forget_gone_workers) == 0
        clock.advance(DAY_S - 1)
        assert portal.call(coordinator.forget_gone_workers) == 0
        assert [w.worker_id for w in store.list_workers()] == [worker.worker_id]
        clock.advance(1)
        assert portal.call(coordinator.forget_gone_workers) == 1
        assert store.list_workers() == []


def test_a_worker_that_goes_silent_and_comes_back_is_logged_once_each(
    pool: Pool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hydracompute.coordinator")
    portal = pool.client.portal
    assert portal is not None
    coordinator = pool.coordinator
    quiet = pool.enrol(name="quiet")
    chatty = pool.enrol(name="chatty")
    pool.clock.advance(CONFIG.lease_ttl_s / 2)
    pool.exchange(chatty)
    left = pool.enrol(name="left")
    assert pool.client.post(f"/api/v1/workers/{left.worker_id}/leave", headers=left.auth)
    assert portal.call(coordinator.log_silent_workers) == 0
    pool.clock.advance(CONFIG.lease_ttl_s / 2 + 0.01)
    assert portal.call(coordinator.log_silent_workers) == 1  # quiet only
    pool.clock.advance(CONFIG.lease_ttl_s)
    assert portal.call(coordinator.log_silent_workers) == 1  # chatty, later
    assert portal.call(coordinator.log_silent_workers) == 0  # each once
    pool.exchange(quiet)
    pool.exchange(quiet)
    silent = [m for m in caplog.messages if "went silent" in m]
    assert [m.split()[1] for m in silent] == [quiet.worker_id, chatty.worker_id]
    back = [m for m in caplog.messages if m.endswith(" is back")]
    assert back == [f"worker {quiet.worker_id} is back"]
    assert not any(left.worker_id in m for m in silent)
