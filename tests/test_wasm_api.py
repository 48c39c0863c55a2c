"""wasm jobs through the coordinator's HTTP API, in process: blobs uploaded by SHA-256 and
fetched by the workers that need them (resumably), who may submit code, which workers get
it (consent, labels), and every refusal a problem document that changes nothing."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydracompute.coordinator.app import create_app
from hydracompute.coordinator.auth import SecuritySettings
from hydracompute.core.models import CredentialKind, Role
from hydracompute.kinds.pi_kernel import count_hits
from hydracompute.kinds.wasm import WasmKind
from hydracompute.store import MemoryBackend, Store
from tests.sum_kind import sum_registry
from tests.test_api import CONFIG, FakeClock, Pool, TestClient, Volunteer, assert_problem
from tests.wasm_support import UNKNOWN_IMPORT, example, sha256, wasm

JSON = dict[str, Any]
PI = example("pi")
MAX_BLOB_BYTES = 64 * 1024


@contextmanager
def wasm_pool(code_role: Role = Role.ADMIN) -> Iterator[tuple[Pool, str]]:
    """A pool with the sum and wasm kinds, an admin client, and a submitter's key."""
    kinds = sum_registry()
    kinds.register(WasmKind())
    clock = FakeClock()
    store = Store(MemoryBackend(), kinds, CONFIG)
    _, admin = store.credentials.issue(CredentialKind.API_KEY, "admin", clock(), Role.ADMIN)
    _, submitter = store.credentials.issue(CredentialKind.API_KEY, "s", clock(), Role.SUBMITTER)
    _, join_token = store.credentials.issue(CredentialKind.JOIN_TOKEN, "test", clock())
    security = SecuritySettings(
        api_rate_per_s=1e6,
        api_burst=1e6,
        worker_rate_per_s=1e6,
        worker_burst=1e6,
        code_role=code_role,
    )
    app = create_app(store, clock=clock, security=security, max_blob_bytes=MAX_BLOB_BYTES)
    with TestClient(app) as client:
        client.headers["Authorization"] = f"Bearer {admin}"
        yield Pool(app, client, clock, join_token), submitter


def upload(pool: Pool, data: bytes, **headers: str) -> Any:
    return pool.client.put(f"/api/v1/blobs/{sha256(data)}", content=data, headers=headers)


def pi_job(pool: Pool, samples: int = 3 << 20, **extra: Any) -> JSON:
    assert upload(pool, PI).status_code == 201
    params = {"module": sha256(PI), "units": 3, "args": {"seed": 5, "samples": samples}}
    response = pool.client.post("/api/v1/jobs", json={"kind": "wasm", "params": params, **extra})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def run_lease(lease: JSON, tmp_path: Path) -> JSON:
    """A worker's result for a wasm lease, computed in the real sandbox."""
    module = tmp_path / "module.wasm"
    module.write_bytes(PI)
    chunk = lease["chunk"]
    output = WasmKind().compute_files(
        lease["params"], chunk["start"], chunk["stop"], {"module": module}, None
    )
    return {"lease_id": lease["lease_id"], "output": output, "compute_s": 0.01}


def test_blobs_are_stored_only_under_the_hash_of_their_bytes() -> None:
    with wasm_pool() as (pool, _):
        digest = sha256(PI)
        assert pool.client.head(f"/api/v1/blobs/{digest}").status_code == 404
        wrong = pool.client.put(f"/api/v1/blobs/{'0' * 64}", content=PI)
        assert "have SHA-256 " + digest in assert_problem(wrong, 422)["detail"]
        assert pool.client.head(f"/api/v1/blobs/{'0' * 64}").status_code == 404
        stored = upload(pool, PI)
        assert stored.status_code == 201 and stored.json() == {"sha256": digest, "size": len(PI)}
        assert pool.client.head(f"/api/v1/blobs/{digest}").status_code == 200
        assert upload(pool, PI).status_code == 201  # the same bytes again: nothing changes
        assert_problem(pool.client.put("/api/v1/blobs/XYZ", content=b"x"), 422)


def test_blobs_over_the_pools_limit_are_refused_whether_announced_or_streamed() -> None:
    big = b"\1" * (MAX_BLOB_BYTES + 1)
    with wasm_pool() as (pool, _):
        assert_problem(upload(pool, big), 413)

        def pieces() -> Iterator[bytes]:  # no Content-Length: chunked
            yield big[:40_000]
            yield big[40_000:]

        streamed = pool.client.put(f"/api/v1/blobs/{sha256(big)}", content=pieces())
        assert_problem(streamed, 413)
        assert pool.client.head(f"/api/v1/blobs/{sha256(big)}").status_code == 404


