"""``POST /api/v1/workers/{id}/return``: a paused worker gives leases back to the pool."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from hydracompute.core.config import SchedulerConfig
from tests.test_api import NO_SUCH_LEASE, Pool, Volunteer, open_pool, result_for


@pytest.fixture
def pool() -> Iterator[Pool]:
    with open_pool() as opened:
        yield opened


def return_url(worker: Volunteer) -> str:
    return f"/api/v1/workers/{worker.worker_id}/return"


def give_back(pool: Pool, worker: Volunteer, lease_ids: list[str]) -> int:
    response = pool.client.post(
        return_url(worker), json={"lease_ids": lease_ids}, headers=worker.auth
    )
    assert response.status_code == 200, response.text
    returned: int = response.json()["returned"]
    return returned


def test_returned_leases_go_to_other_workers_at_once(pool: Pool) -> None:
    job_id = pool.submit(100)["job_id"]
    paused, other = pool.enrol("paused", cores=2), pool.enrol("other", cores=2)
    kept, returned = pool.exchange(paused, want=2)["leases"]
    pool.exchange(paused, running=[kept["lease_id"], returned["lease_id"]], want=0)

    assert give_back(pool, paused, [returned["lease_id"]]) == 1
    workers = pool.workers()
    assert workers[paused.worker_id]["leases"] == 1
    assert workers[paused.worker_id]["online"] is True  # paused, not gone
    # No need to wait for the lease to expire: its chunk is the first one handed out.
    (regained,) = pool.exchange(other, want=1)["leases"]
    assert regained["chunk"] == returned["chunk"]
    # The paused worker is told to drop it if it still lists it, and keeps the other one.
    renewal = pool.exchange(paused, running=[kept["lease_id"], returned["lease_id"]])
    assert renewal["abandon"] == [returned["lease_id"]]
    # Giving back again, or a lease that finished meanwhile, counts nothing and is harmless.
    pool.exchange(paused, [result_for(kept)])
    assert give_back(pool, paused, [returned["lease_id"], kept["lease_id"]]) == 0
    assert give_back(pool, paused, []) == 0
    pool.exchange(other, [result_for(regained)])
    done = pool.job(job_id)
    units = sum(lease["chunk"]["stop"] - lease["chunk"]["start"] for lease in (kept, returned))
    assert done["units_done"] == units


def test_the_same_lease_twice_in_one_request_counts_once(pool: Pool) -> None:
    pool.submit(100)
    worker = pool.enrol(cores=1)
    (lease,) = pool.exchange(worker, want=1)["leases"]
    assert give_back(pool, worker, [lease["lease_id"], lease["lease_id"]]) == 1


def test_refusals_change_nothing(pool: Pool) -> None:
    pool.submit(100)
    mine, theirs = pool.enrol("mine", cores=1), pool.enrol("theirs", cores=1)
    (own,) = pool.exchange(mine, want=1)["leases"]
    (foreign,) = pool.exchange(theirs, want=1)["leases"]
    url = return_url(mine)

    # Another worker's lease: refused, and the request's own lease is not returned either.
    body = {"lease_ids": [own["lease_id"], foreign["lease_id"]]}
    problem = pool.refused(403, "POST", url, json=body, headers=mine.auth)
    assert problem["lease_id"] == foreign["lease_id"]
    # A lease nobody holds.
    body = {"lease_ids": [own["lease_id"], NO_SUCH_LEASE]}
    problem = pool.refused(404, "POST", url, json=body, headers=mine.auth)
    assert problem["lease_id"] == NO_SUCH_LEASE
    # Only the worker itself may give its leases back.
    own_only = {"lease_ids": [own["lease_id"]]}
    pool.refused(401, "POST", url, json=own_only)
    pool.refused(401, "POST", url, json=own_only, headers=theirs.auth)
    pool.refused(401, "POST", url, json=own_only, headers={"Authorization": "Bearer nope"})
    pool.refused(
        401, "POST", "/api/v1/workers/w-000000000000/return", json=own_only, headers=mine.auth
    )
    # Malformed requests.
    for bad in (
        {},
        {"lease_ids": ["not hex!"]},
        {"lease_ids": own["lease_id"]},
        {"lease_ids": [own["lease_id"]], "extra": 1},
        {"lease_ids": ["ab"] * 4097},
    ):
        pool.refused(422, "POST", url, json=bad, headers=mine.auth)

    assert pool.workers()[mine.worker_id]["leases"] == 1
    assert give_back(pool, mine, [own["lease_id"]]) == 1


def test_a_held_exchange_answers_as_soon_as_a_lease_is_returned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slow = SchedulerConfig(target_chunk_s=1.0, heartbeat_s=30.0, max_wait_s=30.0)
    with open_pool(slow) as pool, ThreadPoolExecutor(max_workers=1) as thread:
        pool.submit(1)  # one chunk
        paused, waiter = pool.enrol("paused", cores=1), pool.enrol("waiter", cores=1)
        (lease,) = pool.exchange(paused, want=1)["leases"]

        # Know when the held exchange has looked for work and found none, without sleeping.
        store = pool.coordinator.store
        real_exchange = store.exchange
        looked = threading.Event()

        def spy(*args: Any, **kwargs: Any) -> Any:
            outcome = real_exchange(*args, **kwargs)
            if args[0] == waiter.worker_id:
                looked.set()
            return outcome

        monkeypatch.setattr(store, "exchange", spy)
        started = time.monotonic()
        held = thread.submit(
            pool.client.post,
            waiter.exchange_url,
            json={"want": 1, "wait_s": 30.0},
            headers=waiter.auth,
        )
        assert looked.wait(timeout=10) and not held.done()
        assert give_back(pool, paused, [lease["lease_id"]]) == 1
        response = held.result(timeout=20)
        elapsed = time.monotonic() - started
    assert response.status_code == 200, response.text
    (regained,) = response.json()["leases"]
    assert regained["chunk"] == lease["chunk"]
    assert elapsed < 10.0  # far below the 30 s it could have been held


def test_the_pool_sees_a_paused_worker_and_why(pool: Pool) -> None:
    worker = pool.enrol()
    body = {"want": 0, "state": "paused", "state_reason": "on battery"}
    response = pool.client.post(worker.exchange_url, json=body, headers=worker.auth)
    assert response.status_code == 200, response.text
    seen = pool.workers()[worker.worker_id]
    assert (seen["state"], seen["state_reason"], seen["online"]) == ("paused", "on battery", True)
    pool.refused(422, "POST", worker.exchange_url, json={"state": "asleep"}, headers=worker.auth)
    pool.refused(
        422, "POST", worker.exchange_url, json={"state_reason": "x" * 201}, headers=worker.auth
    )
