"""The fair share through the HTTP API: priorities, key weights and every submitter's share
and usage, in job views and ``GET /shares``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.test_api import JSON, Pool, assert_problem, open_pool


@pytest.fixture
def pool() -> Iterator[Pool]:
    with open_pool() as opened:
        yield opened


def submitter(pool: Pool, name: str, weight: float | None = None) -> tuple[str, dict[str, str]]:
    body: JSON = {"role": "submitter", "name": name}
    if weight is not None:
        body["weight"] = weight
    response = pool.client.post("/api/v1/keys", json=body)
    assert response.status_code == 201, response.text
    key = response.json()
    return key["id"], {"Authorization": f"Bearer {key['secret']}"}


def submit_as(pool: Pool, auth: dict[str, str], n: int, **extra: object) -> JSON:
    body = {"kind": "sum", "params": {"n": n}, **extra}
    response = pool.client.post("/api/v1/jobs", json=body, headers=auth)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def test_shares_weights_and_priorities_are_shown(pool: Pool) -> None:
    alice, alice_auth = submitter(pool, "alice", weight=3)
    bob, bob_auth = submitter(pool, "bob")
    huge = submit_as(pool, alice_auth, 10**9)
    pool.clock.advance(1.0)  # submitted one after the other (the oldest first when tied)
    urgent = submit_as(pool, alice_auth, 10**9, priority=7)
    assert urgent["priority"] == 7 and huge["priority"] == 0
    pool.clock.advance(1.0)
    small = submit_as(pool, bob_auth, 10**6)
    worker = pool.enrol(cores=4)
    # Nobody has usage: the oldest submitter first, her urgent job before her older one;
    # then Bob, who has had nothing yet.
    first = pool.exchange(worker, want=1)["leases"]
    second = pool.exchange(worker, want=1)["leases"]
    assert [first[0]["job_id"], second[0]["job_id"]] == [urgent["job_id"], small["job_id"]]
    shares = {s["owner"]: s for s in pool.client.get("/api/v1/shares").json()["owners"]}
    assert shares[alice]["share"] == 0.75 and shares[alice]["weight"] == 3
    assert shares[bob]["share"] == 0.25 and shares[bob]["running_jobs"] == 1
    assert shares[alice]["usage_s"] > 0 and shares[bob]["usage_s"] > 0
    view = pool.job(small["job_id"])
    assert view["owner_share"]["owner"] == bob and view["owner_share"]["share"] == 0.25
    # A submitter sees its own standing only.
    own = pool.client.get("/api/v1/shares", headers=bob_auth).json()["owners"]
    assert [s["owner"] for s in own] == [bob]


def test_an_admin_sets_a_keys_weight(pool: Pool) -> None:
    key, auth = submitter(pool, "carol")
    response = pool.client.put(f"/api/v1/keys/{key}/weight", json={"weight": 2.5})
    assert response.status_code == 200, response.text
    assert response.json()["weight"] == 2.5
    keys = {k["id"]: k for k in pool.client.get("/api/v1/keys").json()["credentials"]}
    assert keys[key]["weight"] == 2.5
    pool.refused(422, "PUT", f"/api/v1/keys/{key}/weight", json={"weight": 0})
    pool.refused(422, "PUT", f"/api/v1/keys/{key}/weight", json={"weight": "2"})
    pool.refused(404, "PUT", "/api/v1/keys/k-nope/weight", json={"weight": 2})
    problem = assert_problem(
        pool.client.put(f"/api/v1/keys/{key}/weight", json={"weight": 9}, headers=auth), 403
    )
    assert "admin" in problem["detail"]
