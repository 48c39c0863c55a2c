"""The credit statement over the HTTP API, in process: what a finished job earned its
worker, the payout at a rate, the period, and bad requests refused with a problem document."""

from __future__ import annotations

from hydracompute.core.models import CredentialKind, Role
from tests.test_api import Pool, assert_problem, finish_job, open_pool


def test_the_statement_credits_the_work_of_a_finished_job_and_pays_its_energy() -> None:
    with open_pool() as pool:
        laptop = pool.enrol("laptop")
        job = pool.submit(n=500)
        finish_job(pool, laptop, job["job_id"])
        answer = pool.client.get(
            "/api/v1/credit", params={"by": "worker", "rate_per_kwh": 360.0}
        ).json()
        (line,) = answer["lines"]
        assert (line["key"], line["name"]) == (laptop.worker_id, "laptop")
        assert line["credit"] == line["work"] == 500  # the sum kind's work: its units
        assert line["energy_j"] > 0 and answer["watts_per_core"] == 10.0
        # 360 per kWh is 0.1 per kJ: in millionths, 100 per joule.
        assert line["payout_micros"] == round(line["energy_j"] * 100)
        assert answer["total"]["payout_micros"] == line["payout_micros"]
        assert answer["total"]["chunks"] == line["chunks"] > 0
        by_volunteer = pool.client.get("/api/v1/credit").json()
        assert [v["name"] for v in by_volunteer["lines"]] == ["test"]  # the join token
        later = pool.client.get("/api/v1/credit", params={"since_s": pool.clock() + 1}).json()
        assert later["lines"] == [] and later["total"]["credit"] == 0
        # The worker's own credit, with its secret (not an API key).
        own_url = f"/api/v1/workers/{laptop.worker_id}/credit"
        own = pool.client.get(own_url, headers=laptop.auth).json()
        assert (own["credit"], own["chunks"]) == (500.0, line["chunks"])
        assert_problem(pool.client.get(own_url), 401)
        other = pool.enrol("other")
        assert_problem(pool.client.get(own_url, headers=other.auth), 401)
        # The leaderboard, for anyone who may read the pool.
        store = pool.coordinator.store
        _, viewer = store.credentials.issue(CredentialKind.API_KEY, "v", pool.clock(), Role.VIEWER)
        board = pool.client.get(
            "/api/v1/leaderboard", headers={"Authorization": f"Bearer {viewer}"}
        ).json()
        assert board == {
            "volunteers": [
                {
                    "key": by_volunteer["lines"][0]["key"],
                    "name": "test",
                    "chunks": line["chunks"],
                    "credit": 500.0,
                    "energy_kwh": line["energy_kwh"],
                    "share": 1.0,
                }
            ],
            "total_credit": 500.0,
        }


def test_a_volunteer_page_shows_its_workers_totals_and_latest_entries() -> None:
    with open_pool() as pool:
        laptop = pool.enrol("laptop")
        pool.enrol("idle")
        job = pool.submit(n=500)
        finish_job(pool, laptop, job["job_id"])
        store = pool.coordinator.store
        _, viewer = store.credentials.issue(CredentialKind.API_KEY, "v", pool.clock(), Role.VIEWER)
        as_viewer = {"Authorization": f"Bearer {viewer}"}
        (entry,) = pool.client.get("/api/v1/leaderboard", headers=as_viewer).json()["volunteers"]
        url = f"/api/v1/volunteers/{entry['key']}"
        page = pool.client.get(url, headers=as_viewer).json()
        assert (page["key"], page["name"], page["credit"], page["share"]) == (
            entry["key"],
            "test",
            500.0,
            1.0,
        )
        assert page["chunks"] == entry["chunks"] > 1 and page["total_credit"] == 500.0
        # Its workers, the one that earned first, each with what it holds.
        assert [(w["name"], w["credit"]) for w in page["workers"]] == [
            ("laptop", 500.0),
            ("idle", 0.0),
        ]
        assert page["workers"][0]["energy_kwh"] == page["energy_kwh"] > 0
        # Its latest entries, newest first, as many as asked.
        latest = pool.client.get(url, params={"entries": 1}, headers=as_viewer).json()
        everything = store.credit_entries()
        assert [e["entry_id"] for e in latest["entries"]] == [everything[-1].entry_id]
        assert latest["entries"][0]["kind"] == "grant"
        assert latest["entries"][0]["worker_name"] == "laptop"
        assert sum(e["credit"] for e in page["entries"]) == 500.0
        # Bad requests: a problem document, for an unknown volunteer too.
        assert_problem(pool.client.get("/api/v1/volunteers/nobody", headers=as_viewer), 404)
        for params in ({"entries": 0}, {"entries": 201}, {"entries": "all"}):
            assert_problem(pool.client.get(url, params=params), 422)
        assert_problem(pool.client.get("/api/v1/volunteers/" + "x" * 101), 422)
        assert_problem(pool.client.get(url, headers={"Authorization": "Bearer nope"}), 401)


def test_bad_statement_requests_are_refused_and_only_admins_may_ask() -> None:
    with open_pool() as pool:
        _refused(pool)


def _refused(pool: Pool) -> None:
    for params in (
        {"by": "planet"},
        {"rate_per_kwh": -1},
        {"since_s": 10, "until_s": 5},
        {"since_s": "yesterday"},
    ):
        assert_problem(pool.client.get("/api/v1/credit", params=params), 422)
    store = pool.coordinator.store
    _, viewer = store.credentials.issue(CredentialKind.API_KEY, "v", pool.clock(), Role.VIEWER)
    refused = pool.client.get("/api/v1/credit", headers={"Authorization": f"Bearer {viewer}"})
    assert_problem(refused, 403)


def test_a_workers_own_power_is_taken_at_enrolment_and_rejoin_within_limits() -> None:
    with open_pool() as pool:
        body = {"name": "rig", "cores": 2, "kinds": ["sum"], "join_token": pool.join_token}
        for watts in (0.05, 500.5, "hot", True):
            refused = pool.client.post("/api/v1/workers", json={**body, "watts_per_core": watts})
            assert_problem(refused, 422)
        assert pool.coordinator.store.list_workers() == []
        enrolled = pool.client.post("/api/v1/workers", json={**body, "watts_per_core": 45.0})
        assert enrolled.status_code == 201, enrolled.text
        worker_id, secret = enrolled.json()["worker_id"], enrolled.json()["secret"]
        auth = {"Authorization": f"Bearer {secret}"}
        rejoin = f"/api/v1/workers/{worker_id}/rejoin"
        profile = {"cores": 2, "kinds": ["sum"]}
        too_low = {**profile, "watts_per_core": 0}
        assert_problem(pool.client.post(rejoin, json=too_low, headers=auth), 422)
        (worker,) = pool.coordinator.store.list_workers()
        assert worker.watts_per_core == 45.0
        # The volunteer page shows the figure it gave.
        token = worker.token_id
        page = pool.client.get(f"/api/v1/volunteers/{token}").json()
        assert page["workers"][0]["watts_per_core"] == 45.0
        answer = pool.client.post(rejoin, json={**profile, "watts_per_core": 7.0}, headers=auth)
        assert answer.status_code == 200, answer.text
        assert pool.coordinator.store.list_workers()[0].watts_per_core == 7.0
