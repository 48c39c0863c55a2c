"""/metrics: who may read it, the events it counts, and the pool's state read from the store."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hydracompute.coordinator.app import create_app
from hydracompute.coordinator.auth import SecuritySettings
from hydracompute.core.models import CredentialKind, Role
from hydracompute.demo import start_coordinator, stop
from hydracompute.store import SQLiteBackend, Store
from tests.sum_kind import sum_registry
from tests.test_api import (
    CONFIG,
    NO_SUCH_LEASE,
    UNLIMITED,
    FakeClock,
    Pool,
    TestClient,
    assert_problem,
    result_for,
)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(client: TestClient, **kwargs: object) -> Samples:
    response = client.get("/metrics", **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@contextmanager
def sqlite_pool(path: Path, security: SecuritySettings = UNLIMITED) -> Iterator[Pool]:
    """A coordinator app over the SQLite file ``path`` (several may share one)."""
    clock = FakeClock()
    store = Store(SQLiteBackend(path), sum_registry(), CONFIG)
    _, admin_key = store.credentials.issue(CredentialKind.API_KEY, "admin", clock(), Role.ADMIN)
    _, join_token = store.credentials.issue(CredentialKind.JOIN_TOKEN, "test", clock())
    app = create_app(store, clock=clock, security=security)
    with TestClient(app) as client:
        client.headers["Authorization"] = f"Bearer {admin_key}"
        yield Pool(app, client, clock, join_token)


def test_metrics_need_a_viewer_key_unless_made_public(tmp_path: Path) -> None:
    with sqlite_pool(tmp_path / "a.db") as pool:
        assert_problem(pool.client.get("/metrics", headers={"Authorization": ""}), 401)
        viewer = pool.client.post("/api/v1/keys", json={"name": "prometheus", "role": "viewer"})
        assert viewer.status_code == 201, viewer.text
        key = viewer.json()["secret"]
        samples = scrape(pool.client, headers={"Authorization": f"Bearer {key}"})
        assert ("hydracompute_workers_online", ()) in samples
    public = SecuritySettings(
        metrics_public=True, api_rate_per_s=1e6, api_burst=1e6, worker_rate_per_s=1e6
    )
    with sqlite_pool(tmp_path / "b.db", public) as pool:
        samples = scrape(pool.client, headers={"Authorization": ""})
        assert ("hydracompute_workers_online", ()) in samples
        # Only /metrics: everything else still needs a key.
        assert_problem(pool.client.get("/api/v1/jobs", headers={"Authorization": ""}), 401)


def test_results_refusals_and_times_are_counted(tmp_path: Path) -> None:
    with sqlite_pool(tmp_path / "pool.db") as pool:
        pool.submit(10**6)
        worker = pool.enrol(cores=2)
        leases = pool.exchange(worker, want=3)["leases"]
        assert len(leases) == 3
        compute_s = [0.5, 3.0]
        pool.exchange(worker, [result_for(x, s) for x, s in zip(leases, compute_s, strict=False)])
        again = pool.exchange(worker, [result_for(leases[0], 0.5)])  # acknowledged again
        assert again["accepted"] == [leases[0]["lease_id"]]
        recorded_exchanges = 3

        refusals = {
            "unknown_lease": {"lease_id": NO_SUCH_LEASE, "output": {"total": 1}},
            "invalid_result": {"lease_id": leases[2]["lease_id"], "output": {"total": -1}},
            "conflicting_result": {"lease_id": leases[0]["lease_id"], "output": {"total": -1}},
        }
        for result in refusals.values():
            body = {"results": [result]}
            response = pool.client.post(worker.exchange_url, json=body, headers=worker.auth)
            assert response.status_code in (404, 409, 422), response.text

        samples = scrape(pool.client)
        assert value(samples, "hydracompute_results_accepted_total") == 3
        # Credit for the two chunks accepted (the sum kind's work: their units), once.
        credited = sum(x["chunk"]["stop"] - x["chunk"]["start"] for x in leases[:2])
        assert value(samples, "hydracompute_credit_granted_total") == credited > 0
        assert value(samples, "hydracompute_credit_withdrawn_total") == 0
        for reason in refusals:
            assert value(samples, "hydracompute_exchanges_refused_total", reason=reason) == 1
        assert value(samples, "hydracompute_chunk_compute_seconds_count", kind="sum") == 2
        assert value(samples, "hydracompute_chunk_compute_seconds_sum", kind="sum") == 3.5
        assert (
            value(samples, "hydracompute_chunk_compute_seconds_bucket", kind="sum", le="1.0") == 1
        )
        latency = "hydracompute_exchange_latency_seconds_count"
        assert value(samples, latency) == recorded_exchanges
        batches = value(
            samples, "hydracompute_store_transaction_seconds_count", operation="exchange_batch"
        )
        assert 1 <= batches <= recorded_exchanges + len(refusals)


def test_the_pools_state_is_read_from_the_store_when_scraped(tmp_path: Path) -> None:
    # Two coordinators on one database: what one records, the other reports.
    path = tmp_path / "shared.db"
    with sqlite_pool(path) as first, sqlite_pool(path) as second:
        job = first.submit(10**6)
        first.submit(10**6)
        running = first.enrol("running", cores=4)
        paused = first.enrol("paused", cores=2)
        first.exchange(running, want=3)
        body = {"want": 0, "state": "paused", "state_reason": "on battery"}
        response = first.client.post(paused.exchange_url, json=body, headers=paused.auth)
        assert response.status_code == 200, response.text
        assert first.client.post(f"/api/v1/jobs/{job['job_id']}/cancel").status_code == 200

        second.clock.now = first.clock.now
        samples = scrape(second.client)
        assert value(samples, "hydracompute_workers_enrolled") == 2
        assert value(samples, "hydracompute_workers_online") == 2
        assert value(samples, "hydracompute_workers_paused") == 1
        assert value(samples, "hydracompute_workers_barred") == 0
        assert value(samples, "hydracompute_cores_online") == 6
        assert value(samples, "hydracompute_leases_in_flight") >= 1
        assert value(samples, "hydracompute_jobs", state="running") == 1
        assert value(samples, "hydracompute_jobs", state="cancelled") == 1
        assert value(samples, "hydracompute_jobs", state="done") == 0
        # Events are this process's own: the second coordinator recorded no exchange.
        assert value(samples, "hydracompute_exchange_latency_seconds_count") == 0

        # Nobody seen for a lease's lifetime: nobody online, whatever happened before.
        second.clock.advance(CONFIG.lease_ttl_s + 1)
        later = scrape(second.client)
        assert value(later, "hydracompute_workers_online") == 0
        assert value(later, "hydracompute_cores_online") == 0


@pytest.mark.e2e
@pytest.mark.parametrize("public", [False, True])
def test_the_coordinators_metrics_public_option(tmp_path: Path, public: bool) -> None:
    coordinator = start_coordinator(tmp_path / "pool", 0, ["--metrics-public"] if public else [])
    try:
        pinned = ssl.create_default_context(cafile=tmp_path / "pool" / "tls" / "ca.pem")
        with httpx.Client(base_url=coordinator.url, verify=pinned) as http:
            anonymous = http.get("/metrics")
            keyed = http.get(
                "/metrics", headers={"Authorization": f"Bearer {coordinator.admin_key}"}
            )
    finally:
        stop(coordinator.process)
    assert keyed.status_code == 200
    assert "hydracompute_workers_online 0.0" in keyed.text
    if public:
        assert anonymous.status_code == 200
        assert 'hydracompute_jobs{state="running"} 0.0' in anonymous.text
    else:
        assert_problem(anonymous, 401)