def test_only_the_role_the_admin_chose_may_submit_code() -> None:
    with wasm_pool(code_role=Role.ADMIN) as (pool, submitter):
        as_submitter = {"Authorization": f"Bearer {submitter}"}
        refused = pool.refused(
            403, "PUT", f"/api/v1/blobs/{sha256(PI)}", content=PI, headers=as_submitter
        )
        assert "only admins submit code" in refused["detail"]
        assert upload(pool, PI).status_code == 201  # an admin may
        body = {"kind": "wasm", "params": {"module": sha256(PI), "units": 1}}
        pool.refused(403, "POST", "/api/v1/jobs", json=body, headers=as_submitter)
        # Other kinds stay open to submitters.
        sums = {"kind": "sum", "params": {"n": 10}}
        assert pool.client.post("/api/v1/jobs", json=sums, headers=as_submitter).status_code == 201
    with wasm_pool(code_role=Role.SUBMITTER) as (pool, submitter):
        as_submitter = {"Authorization": f"Bearer {submitter}"}
        assert upload(pool, PI, **as_submitter).status_code == 201
        body = {"kind": "wasm", "params": {"module": sha256(PI), "units": 1}}
        assert pool.client.post("/api/v1/jobs", json=body, headers=as_submitter).status_code == 201


def test_a_job_naming_a_blob_the_pool_lacks_is_refused() -> None:
    with wasm_pool() as (pool, _):
        body = {"kind": "wasm", "params": {"module": sha256(PI), "units": 1, "input": "ab" * 32}}
        problem = pool.refused(422, "POST", "/api/v1/jobs", json=body)
        assert set(problem["errors"]) == {"module", "input"}
        assert "upload it first" in problem["errors"]["module"]


def test_a_module_that_breaks_the_abi_is_refused_at_submission() -> None:
    with wasm_pool() as (pool, _):
        for text, reason in (
            (UNKNOWN_IMPORT, "imports env.system"),
            ('(module (memory (export "memory") 1))', "must export hydra_run"),
        ):
            module = wasm(text)
            assert upload(pool, module).status_code == 201
            body = {"kind": "wasm", "params": {"module": sha256(module), "units": 1}}
            problem = pool.refused(422, "POST", "/api/v1/jobs", json=body)
            assert reason in problem["errors"]["module"]
        garbage = b"\0asm\1\0\0\0 not a module"
        assert upload(pool, garbage).status_code == 201
        body = {"kind": "wasm", "params": {"module": sha256(garbage), "units": 1}}
        assert (
            "not a valid WebAssembly module"
            in pool.refused(422, "POST", "/api/v1/jobs", json=body)["detail"]
        )


def test_workers_without_consent_never_get_wasm_chunks(tmp_path: Path) -> None:
    with wasm_pool() as (pool, _):
        job = pi_job(pool)
        reluctant = pool.enrol("reluctant", kinds=("sum",))
        assert pool.exchange(reluctant, want=8)["leases"] == []
        assert "no online worker has kind wasm" in pool.job(job["job_id"])["waiting_reason"]
        willing = pool.enrol("willing", kinds=("sum", "wasm"))
        listed = pool.workers()
        assert not listed[reluctant.worker_id]["accepts_wasm"]
        assert listed[willing.worker_id]["accepts_wasm"]
        leases = pool.exchange(willing, want=8)["leases"]
        assert leases and {lease["kind"] for lease in leases} == {"wasm"}
        for _ in range(20):
            if pool.job(job["job_id"])["state"] == "done":
                break
            pool.clock.advance(0.01)
            results = [run_lease(lease, tmp_path) for lease in leases]
            leases = pool.exchange(willing, results, want=8)["leases"]
            assert pool.exchange(reluctant, want=8)["leases"] == []
        answer = pool.job(job["job_id"])["answer"]
        assert answer["values"] == [count_hits(5, 0, 3 << 20), 3 << 20]


