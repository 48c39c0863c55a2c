"""What an outsider learns and costs the coordinator: authentication before the body, 405
answers naming every method, strict integers, the exchange's result rule in the schema."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from hydracompute.coordinator.schemas import ResultIn
from tests.test_api import Pool, assert_problem, open_pool


@pytest.fixture
def pool() -> Iterator[Pool]:
    with open_pool() as opened:
        yield opened


MALFORMED = b'{"kind": "sum", "params": {"n": '  # cut short: not JSON
POSTS = ["/api/v1/jobs", "/api/v1/keys", "/api/v1/join-tokens"]


@pytest.mark.parametrize("path", POSTS)
@pytest.mark.parametrize("authorization", [None, "Bearer hck_k-0000_wrong", "Basic abc"])
def test_unauthenticated_changes_get_401_whatever_their_body(
    pool: Pool, path: str, authorization: str | None
) -> None:
    headers = {"content-type": "application/json"}
    if authorization is not None:
        headers["Authorization"] = authorization
    for body in (MALFORMED, b'{"unknown": 1}', b"x" * 300_000):
        response = pool.client.post(path, content=body, headers=headers)
        if authorization is None:  # the client's own header is removed for this one
            response = pool.client.post(
                path, content=body, headers={**headers, "Authorization": ""}
            )
        assert_problem(response, 401)


def test_a_worker_request_without_its_secret_gets_401_before_its_body(pool: Pool) -> None:
    worker = pool.enrol()
    anonymous = {"content-type": "application/json", "Authorization": ""}
    for path in (worker.exchange_url, f"/api/v1/workers/{worker.worker_id}/return"):
        for body in (MALFORMED, b"[" * 10_000, b"x" * 300_000):
            pool.refused(401, "POST", path, content=body, headers=anonymous)
        wrong = {**anonymous, "Authorization": "Bearer not-the-secret"}
        pool.refused(401, "POST", path, content=MALFORMED, headers=wrong)
    # With its secret, the same malformed body is what is refused.
    response = pool.client.post(
        f"/api/v1/workers/{worker.worker_id}/return",
        content=MALFORMED,
        headers={"content-type": "application/json", **worker.auth},
    )
    assert_problem(response, 422)


@pytest.mark.parametrize(
    ("path", "methods"),
    [
        ("/api/v1/jobs", {"GET", "POST"}),
        ("/api/v1/keys", {"GET", "POST"}),
        ("/api/v1/join-tokens", {"GET", "POST"}),
        ("/api/v1/workers", {"GET", "POST"}),
        ("/api/v1/session", {"GET", "POST", "DELETE"}),
    ],
)
def test_405_lists_every_method_of_the_resource(pool: Pool, path: str, methods: set[str]) -> None:
    response = pool.client.request("PATCH", path, json={})
    assert_problem(response, 405)
    assert {m.strip() for m in response.headers["allow"].split(",")} == methods


def test_whole_number_floats_are_refused_where_an_integer_is_due(pool: Pool) -> None:
    body = {"name": "w", "cores": 36.0, "kinds": ["sum"], "join_token": pool.join_token}
    problem = pool.refused(422, "POST", "/api/v1/workers", json=body)
    assert "cores" in problem["detail"]
    pool.refused(422, "POST", "/api/v1/join-tokens", json={"max_uses": 3.0})
    pool.refused(422, "POST", "/api/v1/jobs", json={"kind": "sum", "params": {}, "quorum": 1.0})
    # A job's parameters are the kind's to read: a whole float is a number like another.
    response = pool.client.post("/api/v1/jobs", json={"kind": "pi", "params": {"samples": 1e8}})
    assert response.status_code == 201, response.text


def test_the_schema_says_a_result_has_exactly_one_of_output_and_error(pool: Pool) -> None:
    schema = pool.client.get("/api/v1/openapi.json")
    if schema.status_code == 404:
        schema = pool.client.get("/openapi.json")
    text = json.dumps(schema.json())
    assert "a computed chunk" in text and "a failed chunk" in text
    variants = ResultIn.model_json_schema()["oneOf"]
    assert [v["required"] for v in variants] == [["output"], ["error"]]
