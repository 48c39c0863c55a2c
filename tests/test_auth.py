"""Credentials over HTTP: API keys and roles, join tokens, revocation, sessions, rate limits.

Every refusal is a 401/403/429 problem document and changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from hydracompute.coordinator.app import create_app
from hydracompute.coordinator.auth import CSRF_HEADER, SESSION_COOKIE, SecuritySettings
from hydracompute.coordinator.ratelimit import RateLimiter
from hydracompute.core.models import CredentialKind, Role
from hydracompute.errors import TooManyRequests
from hydracompute.store import MemoryBackend, Store
from hydracompute.store import pool as pool_module
from tests.test_api import (
    CONFIG,
    JSON,
    UNLIMITED,
    FakeClock,
    TestClient,
    assert_problem,
    registry_with_pi,
    result_for,
)

DAY = 86400.0


@dataclass
class Pool:
    client: TestClient
    clock: FakeClock
    store: Store
    admin: str
    join_token: str

    def key(self, role: Role, expires_s: float | None = None) -> str:
        _, text = self.store.credentials.issue(
            CredentialKind.API_KEY, role.value, self.clock(), role, expires_s
        )
        return text

    def as_key(self, key: str | None) -> dict[str, str]:
        # An explicit empty header overrides nothing in httpx; use a fresh mapping.
        return {"Authorization": f"Bearer {key}"} if key else {"Authorization": ""}

    def submit(self, key: str, n: int = 10) -> JSON:
        response = self.client.post(
            "/api/v1/jobs", json={"kind": "sum", "params": {"n": n}}, headers=self.as_key(key)
        )
        assert response.status_code == 201, response.text
        return response.json()  # type: ignore[no-any-return]

    def enrol(self, token: str) -> JSON:
        body = {"name": "w", "cores": 1, "kinds": ["sum"], "join_token": token}
        return self.client.post("/api/v1/workers", json=body).json()  # type: ignore[no-any-return]

    def snapshot(self) -> object:
        headers = self.as_key(self.admin)
        return (
            self.client.get("/api/v1/jobs", headers=headers).json(),
            self.client.get("/api/v1/workers", headers=headers).json(),
            self.client.get("/api/v1/keys", headers=headers).json(),
            self.client.get("/api/v1/join-tokens", headers=headers).json(),
        )

    def refused(self, status: int, method: str, url: str, **kwargs: object) -> JSON:
        before = self.snapshot()
        problem = assert_problem(self.client.request(method, url, **kwargs), status)  # type: ignore[arg-type]
        assert self.snapshot() == before
        return problem


def open_pool(security: SecuritySettings = UNLIMITED) -> Iterator[Pool]:
    clock = FakeClock()
    store = Store(MemoryBackend(), registry_with_pi(), CONFIG)
    _, admin = store.credentials.issue(CredentialKind.API_KEY, "admin", clock(), Role.ADMIN)
    _, token = store.credentials.issue(CredentialKind.JOIN_TOKEN, "t", clock())
    app = create_app(store, clock=clock, security=security)
    with TestClient(app) as client:
        yield Pool(client, clock, store, admin, token)


@pytest.fixture
def pool() -> Iterator[Pool]:
    yield from open_pool()


# --- API keys ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        "",
        "Bearer",
        "Bearer nonsense",
        "Basic abc",
        "Bearer hck_k-000000000000_wrong",
        "Bearer hcj_t-000000000000_x",
    ],
)
def test_missing_or_wrong_keys_are_401(pool: Pool, authorization: str) -> None:
    headers = {"Authorization": authorization}
    for method, url, body in (
        ("GET", "/api/v1/jobs", None),
        ("POST", "/api/v1/jobs", {"kind": "sum", "params": {"n": 1}}),
        ("GET", "/api/v1/workers", None),
        ("POST", "/api/v1/keys", {"role": "admin"}),
    ):
        response = pool.client.request(method, url, json=body, headers=headers)
        assert_problem(response, 401)
        assert response.headers["www-authenticate"] == "Bearer"
    assert pool.snapshot()[0] == {"jobs": []}  # type: ignore[index]


def test_a_join_token_is_not_an_api_key(pool: Pool) -> None:
    pool.refused(401, "GET", "/api/v1/jobs", headers=pool.as_key(pool.join_token))


def test_expired_and_revoked_keys_are_401(pool: Pool) -> None:
    expiring = pool.key(Role.SUBMITTER, expires_s=pool.clock() + DAY)
    revoked = pool.key(Role.SUBMITTER)
    assert pool.client.get("/api/v1/jobs", headers=pool.as_key(expiring)).status_code == 200
    key_id = revoked.split("_")[1]
    response = pool.client.post(f"/api/v1/keys/{key_id}/revoke", headers=pool.as_key(pool.admin))
    assert response.json()["revoked"] is True
    pool.clock.advance(DAY)
    for key in (expiring, revoked):
        pool.refused(
            401,
            "POST",
            "/api/v1/jobs",
            json={"kind": "sum", "params": {"n": 1}},
            headers=pool.as_key(key),
        )


def test_roles(pool: Pool) -> None:
    viewer, alice, bob = pool.key(Role.VIEWER), pool.key(Role.SUBMITTER), pool.key(Role.SUBMITTER)
    job_a, job_b = pool.submit(alice), pool.submit(bob)
    # A viewer reads everything and changes nothing.
    listed = pool.client.get("/api/v1/jobs", headers=pool.as_key(viewer)).json()["jobs"]
    assert {j["job_id"] for j in listed} == {job_a["job_id"], job_b["job_id"]}
    pool.refused(
        403,
        "POST",
        "/api/v1/jobs",
        json={"kind": "sum", "params": {"n": 1}},
        headers=pool.as_key(viewer),
    )
    pool.refused(403, "POST", f"/api/v1/jobs/{job_a['job_id']}/cancel", headers=pool.as_key(viewer))
    # A submitter sees and cancels only its own jobs; others' do not exist for it.
    mine = pool.client.get("/api/v1/jobs", headers=pool.as_key(alice)).json()["jobs"]
    assert [j["job_id"] for j in mine] == [job_a["job_id"]]
    for url in (f"/api/v1/jobs/{job_b['job_id']}", f"/api/v1/jobs/{job_b['job_id']}/result"):
        pool.refused(404, "GET", url, headers=pool.as_key(alice))
    pool.refused(404, "POST", f"/api/v1/jobs/{job_b['job_id']}/cancel", headers=pool.as_key(alice))
    cancelled = pool.client.post(
        f"/api/v1/jobs/{job_a['job_id']}/cancel", headers=pool.as_key(alice)
    )
    assert cancelled.json()["state"] == "cancelled"
    # Only admins manage credentials and workers; an admin may cancel any job.
    for who in (viewer, alice):
        pool.refused(403, "POST", "/api/v1/keys", json={"role": "admin"}, headers=pool.as_key(who))
        pool.refused(403, "GET", "/api/v1/join-tokens", headers=pool.as_key(who))
    response = pool.client.post(
        f"/api/v1/jobs/{job_b['job_id']}/cancel", headers=pool.as_key(pool.admin)
    )
    assert response.json()["state"] == "cancelled"


def test_admin_issues_keys_shown_once(pool: Pool) -> None:
    response = pool.client.post(
        "/api/v1/keys", json={"role": "submitter", "name": "ci"}, headers=pool.as_key(pool.admin)
    )
    assert response.status_code == 201
    issued = response.json()
    assert issued["secret"].startswith(f"hck_{issued['id']}_")
    listed = pool.client.get("/api/v1/keys", headers=pool.as_key(pool.admin)).json()
    assert issued["id"] in [k["id"] for k in listed["credentials"]]
    assert issued["secret"] not in str(listed)
    pool.submit(issued["secret"])


def test_submitter_job_quota(pool: Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool_module, "MAX_RUNNING_JOBS_PER_OWNER", 2)
    alice = pool.key(Role.SUBMITTER)
    pool.submit(alice)
    pool.submit(alice)
    pool.refused(
        429,
        "POST",
        "/api/v1/jobs",
        json={"kind": "sum", "params": {"n": 1}},
        headers=pool.as_key(alice),
    )
    pool.submit(pool.key(Role.SUBMITTER))  # the quota is per submitter


# --- join tokens and workers ------------------------------------------------------------------


def test_enrolment_needs_a_usable_join_token(pool: Pool) -> None:
    admin = pool.as_key(pool.admin)
    limited = pool.client.post("/api/v1/join-tokens", json={"max_uses": 1}, headers=admin).json()
    expiring = pool.client.post(
        "/api/v1/join-tokens", json={"expires_in_s": 60}, headers=admin
    ).json()
    revoked = pool.client.post("/api/v1/join-tokens", json={}, headers=admin).json()
    pool.client.post(f"/api/v1/join-tokens/{revoked['id']}/revoke", headers=admin)
    assert "worker_id" in pool.enrol(limited["secret"])
    pool.clock.advance(61)
    body = {"name": "w", "cores": 1, "kinds": ["sum"]}
    for token in (
        "",
        "hcj_nope",
        limited["secret"],
        expiring["secret"],
        revoked["secret"],
        pool.admin,
    ):
        pool.refused(401, "POST", "/api/v1/workers", json={**body, "join_token": token})
    tokens = pool.client.get("/api/v1/join-tokens", headers=admin).json()["credentials"]
    assert {t["id"]: t["uses"] for t in tokens}[limited["id"]] == 1


def test_revoked_worker_is_refused_and_its_chunks_go_back(pool: Pool) -> None:
    pool.submit(pool.admin, n=100)
    worker = pool.enrol(pool.join_token)
    auth = {"Authorization": f"Bearer {worker['secret']}"}
    url = f"/api/v1/workers/{worker['worker_id']}/exchange"
    (lease,) = pool.client.post(url, json={"want": 1}, headers=auth).json()["leases"]
    response = pool.client.post(
        f"/api/v1/workers/{worker['worker_id']}/revoke", headers=pool.as_key(pool.admin)
    )
    assert response.status_code == 204
    pool.refused(401, "POST", url, json={"results": [result_for(lease)]}, headers=auth)
    other = pool.enrol(pool.join_token)
    other_url = f"/api/v1/workers/{other['worker_id']}/exchange"
    (again,) = pool.client.post(
        other_url, json={"want": 1}, headers={"Authorization": f"Bearer {other['secret']}"}
    ).json()["leases"]
    assert again["chunk"] == lease["chunk"]
    listed = pool.client.get("/api/v1/workers", headers=pool.as_key(pool.admin)).json()
    assert {w["worker_id"]: w["revoked"] for w in listed["workers"]}[worker["worker_id"]]


# --- sessions ------------------------------------------------------------------------------


def test_session_cookie_with_csrf_token(pool: Pool) -> None:
    alice = pool.key(Role.SUBMITTER)
    signed_in = pool.client.post(
        "/api/v1/session", json={"api_key": alice}, headers={"Authorization": ""}
    )
    assert signed_in.status_code == 200
    cookie = signed_in.cookies[SESSION_COOKIE]
    set_cookie = signed_in.headers["set-cookie"].lower()
    assert "httponly" in set_cookie and "samesite=strict" in set_cookie and "secure" in set_cookie
    csrf = signed_in.json()["csrf_token"]
    no_key = {"Authorization": ""}
    pool.client.cookies.set(SESSION_COOKIE, cookie)
    me = pool.client.get("/api/v1/session", headers=no_key).json()
    assert me["role"] == "submitter"
    body = {"kind": "sum", "params": {"n": 1}}
    pool.refused(403, "POST", "/api/v1/jobs", json=body, headers=no_key)
    pool.refused(403, "POST", "/api/v1/jobs", json=body, headers={**no_key, CSRF_HEADER: "x"})
    created = pool.client.post("/api/v1/jobs", json=body, headers={**no_key, CSRF_HEADER: csrf})
    assert created.status_code == 201
    # A forged or tampered cookie is refused; so is a session whose key was revoked.
    pool.client.cookies.set(SESSION_COOKIE, cookie[:-2] + "xx")
    pool.refused(401, "GET", "/api/v1/jobs", headers=no_key)
    pool.client.cookies.set(SESSION_COOKIE, cookie)
    pool.client.post(f"/api/v1/keys/{alice.split('_')[1]}/revoke", headers=pool.as_key(pool.admin))
    pool.refused(401, "GET", "/api/v1/jobs", headers=no_key)


def test_session_expires(pool: Pool) -> None:
    response = pool.client.post("/api/v1/session", json={"api_key": pool.admin})
    pool.client.cookies.set(SESSION_COOKIE, response.cookies[SESSION_COOKIE])
    pool.clock.advance(13 * 3600)
    pool.refused(401, "GET", "/api/v1/jobs", headers={"Authorization": ""})


def test_sign_in_with_a_wrong_key_is_401(pool: Pool) -> None:
    pool.refused(401, "POST", "/api/v1/session", json={"api_key": "hck_k-0_nope"})


# --- anonymous access, open endpoints, rate limits ---------------------------------------


def test_anonymous_read_only_when_enabled() -> None:
    for opened in open_pool(
        SecuritySettings(anonymous_read=True, api_rate_per_s=1e6, api_burst=1e6)
    ):
        nobody = {"Authorization": ""}
        assert opened.client.get("/api/v1/jobs", headers=nobody).status_code == 200
        assert opened.client.get("/api/v1/workers", headers=nobody).status_code == 200
        opened.refused(
            401, "POST", "/api/v1/jobs", json={"kind": "sum", "params": {"n": 1}}, headers=nobody
        )


def test_health_and_certificate_authority_need_no_key(pool: Pool) -> None:
    nobody = {"Authorization": ""}
    assert pool.client.get("/api/v1/health", headers=nobody).status_code == 200
    assert pool.client.get("/api/v1/kinds", headers=nobody).status_code == 200
    # No TLS here, so no authority to serve.
    assert_problem(pool.client.get("/api/v1/tls/ca.pem", headers=nobody), 404)


def test_rate_limit_answers_429_with_retry_after() -> None:
    for limited in open_pool(SecuritySettings(api_rate_per_s=1.0, api_burst=3.0)):
        headers = limited.as_key(limited.admin)
        codes = [limited.client.get("/api/v1/jobs", headers=headers).status_code for _ in range(5)]
        assert codes[:3] == [200, 200, 200]
        assert 429 in codes[3:]
        response = limited.client.get("/api/v1/jobs", headers=headers)
        assert_problem(response, 429)
        assert int(response.headers["retry-after"]) >= 1


def test_token_bucket_refills_at_its_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(rate_per_s=2.0, burst=2.0, clock=lambda: now[0])
    limiter.take("a")
    limiter.take("a")
    with pytest.raises(TooManyRequests) as refused:
        limiter.take("a")
    assert refused.value.extra["retry_after_s"] == 1
    limiter.take("b")  # buckets are per key
    now[0] = 0.5
    limiter.take("a")
    with pytest.raises(TooManyRequests):
        limiter.take("a")


def test_a_new_tab_gets_the_csrf_token_of_its_session(pool: Pool) -> None:
    signed_in = pool.client.post("/api/v1/session", json={"api_key": pool.admin})
    pool.client.cookies.set(SESSION_COOKIE, signed_in.cookies[SESSION_COOKIE])
    me = pool.client.get("/api/v1/session", headers={"Authorization": ""}).json()
    assert me["signed_in"] and me["csrf_token"] == signed_in.json()["csrf_token"]
    # Without a session (key in the header), there is no token to give.
    pool.client.cookies.clear()
    assert (
        pool.client.get("/api/v1/session", headers=pool.as_key(pool.admin)).json()["csrf_token"]
        is None
    )
    nobody = pool.client.get("/api/v1/session", headers={"Authorization": ""}).json()
    assert nobody["signed_in"] is False