def test_a_job_requiring_labels_goes_only_to_workers_carrying_them() -> None:
    with wasm_pool() as (pool, _):
        job = pool.submit(40, required_labels=["trusted", "site-a"])
        assert job["required_labels"] == ["site-a", "trusted"]
        worker = pool.enrol("lab")
        assert pool.exchange(worker, want=4)["leases"] == []
        reason = pool.job(job["job_id"])["waiting_reason"]
        assert reason == (
            "no online worker with kind sum carries the labels site-a, trusted this job requires"
        )
        labelled = pool.client.post(
            f"/api/v1/workers/{worker.worker_id}/labels", json={"add": ["trusted"]}
        )
        assert labelled.json()["labels"] == ["trusted"]
        assert pool.exchange(worker, want=4)["leases"] == []  # one label of two
        pool.client.post(f"/api/v1/workers/{worker.worker_id}/labels", json={"add": ["site-a"]})
        assert pool.workers()[worker.worker_id]["labels"] == ["site-a", "trusted"]
        assert pool.exchange(worker, want=4)["leases"]
        assert pool.job(job["job_id"])["waiting_reason"] is None
        # Taking a label away stops new chunks.
        pool.client.post(f"/api/v1/workers/{worker.worker_id}/labels", json={"remove": ["trusted"]})
        assert pool.exchange(worker, want=4)["leases"] == []


def test_labelling_is_for_admins_and_bad_labels_are_refused() -> None:
    with wasm_pool() as (pool, submitter):
        worker = pool.enrol("lab")
        url = f"/api/v1/workers/{worker.worker_id}/labels"
        pool.refused(
            403,
            "POST",
            url,
            json={"add": ["trusted"]},
            headers={"Authorization": f"Bearer {submitter}"},
        )
        pool.refused(422, "POST", url, json={"add": ["Not A Label"]})
        pool.refused(422, "POST", url, json={"add": [f"l{i}" for i in range(17)]})
        pool.refused(404, "POST", "/api/v1/workers/w-nobody/labels", json={"add": ["trusted"]})
        pool.client.post(url, json={"add": [f"l{i}" for i in range(16)]})
        pool.refused(422, "POST", url, json={"add": ["one-too-many"]})
        body = {"kind": "sum", "params": {"n": 1}, "required_labels": ["BAD"]}
        pool.refused(422, "POST", "/api/v1/jobs", json=body)


def test_a_worker_fetches_only_what_its_leases_need_and_may_resume() -> None:
    with wasm_pool() as (pool, _):
        assert upload(pool, b"an unrelated input").status_code == 201
        job = pi_job(pool)
        worker = pool.enrol("w", kinds=("wasm",))
        url = f"/api/v1/workers/{worker.worker_id}/blobs/{sha256(PI)}"
        assert_problem(pool.client.get(url, headers=worker.auth), 403)  # no lease yet
        assert pool.exchange(worker, want=1)["leases"][0]["job_id"] == job["job_id"]
        whole = pool.client.get(url, headers=worker.auth)
        assert whole.status_code == 200 and whole.content == PI
        assert whole.headers["accept-ranges"] == "bytes"
        rest = pool.client.get(url, headers={**worker.auth, "Range": "bytes=10-"})
        assert rest.status_code == 206 and rest.content == PI[10:]
        assert rest.headers["content-range"] == f"bytes 10-{len(PI) - 1}/{len(PI)}"
        assert_problem(
            pool.client.get(url, headers={**worker.auth, "Range": f"bytes={len(PI)}-"}), 416
        )
        assert_problem(pool.client.get(url, headers={**worker.auth, "Range": "lines=1-"}), 422)
        other = f"/api/v1/workers/{worker.worker_id}/blobs/{sha256(b'an unrelated input')}"
        assert_problem(pool.client.get(other, headers=worker.auth), 403)
        assert_problem(pool.client.get(url), 401)  # not the worker's secret
        intruder = Volunteer(worker.worker_id, "not-the-secret")
        assert_problem(pool.client.get(url, headers=intruder.auth), 401)


def test_a_wasm_output_the_kind_cannot_merge_is_refused() -> None:
    with wasm_pool() as (pool, _):
        pi_job(pool)
        worker = pool.enrol("w", kinds=("wasm",))
        [lease] = pool.exchange(worker, want=1)["leases"]
        seven = base64.b64encode(b"7 bytes").decode()
        result = {"lease_id": lease["lease_id"], "output": {"data": seven}, "compute_s": 0.1}
        answer = pool.client.post(
            worker.exchange_url, json={"results": [result], "want": 0}, headers=worker.auth
        )
        problem = assert_problem(answer, 422)
        assert "whole number of 8-byte values" in problem["detail"]
        assert problem["lease_id"] == lease["lease_id"]
