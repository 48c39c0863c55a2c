"""The whole HTTP API fuzzed from its own OpenAPI document, with schemathesis.

Every operation gets a coordinator of its own (memory store, a clock that does not move, rate
limits out of the way) with something to act on: an admin API key, sent with every request;
a viewer key and a join token; a worker holding two leases of a running job; a finished and
a cancelled job; and a second worker. Hooks swap generated ids, lease ids, secrets and job
kinds, some of the time, for placeholders of those real ones, which the test resolves, so
requests get past "not found" into the code behind. A worker's own paths, when they name the
enrolled worker, carry its secret instead of the admin key. (Cases that schemathesis makes
without credentials on purpose, to see them refused, go without.)

Each answer must not be a server error and must match the document: a documented status and
content type, a body and headers matching their schemas. The run is bounded (examples per
operation, one event of an event stream, a short heartbeat for long-polled exchanges) and
deterministic. The document itself is checked too: valid OpenAPI 3.1, every refusal a
problem document, every operation's credentials declared.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis import Case, HookContext
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from hydracompute.coordinator.app import create_app
from hydracompute.coordinator.auth import SESSION_COOKIE, SecuritySettings
from hydracompute.coordinator.openapi import REFUSALS
from hydracompute.core.config import SchedulerConfig
from hydracompute.core.models import CredentialKind, JobState, Role
from hydracompute.store import MemoryBackend, ResultReport, Store
from tests.sum_kind import SumKind
from tests.test_api import FakeClock, TestClient, registry_with_pi

JSON = dict[str, Any]

#: A long-polled exchange with nothing to lease is held one heartbeat: keep it short.
# Requests that may be held (exchanges, job status) are held briefly.
CONFIG = SchedulerConfig(target_chunk_s=1.0, heartbeat_s=0.1, max_failures=3, max_wait_s=0.2)
MAX_EXAMPLES = 25
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
FUZZ_CONFIG = schemathesis.Config.from_dict(
    {
        # The same cases on every run; no example database under .hypothesis/examples.
        "seed": 1,
        "generation": {"max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none"},
        # An event stream does not end by itself: read its first event; bound every request.
        "max-stream-events": 1,
        "request-timeout": 5,
    }
)


def open_store() -> Store:
    return Store(MemoryBackend(), registry_with_pi(), CONFIG)


def open_app(store: Store, clock: FakeClock) -> FastAPI:
    security = SecuritySettings(
        api_rate_per_s=1e6, api_burst=1e6, worker_rate_per_s=1e6, worker_burst=1e6
    )
    return create_app(store, clock=clock, security=security)


# The document is the one a coordinator serves at /openapi.json; each test sends to a fresh app.
schema = schemathesis.openapi.from_asgi(
    "/openapi.json", open_app(open_store(), FakeClock()), config=FUZZ_CONFIG
)

# --- real ids: drawn as placeholders by hooks, resolved by the test ---------------------------

#: Placeholders are made of characters that a URL path does not quote.
PLACEHOLDER = re.compile(r"^real\.[a-z]+\.[a-z0-9]+$")
#: Path parameters (by name) that may name something the pool has.
PATH_PLACEHOLDERS: dict[str, tuple[str, ...]] = {
    "job_id": ("real.job.running", "real.job.done", "real.job.cancelled"),
    "worker_id": ("real.worker.fuzz", "real.worker.other"),
    "key_id": ("real.key.viewer",),
    "token_id": ("real.token.join",),
}
LEASE_PLACEHOLDERS = ("real.lease.0", "real.lease.1")
#: Body members (by name, at any depth) that may carry something the pool has.
BODY_PLACEHOLDERS: dict[str, tuple[Any, ...]] = {
    "api_key": ("real.secret.viewer",),
    "join_token": ("real.secret.join",),
    "lease_id": LEASE_PLACEHOLDERS,
    # not placeholders: values the coordinator accepts, to get past "unknown kind"
    "kind": ("sum", "pi"),
    "params": ({"n": 1000}, {"samples": 100_000}),
}


def real_or(value: Any, alternatives: tuple[Any, ...]) -> st.SearchStrategy[Any]:
    return st.sampled_from([value, *alternatives]) if alternatives else st.just(value)


@schema.hook
def flatmap_path_parameters(
    context: HookContext, path_parameters: dict[str, Any] | None
) -> st.SearchStrategy[dict[str, Any] | None]:
    if not path_parameters:
        return st.just(path_parameters)
    return st.fixed_dictionaries(
        {name: real_or(v, PATH_PLACEHOLDERS.get(name, ())) for name, v in path_parameters.items()}
    )


@schema.hook
def flatmap_body(context: HookContext, body: Any) -> st.SearchStrategy[Any]:
    return real_members(body)


def real_members(body: Any) -> st.SearchStrategy[Any]:
    """``body`` with some of its members (results' lease ids too) replaced."""
    if not isinstance(body, dict):
        return st.just(body)
    members = {}
    for name, value in body.items():
        if name == "results" and isinstance(value, list):
            # No results at all, too: a result needs exactly one of output and error, which
            # the document does not say, so most generated ones are refused.
            results = st.tuples(*map(real_members, value)).map(list)
            members[name] = results | st.just([])
        elif name in ("running", "lease_ids") and isinstance(value, list):
            members[name] = st.tuples(*(real_or(v, LEASE_PLACEHOLDERS) for v in value)).map(list)
        else:
            members[name] = real_or(value, BODY_PLACEHOLDERS.get(name, ()))
    return st.fixed_dictionaries(members)


@dataclass
class Pool:
    """A coordinator with something in it, and the real value of each placeholder."""

    app: FastAPI
    admin_key: str
    worker_secret: str
    real: dict[str, str] = field(default_factory=dict)

    def resolve(self, value: Any) -> Any:
        if isinstance(value, str) and PLACEHOLDER.match(value):
            return self.real[value]
        if isinstance(value, dict):
            return {k: self.resolve(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        return value

    def arrange(self, case: Case) -> dict[str, str]:
        """Put the pool's real values into ``case``; returns the headers to send it with."""
        if case.path_parameters:
            case.path_parameters = self.resolve(case.path_parameters)
        case.body = self.resolve(case.body)
        worker_secret = case.operation.definition.raw.get("security") == [{"workerSecret": []}]
        if worker_secret and case.path_parameters["worker_id"] == self.real["real.worker.fuzz"]:
            return {"Authorization": f"Bearer {self.worker_secret}"}
        return {"Authorization": f"Bearer {self.admin_key}"}


def open_pool() -> Pool:
    """A pool with keys, a join token, two workers, and a running, a done and a cancelled job.

    Everything goes straight into the store, before the app (and its store thread) starts.
    """
    clock = FakeClock()
    now = clock()
    store = open_store()
    issue = store.credentials.issue
    admin, admin_key = issue(CredentialKind.API_KEY, "admin", now, Role.ADMIN)
    viewer, viewer_key = issue(CredentialKind.API_KEY, "viewer", now, Role.VIEWER)
    token, join_token = issue(CredentialKind.JOIN_TOKEN, "join", now)
    fuzz, fuzz_secret = store.enrol_worker("fuzz", 2, ["sum", "pi"], now)
    other, _ = store.enrol_worker("other", 1, ["sum"], now)

    done = store.submit_job("sum", {"n": 10}, now, "done", owner=admin.cred_id)
    grants = store.exchange(other.worker_id, [], [], 64, now).leases
    while grants:
        results = [
            ResultReport(g.lease_id, SumKind().compute(g.params, g.start, g.stop), 0.001)
            for g in grants
        ]
        grants = store.exchange(other.worker_id, results, [], 64, now).leases
    assert store.get_job(done.job_id).state is JobState.DONE

    running = store.submit_job("sum", {"n": 10**6}, now, "running", owner=admin.cred_id)
    cancelled = store.submit_job("pi", {"samples": 10**6}, now, "cancelled", owner=admin.cred_id)
    store.cancel_job(cancelled.job_id, now)
    leases = store.exchange(fuzz.worker_id, [], [], len(LEASE_PLACEHOLDERS), now).leases

    real = {
        "real.job.running": running.job_id,
        "real.job.done": done.job_id,
        "real.job.cancelled": cancelled.job_id,
        "real.worker.fuzz": fuzz.worker_id,
        "real.worker.other": other.worker_id,
        "real.key.viewer": viewer.cred_id,
        "real.token.join": token.cred_id,
        "real.secret.viewer": viewer_key,
        "real.secret.join": join_token,
    }
    real.update(zip(LEASE_PLACEHOLDERS, (lease.lease_id for lease in leases), strict=True))
    return Pool(open_app(store, clock), admin_key, fuzz_secret, real)


@pytest.fixture
def pool() -> Pool:
    # Schemathesis starts the app's lifespan with its first request, and its pytest plugin
    # ends it when the test ends.
    return open_pool()


# One pool per operation, shared by that operation's examples on purpose.
@schema.parametrize()
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_no_server_error_and_every_answer_matches_the_document(case: Case, pool: Pool) -> None:
    headers = pool.arrange(case)
    case.call_and_validate(app=pool.app, headers=headers, checks=CHECKS)


# --- the document ----------------------------------------------------------------------------

#: A copy of its own: schemathesis may annotate the one it loaded.
DOCUMENT: JSON = open_app(open_store(), FakeClock()).openapi()
OPERATIONS = [
    (path, method, operation)
    for path, operations in DOCUMENT["paths"].items()
    for method, operation in operations.items()
]


def route_name(path: str, method: str, operation: JSON) -> str:
    """The route's name, from FastAPI's operation id: name, path and method, joined."""
    suffix = re.sub(r"\W", "_", path) + "_" + method
    operation_id: str = operation["operationId"]
    assert operation_id.endswith(suffix)
    return operation_id.removesuffix(suffix)


def test_the_document_is_valid_openapi_3_1_and_served_as_such() -> None:
    assert DOCUMENT["openapi"].startswith("3.1.")
    schemathesis.openapi.from_dict(DOCUMENT).validate()  # against the OpenAPI 3.1 meta-schema
    assert "HTTPValidationError" not in str(DOCUMENT)
    with TestClient(open_app(open_store(), FakeClock())) as client:
        assert client.get("/openapi.json").json() == DOCUMENT


def test_every_documented_route_has_its_refusals_listed_and_no_other() -> None:
    names = {route_name(path, method, op) for path, method, op in OPERATIONS}
    assert set(REFUSALS) == names, "declare each route's refusals in openapi.REFUSALS"


@pytest.mark.parametrize(("path", "method", "operation"), OPERATIONS)
def test_every_refusal_is_a_problem_document(path: str, method: str, operation: JSON) -> None:
    responses: JSON = operation["responses"]
    assert {"4XX", "500", "413"} <= responses.keys()
    name = route_name(path, method, operation)
    assert {str(status) for status in REFUSALS[name]} <= responses.keys()
    for status, response in responses.items():
        if status.startswith("2"):
            continue
        component = response["$ref"].removeprefix("#/components/responses/")
        content = DOCUMENT["components"]["responses"][component]["content"]
        assert list(content) == ["application/problem+json"]


#: Operations without credentials, and those a worker makes with its own secret.
PUBLIC = {"enrol", "sign_in", "sign_out", "certificate_authority", "health", "kinds"}
WORKERS_OWN = {"rejoin", "exchange", "leave", "return_leases", "worker_credit", "fetch_blob"}


@pytest.mark.parametrize(("path", "method", "operation"), OPERATIONS)
def test_every_operation_says_how_it_is_authenticated(
    path: str, method: str, operation: JSON
) -> None:
    headers = [p["name"].lower() for p in operation.get("parameters", []) if p["in"] == "header"]
    assert "authorization" not in headers  # a security requirement says it instead
    name = route_name(path, method, operation)
    if name in PUBLIC:
        assert "security" not in operation
        return
    if name in WORKERS_OWN:
        assert operation["security"] == [{"workerSecret": []}]
    elif name == "whoami":  # answers whether there is a usable credential
        assert operation["security"] == [{"apiKey": []}, {"session": []}, {}]
    else:
        assert operation["security"] == [{"apiKey": []}, {"session": []}]
    assert {"429", "503"} <= operation["responses"].keys()


def test_the_security_schemes_are_bearer_credentials_and_a_session_cookie() -> None:
    schemes = DOCUMENT["components"]["securitySchemes"]
    assert schemes.keys() == {"apiKey", "session", "workerSecret"}
    assert schemes["apiKey"]["scheme"] == schemes["workerSecret"]["scheme"] == "bearer"
    assert (schemes["session"]["in"], schemes["session"]["name"]) == ("cookie", SESSION_COOKIE)


def test_anonymous_read_makes_credentials_optional_for_reading_only() -> None:
    settings = SecuritySettings(anonymous_read=True)
    document = create_app(open_store(), security=settings).openapi()
    jobs = document["paths"]["/api/v1/jobs"]
    assert jobs["get"]["security"] == [{"apiKey": []}, {"session": []}, {}]
    assert jobs["post"]["security"] == [{"apiKey": []}, {"session": []}]
