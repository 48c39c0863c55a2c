"""A real worker agent (compute processes and all) running wasm jobs against an in-process
coordinator: it offers wasm only with its owner's consent, fetches a job's module and input
once, resumes a cut-off download, drops bytes that do not hash to the job's, and keeps
working after a module that had to be stopped."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx

from hydracompute.coordinator.app import create_app
from hydracompute.core.config import SchedulerConfig
from hydracompute.core.models import CredentialKind
from hydracompute.kinds import default_registry
from hydracompute.store import MemoryBackend, Store
from hydracompute.store.content import put_content
from hydracompute.worker.agent import WorkerAgent
from hydracompute.worker.rules import rules_from_values
from tests.wasm_support import LOOP_FOREVER, example, sha256, wasm

CONFIG = SchedulerConfig(target_chunk_s=0.2, heartbeat_s=0.5, max_failures=2)
TEXT = b"".join(b"row %d, with a few words\n" % i for i in range(40_000))  # ~1 MB
LINES = example("linecount")


def scenario(
    tmp_path: Path,
    accept_wasm: bool,
    jobs: list[dict[str, Any]],
    partial: bytes | None = None,
    enough_exchanges: int | None = None,
) -> tuple[list[Any], WorkerAgent, list[str]]:
    """Run an agent until every job in ``jobs`` ends (or, if given, until it made
    ``enough_exchanges``); the jobs as they were then, the agent, and the kinds the pool
    recorded for the worker."""

    async def run() -> tuple[list[Any], WorkerAgent, list[str]]:
        store = Store(MemoryBackend(), default_registry(), CONFIG)
        for blob in (LINES, TEXT, wasm(LOOP_FOREVER)):
            put_content(store.blobs, sha256(blob), [blob], 1 << 30)
        _, token = store.credentials.issue(CredentialKind.JOIN_TOKEN, "t", time.time())
        app = create_app(store)
        cache = tmp_path / "cache"
        if partial is not None:
            (cache / "blobs").mkdir(parents=True, exist_ok=True)
            (cache / "blobs" / f"{sha256(TEXT)}.part").write_bytes(partial)
        agent = WorkerAgent(
            "http://pool",
            1,
            token,
            transport=httpx.ASGITransport(app=app),
            rules=rules_from_values(
                {"priority": "normal", "accept_wasm": accept_wasm}, default_cores=1
            ),
            poll_s=0.05,
            cache_dir=cache,
            wait_s=0.1,
        )
        submitted = [store.submit_job("wasm", job, now=time.time()) for job in jobs]
        task = asyncio.ensure_future(agent.run())
        try:
            deadline = time.monotonic() + 120
            while not all(store.get_job(j.job_id).state.finished for j in submitted):
                assert not task.done(), "the agent gave up"
                assert time.monotonic() < deadline, "the jobs did not end"
                if enough_exchanges is not None and agent.stats.exchanges >= enough_exchanges:
                    break
                await asyncio.sleep(0.02)
        finally:
            agent.stop()
            await asyncio.wait_for(task, 60)
            await app.state.coordinator.stop()
        [worker] = store.list_workers()
        return [store.get_job(j.job_id) for j in submitted], agent, worker.kinds

    return asyncio.run(run())


def line_count_job() -> dict[str, Any]:
    units = -(-len(TEXT) // 65536)
    return {"module": sha256(LINES), "input": sha256(TEXT), "units": units}


def test_a_worker_without_consent_offers_no_wasm_and_its_jobs_wait(tmp_path: Path) -> None:
    [job], agent, offered = scenario(
        tmp_path, accept_wasm=False, jobs=[line_count_job()], enough_exchanges=5
    )
    assert "wasm" not in offered and "pi" in offered
    assert job.state.value == "running" and job.units_done == 0
    assert agent.stats.chunks_done == 0 and agent.blobs is not None and agent.blobs.fetched == 0


def test_a_wasm_job_runs_to_its_exact_answer_fetching_each_file_once(tmp_path: Path) -> None:
    [job], agent, offered = scenario(tmp_path, accept_wasm=True, jobs=[line_count_job()])
    assert "wasm" in offered
    assert job.state.value == "done", job.error
    assert job.answer["values"] == [len(TEXT), 40_000, sum(TEXT)]
    assert agent.stats.chunks_done >= 2  # several chunks, one download of each file
    assert agent.blobs is not None and agent.blobs.fetched == 2 and agent.blobs.resumed == 0
    assert (tmp_path / "cache" / "blobs" / sha256(TEXT)).read_bytes() == TEXT
    assert list((tmp_path / "cache" / "compiled").glob(f"{sha256(LINES)}-*.cwasm"))


def test_a_cut_off_download_is_resumed(tmp_path: Path) -> None:
    half = TEXT[: len(TEXT) // 2]
    [job], agent, _ = scenario(tmp_path, True, [line_count_job()], partial=half)
    assert job.state.value == "done", job.error
    assert job.answer["values"] == [len(TEXT), 40_000, sum(TEXT)]
    assert agent.blobs is not None and agent.blobs.resumed == 1


def test_bytes_that_do_not_hash_to_the_jobs_are_dropped_and_fetched_again(
    tmp_path: Path,
) -> None:
    tampered = b"X" * (len(TEXT) // 2)  # a partial file someone changed
    [job], agent, _ = scenario(tmp_path, True, [line_count_job()], partial=tampered)
    assert job.state.value == "done", job.error
    assert job.answer["values"] == [len(TEXT), 40_000, sum(TEXT)]
    assert agent.blobs is not None and agent.blobs.resumed == 1 and agent.blobs.fetched == 1 + 1


def test_a_module_that_runs_forever_fails_its_job_and_the_worker_works_on(
    tmp_path: Path,
) -> None:
    looping = {"module": sha256(wasm(LOOP_FOREVER)), "units": 4, "fuel_per_unit": 10**6}
    [stuck, fine], agent, _ = scenario(tmp_path, True, [looping, line_count_job()])
    assert stuck.state.value == "failed"
    assert "out of fuel" in (stuck.error or ""), stuck.error
    assert fine.state.value == "done"
    assert fine.answer["values"] == [len(TEXT), 40_000, sum(TEXT)]
    assert agent.stats.chunks_failed >= 1
