"""The volunteer agent: enrol, then exchange results for chunks until told to stop.

The loop keeps every core busy. Each exchange carries the results finished since the last
one, renews the leases still running (the heartbeat) and asks for as many chunks as there
are free cores. When the worker is idle it long-polls: the coordinator answers as soon as
work appears. While the coordinator is unreachable the agent keeps computing, keeps its
results, and retries with exponential backoff and jitter.
"""

from __future__ import annotations

import asyncio
import json
import logging
import platform
import random
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from hydracompute import __version__, tls
from hydracompute.errors import (
    CoordinatorUnavailable,
    HydraError,
    Unauthorized,
    error_from_problem,
)
from hydracompute.kinds import default_registry
from hydracompute.private_files import write_private
from hydracompute.worker.executor import ChunkExecutor, ChunkRun

log = logging.getLogger("hydracompute.worker")

MAX_BACKOFF_S = 30.0


def load_identity(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def save_identity(path: Path, identity: dict[str, Any]) -> None:
    """Keep the worker's credentials, readable by its owner only."""
    write_private(path, json.dumps(identity))


@dataclass
class Running:
    lease: Mapping[str, Any]
    task: asyncio.Future[ChunkRun]
    abandoned: bool = False


@dataclass
class WorkerStats:
    chunks_done: int = 0
    chunks_failed: int = 0
    exchanges: int = 0
    reconnects: int = 0
    kinds: dict[str, int] = field(default_factory=dict)


class WorkerAgent:
    """Runs chunks for the coordinator at ``url`` on ``cores`` processes.

    Args:
        url: the coordinator's base URL, e.g. ``https://pool.example:8765``.
        cores: compute processes (and so chunks in flight).
        join_token: the pool's join token, used once to enrol.
        verify: how to check the coordinator's certificate: an SSL context pinning its
            CA (see :func:`hydracompute.tls.verification`), ``True`` for the system's
            trusted CAs.
        name: shown in the pool's worker list; the host name by default.
        identity_file: where to keep the worker's id and secret between runs (mode 0600),
            so that a restart rejoins as the same worker instead of enrolling again.
        transport: an httpx transport, e.g. ``httpx.ASGITransport(app)`` in tests.
        wait_s: longest long-poll to ask for while idle.
    """

    def __init__(
        self,
        url: str,
        cores: int,
        join_token: str,
        verify: ssl.SSLContext | bool = True,
        name: str | None = None,
        identity_file: Path | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        wait_s: float = 20.0,
    ) -> None:
        self.identity_file = identity_file
        self.url = url.rstrip("/")
        self.join_token = join_token
        self.verify = verify
        self.cores = cores
        self.name = name or platform.node() or "worker"
        self.kinds = default_registry().names()
        self.wait_s = wait_s
        self.stats = WorkerStats()
        self._transport = transport
        self._stop = asyncio.Event()
        self._running: dict[str, Running] = {}
        self._unsent: list[dict[str, Any]] = []
        self._worker_id = ""
        self._secret = ""
        self._heartbeat_s = 5.0

    def stop(self) -> None:
        """Ask the loop to finish: results are sent, unfinished leases given back."""
        self._stop.set()

    async def run(self, executor: ChunkExecutor | None = None) -> None:
        """Enrol and work until :meth:`stop`; then return unfinished leases and exit."""
        own_executor = executor is None
        if executor is None:
            executor = ChunkExecutor(self.cores)
            await asyncio.to_thread(executor.start)
        timeout = httpx.Timeout(30.0, read=self.wait_s + 30.0)
        try:
            async with httpx.AsyncClient(
                base_url=self.url, timeout=timeout, transport=self._transport, verify=self.verify
            ) as http:
                self._http = http
                await self._enrol()
                stop_wait = asyncio.ensure_future(self._stop.wait())
                while not self._stop.is_set():
                    # Stopping interrupts even a long-poll; a result whose answer is lost
                    # that way is resent on leaving, harmlessly (results are idempotent).
                    cycle = asyncio.ensure_future(self._cycle(executor))
                    await asyncio.wait([cycle, stop_wait], return_when=asyncio.FIRST_COMPLETED)
                    if not cycle.done():
                        cycle.cancel()
                        await asyncio.gather(cycle, return_exceptions=True)
                    elif cycle.exception() is not None:
                        stop_wait.cancel()
                        raise cycle.exception()  # type: ignore[misc]
                await self._leave()
        finally:
            if own_executor:
                await asyncio.to_thread(executor.shutdown, True)

    async def _request(self, path: str, body: Mapping[str, Any]) -> Any:
        """POST with retries while the coordinator is unreachable or failing (5xx).

        Raises:
            HydraError: the coordinator refused the request (4xx).
        """
        attempt = 0
        while True:
            try:
                headers = {"Authorization": f"Bearer {self._secret}"} if self._secret else {}
                response = await self._http.post(path, json=body, headers=headers)
                if response.status_code < 500:
                    break
                problem: Any = response.json() if response.content else {}
                reason = str(error_from_problem(response.status_code, problem))
            except (httpx.TransportError, ValueError) as exc:
                if tls.is_certificate_error(exc):  # not transient: never retried
                    raise tls.CertificateMismatch(
                        f"the coordinator at {self.url} presented a certificate its pinned "
                        f"authority did not sign: {exc}"
                    ) from exc
                reason = f"{type(exc).__name__}: {exc}"
            if self._stop.is_set() and attempt >= 2:
                raise CoordinatorUnavailable(f"giving up while stopping: {reason}")
            attempt += 1
            self.stats.reconnects += 1
            delay = random.uniform(0, min(MAX_BACKOFF_S, 0.25 * 2**attempt))
            log.warning("coordinator unavailable (%s); retrying in %.1f s", reason, delay)
            await asyncio.sleep(delay)
        if response.status_code >= 400:
            raise error_from_problem(response.status_code, response.json())
        return response.json() if response.content else None

    async def _enrol(self) -> None:
        """Take up the identity saved by an earlier run, or enrol with the join token."""
        if await self._resume():
            return
        answer = await self._request(
            "/api/v1/workers",
            {
                "join_token": self.join_token,
                "name": self.name[:200],
                "cores": self.cores,
                "kinds": self.kinds,
                "version": __version__,
            },
        )
        self._worker_id = answer["worker_id"]
        self._secret = answer["secret"]
        self._heartbeat_s = float(answer["heartbeat_s"])
        if self.identity_file is not None:
            save_identity(self.identity_file, self._identity())
        log.info(
            "enrolled as %s with %d core(s) for %s",
            self._worker_id,
            self.cores,
            ", ".join(self.kinds),
        )

    def _identity(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "worker_id": self._worker_id,
            "secret": self._secret,
            "cores": self.cores,
            "kinds": self.kinds,
        }

    async def _resume(self) -> bool:
        """Reuse the saved identity if it is for this pool and set-up and still accepted."""
        saved = load_identity(self.identity_file) if self.identity_file else None
        if not saved or {k: saved.get(k) for k in ("url", "cores", "kinds")} != {
            "url": self.url,
            "cores": self.cores,
            "kinds": self.kinds,
        }:
            return False
        self._worker_id, self._secret = str(saved["worker_id"]), str(saved["secret"])
        try:
            answer = await self._request(f"/api/v1/workers/{self._worker_id}/exchange", {"want": 0})
        except Unauthorized:  # revoked, or the pool forgot it: enrol again
            self._worker_id = self._secret = ""
            return False
        self._heartbeat_s = float(answer["next_exchange_s"])
        log.info("rejoined as %s", self._worker_id)
        return True

    async def _cycle(self, executor: ChunkExecutor) -> None:
        """One exchange, then wait for a chunk to finish or the heartbeat to come due."""
        busy = len(self._running)
        idle = busy == 0 and not self._unsent
        answer = await self._exchange(want=self.cores - busy, wait_s=self.wait_s if idle else 0.0)
        for lease_id in answer["abandon"]:
            if lease_id in self._running:
                self._running[lease_id].abandoned = True
        for lease in answer["leases"]:
            chunk = lease["chunk"]
            future = executor.submit(lease["kind"], lease["params"], chunk["start"], chunk["stop"])
            self._running[lease["lease_id"]] = Running(lease, asyncio.wrap_future(future))
        if self._running:
            await asyncio.wait(
                [r.task for r in self._running.values()],
                timeout=self._heartbeat_s * 0.8,
                return_when=asyncio.FIRST_COMPLETED,
            )
            self._collect()

    def _collect(self) -> None:
        for lease_id, running in list(self._running.items()):
            if not running.task.done():
                continue
            del self._running[lease_id]
            if running.abandoned:
                continue
            try:
                run = running.task.result()
            except Exception as exc:  # the compute process died (crash, out of memory...)
                run = ChunkRun(None, 0.0, f"compute process failed: {type(exc).__name__} {exc}")
            kind = str(running.lease["kind"])
            if run.error is None:
                self.stats.chunks_done += 1
                self.stats.kinds[kind] = self.stats.kinds.get(kind, 0) + 1
                self._unsent.append(
                    {"lease_id": lease_id, "output": run.output, "compute_s": run.compute_s}
                )
            else:
                self.stats.chunks_failed += 1
                log.warning("chunk of lease %s failed: %s", lease_id, run.error)
                self._unsent.append({"lease_id": lease_id, "error": run.error[:2000]})

    async def _exchange(self, want: int, wait_s: float) -> Any:
        """Send unsent results; a result the coordinator refuses is dropped and logged."""
        while True:
            results = list(self._unsent)
            body = {
                "results": results,
                "running": [k for k, r in self._running.items() if not r.abandoned],
                "want": want,
                "wait_s": wait_s,
            }
            try:
                answer = await self._request(f"/api/v1/workers/{self._worker_id}/exchange", body)
            except HydraError as exc:
                refused = exc.extra.get("lease_id")
                if refused is None or not any(r["lease_id"] == refused for r in self._unsent):
                    raise
                log.error("coordinator refused the result of lease %s: %s", refused, exc)
                self._unsent = [r for r in self._unsent if r["lease_id"] != refused]
                continue
            self.stats.exchanges += 1
            sent = {r["lease_id"] for r in results}
            self._unsent = [r for r in self._unsent if r["lease_id"] not in sent]
            return answer

    async def _leave(self) -> None:
        """Send what is finished and give back what is not."""
        self._collect()
        try:
            if self._unsent:
                await self._exchange(want=0, wait_s=0.0)
            answer = await self._request(f"/api/v1/workers/{self._worker_id}/leave", {})
            log.info("left the pool; returned %d unfinished lease(s)", answer["returned"])
        except HydraError as exc:
            log.warning("could not leave cleanly (%s); leases will expire", exc)
        for running in self._running.values():
            running.task.cancel()  # their processes are about to be stopped
