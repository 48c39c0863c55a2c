"""The volunteer agent: enrol, then exchange results for chunks until told to stop.

The loop keeps every core busy. Each exchange carries the results finished since the last
one, renews the leases still running (the heartbeat) and asks for as many chunks as there
are free cores. When chunks finish, the agent first asks for the next ones (without the
results) and starts them, then sends the results: a core never waits for its result to
travel and be checked. When the worker is idle it long-polls: the coordinator answers as
soon as work appears. While the coordinator is unreachable the agent keeps computing, keeps its
results, and retries with capped exponential backoff (see :mod:`.link`), and says when it
has reconnected.

The owner's rules (:mod:`hydracompute.worker.rules`) are applied by a governor task: when
they say pause, the compute processes are suspended at once, the agent reports ``paused``
with the reason, asks for nothing and keeps renewing its leases; after ``return_after_s`` it
gives them back (and kills the suspended computations). Resuming continues the chunks that
were not given back. A status file next to the identity file says what it is doing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import ssl
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from hydracompute.core.credit import MAX_OWN_WATTS_PER_CORE, MIN_OWN_WATTS_PER_CORE
from hydracompute.errors import (
    HydraError,
)
from hydracompute.kinds import default_registry
from hydracompute.worker.blobs import BlobCache
from hydracompute.worker.executor import ChunkExecutor, ChunkRun
from hydracompute.worker.governor import POLL_S, Governor, ReadingsSource, machine_monitor
from hydracompute.worker.link import CoordinatorLink, Enrolment, pool_urls
from hydracompute.worker.power import POWERCAP, machine_meter, measure
from hydracompute.worker.rules import Rules
from hydracompute.worker.status import (
    STATUS_PERIOD_S,
    process_started_s,
    rules_status,
    write_status,
)
from hydracompute.worker.throttle import Throttle

log = logging.getLogger("hydracompute.worker")

#: The longest ``state_reason`` the coordinator keeps.
MAX_REASON_CHARS = 200
#: How long a pool of several coordinators waits for one to accept a connection.
CONNECT_TIMEOUT_S = 3.0
#: Results larger than this (characters of JSON, about) are sent after the next chunks are
#: asked for and started; smaller ones go in the same exchange as the request.
PIPELINE_RESULT_CHARS = 16_384


@dataclass
class Running:
    lease: Mapping[str, Any]
    task: asyncio.Future[ChunkRun]
    abandoned: bool = False
    received_s: float = field(default_factory=time.monotonic)


@dataclass
class WorkerStats:
    chunks_done: int = 0
    chunks_failed: int = 0
    exchanges: int = 0
    leases_returned: int = 0
    kinds: dict[str, int] = field(default_factory=dict)


class WorkerAgent:
    """Runs chunks for the pool at ``url`` on ``cores`` processes.

    Args:
        url: the coordinator's base URL, e.g. ``https://pool.example:8765``, or the URLs
            of the pool's coordinators, the preferred one first (it moves to another when
            one stops answering, see :class:`CoordinatorLink`).
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
        rules: the owner's rules (default: none, every core, all the time).
        monitor: reads the machine for the rules (default: this machine, via psutil).
        status_file: where to write the status every second (default: none).
        local_now: the local time for the allowed hours; injectable for tests.
        poll_s: how often the rules are applied.
        powercap: where Linux shows RAPL energy counters; the worker measures its power
            per core there when its owner declared none (``rules.watts_per_core``).
        cache_dir: where fetched files (modules, inputs) and compiled modules are kept
            between runs (default: a temporary folder removed when the agent stops).

    Kinds that run code submitted to the pool (``wasm``) are offered to the pool only if
    the owner consented (``rules.accept_wasm``); a lease of any kind not offered is
    refused as a failed chunk, never run.
    """

    def __init__(
        self,
        url: str | Sequence[str],
        cores: int,
        join_token: str,
        verify: ssl.SSLContext | bool = True,
        name: str | None = None,
        identity_file: Path | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        wait_s: float = 20.0,
        rules: Rules | None = None,
        monitor: ReadingsSource | None = None,
        status_file: Path | None = None,
        local_now: Callable[[], datetime] = datetime.now,
        poll_s: float = POLL_S,
        powercap: Path = POWERCAP,
        cache_dir: Path | None = None,
    ) -> None:
        self.identity_file = identity_file
        self.urls = pool_urls(url)
        self.url = self.urls[0]
        self.join_token = join_token
        self.verify = verify
        self.cores = cores
        self.name = name or platform.node() or "worker"
        self.wait_s = wait_s
        self.stats = WorkerStats()
        self._transport = transport
        self._stop = asyncio.Event()
        self._running: dict[str, Running] = {}
        self._unsent: list[dict[str, Any]] = []
        self.rules = rules if rules is not None else Rules(cores=cores)
        self.kinds = [
            kind.name
            for kind in default_registry()
            if self.rules.accept_wasm or not kind.runs_submitted_code
        ]
        self.cache_dir = cache_dir
        self.blobs: BlobCache | None = None
        self.status_file = status_file
        self._monitor = monitor
        self._local_now = local_now
        self._poll_s = poll_s
        self._powercap = powercap
        #: The power per core measured from RAPL this run (``None``: not, or not yet).
        self.measured_watts_per_core: float | None = None
        self._governor: Governor | None = None
        self._link: CoordinatorLink | None = None
        self._started_s = time.time()
        self._pid_started_s = process_started_s()
        self._phase = "starting"

    @property
    def link(self) -> CoordinatorLink:
        assert self._link is not None, "the agent has not joined yet"
        return self._link

    @property
    def worker_id(self) -> str:
        """The worker's id in the pool ("" until it has joined)."""
        return self._link.worker_id if self._link else ""

    def stop(self) -> None:
        """Ask the loop to finish: results are sent, unfinished leases given back."""
        self._stop.set()

    @property
    def governor(self) -> Governor:
        assert self._governor is not None, "the agent is not running"
        return self._governor

    async def run(self, executor: ChunkExecutor | None = None) -> None:
        """Enrol and work until :meth:`stop`; then return unfinished leases and exit.

        Raises:
            InvalidRules: a rule needs a measure this machine cannot give.
            HydraError: the coordinator refused the worker.
        """
        with tempfile.TemporaryDirectory(prefix="hydracompute-worker-") as temporary:
            cache = self.cache_dir or Path(temporary)
            self.blobs = BlobCache(cache / "blobs")
            await self._run(executor, cache / "compiled")

    async def _run(self, executor: ChunkExecutor | None, compiled: Path) -> None:
        own_executor = executor is None
        if executor is None:
            executor = ChunkExecutor(self.cores, priority=self.rules.priority, cache_dir=compiled)
        elif executor.cache_dir is None:
            executor.cache_dir = compiled
        try:
            monitor = self._monitor or machine_monitor(self.rules, executor.pids)
            if own_executor:
                await asyncio.to_thread(executor.start)
            throttle = Throttle(executor.pids)
            self._governor = Governor(self.rules, monitor, throttle, self._local_now)
            self._governor.update(await asyncio.to_thread(monitor.read))
            helpers = [
                asyncio.ensure_future(self._governor.run(self._poll_s)),
                asyncio.ensure_future(throttle.run()),
                asyncio.ensure_future(self._report_status()),
            ]
            try:
                await self._work(executor)
            finally:
                for helper in helpers:
                    helper.cancel()
                await asyncio.gather(*helpers, return_exceptions=True)
                throttle.release()  # a suspended process could not exit
        finally:
            self._phase = "stopped"
            self._write_status()
            if own_executor:
                await asyncio.to_thread(executor.shutdown, True)

    async def _work(self, executor: ChunkExecutor) -> None:
        # With other coordinators to turn to, one that does not accept a connection within
        # a few seconds is given up (a held exchange still waits its whole long-poll).
        connect_s = CONNECT_TIMEOUT_S if len(self.urls) > 1 else 30.0
        timeout = httpx.Timeout(30.0, connect=connect_s, read=self.wait_s + 30.0)
        async with httpx.AsyncClient(
            base_url=self.url, timeout=timeout, transport=self._transport, verify=self.verify
        ) as http:
            self._link = CoordinatorLink(self.urls, http, self._stop.is_set)
            enrolment = Enrolment(
                self.join_token,
                self.name,
                self.cores,
                self.kinds,
                self.identity_file,
                self.rules.watts_per_core,
                grid_zone=self.rules.grid_zone,
            )
            await self._link.join(enrolment)
            self._phase = "working"
            stop_wait = asyncio.ensure_future(self._stop.wait())
            measuring = self._measure_power(enrolment)
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
                    if measuring is not None:
                        measuring.cancel()
                    raise cycle.exception()  # type: ignore[misc]
            if measuring is not None:
                measuring.cancel()
                await asyncio.gather(measuring, return_exceptions=True)
            self._phase = "stopping"
            await self._leave()

    def _measure_power(self, enrolment: Enrolment) -> asyncio.Future[float] | None:
        """Measure the machine's power per core while it computes, where RAPL is readable
        and the owner declared no figure, and tell the pool once measured."""
        if enrolment.watts_per_core is not None:
            return None
        meter = machine_meter(os.cpu_count() or 1, self._powercap)
        if meter is None:
            return None

        def computing() -> bool:
            return bool(self._running) and self.governor.decision.run

        async def tell(watts: float) -> None:
            self.measured_watts_per_core = watts
            # Within what the pool accepts (which believes it up to its own bound).
            low, high = MIN_OWN_WATTS_PER_CORE, MAX_OWN_WATTS_PER_CORE
            enrolment.watts_per_core = max(low, min(watts, high))
            enrolment.power_measured = True
            assert self._link is not None
            try:
                await self._link.tell_profile(enrolment)
            except HydraError as exc:  # the pool's figure stays: no reason to stop
                log.warning("could not tell the pool the measured power: %s", exc)

        return asyncio.ensure_future(measure(meter, computing, tell, self._poll_s))

    async def _cycle(self, executor: ChunkExecutor) -> None:
        """One exchange, then wait for a chunk to finish, the rules to change their mind or
        the heartbeat to come due."""
        governor = self.governor
        if governor.return_due():
            await self._give_back(executor)
        decision = governor.decision
        busy = len(self._running)  # an abandoned chunk still occupies its process
        want = max(0, decision.cores - busy) if decision.run else 0
        idle = busy == 0 and not self._unsent
        wait_s = self.wait_s if idle and want > 0 else 0.0
        if self._unsent and want > 0 and _payload_over(self._unsent, PIPELINE_RESULT_CHARS):
            # Ask for the next chunks first and start them: the freed cores compute while
            # the results (a Mandelbrot chunk's are megabytes) travel and are checked.
            # Small results (π's counts) go with the request instead: one exchange per
            # chunk, not two, for the pool to serve.
            await self._start(executor, await self._exchange(want, 0.0, results=False), want)
            want = 0
        await self._start(executor, await self._exchange(want=want, wait_s=wait_s), want)
        if self._running or not governor.decision.run:
            await self._wait_for_change()
            self._collect()

    async def _start(self, executor: ChunkExecutor, answer: Any, want: int) -> None:
        """Note the leases an answer abandons and start the chunks it grants (at most
        ``want``; the rest, or all while paused, are given back)."""
        governor = self.governor
        for lease_id in answer["abandon"]:
            if lease_id in self._running:
                self._running[lease_id].abandoned = True
        fresh = answer["leases"]
        if fresh and not governor.decision.run:  # paused while the answer was on its way
            await self._return([lease["lease_id"] for lease in fresh])
            fresh = []
        elif len(fresh) > want:  # more than asked for: never run more than the rules allow
            log.warning(
                "the coordinator sent %d leases for %d asked; returning the rest", len(fresh), want
            )
            await self._return([lease["lease_id"] for lease in fresh[want:]])
            fresh = fresh[:want]
        for lease in fresh:
            self._running[lease["lease_id"]] = Running(lease, self._compute(executor, lease))

    def _compute(
        self, executor: ChunkExecutor, lease: Mapping[str, Any]
    ) -> asyncio.Future[ChunkRun]:
        """Start a lease's chunk: at once, or once the files its kind needs are here."""
        kind, params, chunk = lease["kind"], lease["params"], lease["chunk"]
        if kind not in self.kinds:  # not offered: a coordinator must not send it
            refused: asyncio.Future[ChunkRun] = asyncio.get_running_loop().create_future()
            refused.set_result(ChunkRun(None, 0.0, f"this worker does not run {kind} jobs"))
            return refused
        try:
            needed = default_registry().get(kind).blobs(params)
        except Exception as exc:  # bad parameters: the compute process says so
            log.debug("cannot name the files of lease %s: %s", lease["lease_id"], exc)
            needed = {}
        if not needed:
            future = executor.submit(kind, params, chunk["start"], chunk["stop"])
            return asyncio.wrap_future(future)
        return asyncio.ensure_future(self._fetch_and_compute(executor, lease, needed))

    async def _fetch_and_compute(
        self, executor: ChunkExecutor, lease: Mapping[str, Any], needed: Mapping[str, str]
    ) -> ChunkRun:
        assert self.blobs is not None
        files: dict[str, str] = {}
        for role, digest in needed.items():
            try:
                files[role] = str(await self.blobs.ensure(self.link, digest))
            except HydraError as exc:
                return ChunkRun(None, 0.0, f"could not fetch the job's {role}: {exc}")
        chunk = lease["chunk"]
        future = executor.submit(
            lease["kind"], lease["params"], chunk["start"], chunk["stop"], files
        )
        return await asyncio.wrap_future(future)

    async def _wait_for_change(self) -> None:
        wake = self.governor.wake
        waiters: list[asyncio.Future[Any]] = [r.task for r in self._running.values()]
        woken = asyncio.ensure_future(wake.wait())
        try:
            await asyncio.wait(
                [*waiters, woken],
                timeout=self.link.heartbeat_s * 0.8,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            woken.cancel()
        wake.clear()

    async def _give_back(self, executor: ChunkExecutor) -> None:
        """A long pause: give every lease in hand back so that other workers take the
        chunks, and kill the suspended computations (they would only hold memory)."""
        self._collect()
        held = [lease_id for lease_id, r in self._running.items() if not r.abandoned]
        if held:
            await self._return(held)
        if held or self.governor.decision.return_now:
            await asyncio.to_thread(executor.restart)
        self.governor.mark_returned()

    async def _return(self, lease_ids: list[str]) -> None:
        """Give leases back to the pool; their results, if any still come, are dropped."""
        for lease_id in lease_ids:
            if lease_id in self._running:
                self._running[lease_id].abandoned = True
        try:
            answer = await self.link.request(
                f"/api/v1/workers/{self.link.worker_id}/return", {"lease_ids": lease_ids}
            )
        except HydraError as exc:
            log.warning(
                "could not give back %d lease(s) (%s); they will expire", len(lease_ids), exc
            )
            return
        self.stats.leases_returned += int(answer["returned"])
        log.info("gave back %d lease(s) while paused", answer["returned"])

    def _collect(self) -> None:
        for lease_id, running in list(self._running.items()):
            if not running.task.done():
                continue
            del self._running[lease_id]
            if running.abandoned:  # given back or abandoned: its outcome is not wanted
                if not running.task.cancelled():
                    running.task.exception()  # retrieved, so asyncio does not report it
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

    async def _exchange(self, want: int, wait_s: float, results: bool = True) -> Any:
        """Send unsent results (unless ``results`` is false); a result the coordinator
        refuses is dropped and logged."""
        while True:
            sending = list(self._unsent) if results else []
            body = {
                "results": sending,
                "running": [k for k, r in self._running.items() if not r.abandoned],
                "want": want,
                "wait_s": wait_s,
                **self._state(),
            }
            try:
                answer = await self.link.request(
                    f"/api/v1/workers/{self.link.worker_id}/exchange", body
                )
            except HydraError as exc:
                refused = exc.extra.get("lease_id")
                if refused is None or not any(r["lease_id"] == refused for r in self._unsent):
                    raise
                log.error("coordinator refused the result of lease %s: %s", refused, exc)
                self._unsent = [r for r in self._unsent if r["lease_id"] != refused]
                continue
            self.stats.exchanges += 1
            # The owner's grid rule compares what the pool's carbon source says.
            self.governor.grid_gco2_per_kwh = answer.get("grid_gco2_per_kwh")
            sent = {r["lease_id"] for r in sending}
            self._unsent = [r for r in self._unsent if r["lease_id"] not in sent]
            return answer

    def _state(self) -> dict[str, str]:
        """What the pool is told the worker is doing (shown in its worker list)."""
        decision = self.governor.decision
        return {
            "state": "running" if decision.run else "paused",
            "state_reason": decision.reason[:MAX_REASON_CHARS],
        }

    async def _leave(self) -> None:
        """Send what is finished and give back what is not."""
        self._collect()
        try:
            if self._unsent:
                await self._exchange(want=0, wait_s=0.0)
            answer = await self.link.request(f"/api/v1/workers/{self.link.worker_id}/leave", {})
            log.info("left the pool; returned %d unfinished lease(s)", answer["returned"])
        except HydraError as exc:
            log.warning("could not leave cleanly (%s); leases will expire", exc)
        for running in self._running.values():
            running.task.cancel()  # their processes are about to be stopped

    # status

    def status(self) -> dict[str, Any]:
        """What the agent is doing and why, as written to the status file."""
        now = time.monotonic()
        held = {k: r for k, r in self._running.items() if not r.abandoned}
        return {
            "pid": os.getpid(),
            "pid_started_s": self._pid_started_s,
            "started_s": self._started_s,
            "url": self._link.url if self._link else self.url,
            "name": self.name,
            "worker_id": self.worker_id,
            "cores": self.cores,
            **rules_status(self._governor, self.rules, self._phase, bool(held)),
            "leases": [
                {
                    "lease_id": lease_id,
                    "job_id": r.lease["job_id"],
                    "kind": r.lease["kind"],
                    "start": r.lease["chunk"]["start"],
                    "stop": r.lease["chunk"]["stop"],
                    "held_s": now - r.received_s,
                }
                for lease_id, r in held.items()
            ],
            "chunks_done": self.stats.chunks_done,
            "chunks_failed": self.stats.chunks_failed,
            "leases_returned": self.stats.leases_returned,
            "coordinator_error": (self._link.error if self._link else ""),
        }

    def _write_status(self) -> None:
        if self.status_file is None:
            return
        try:
            write_status(self.status_file, self.status())
        except OSError as exc:  # a full disk must not stop the computing
            log.warning("cannot write the status file %s: %s", self.status_file, exc)

    async def _report_status(self) -> None:
        while True:
            self._write_status()
            await asyncio.sleep(STATUS_PERIOD_S)


def _payload_over(value: Any, limit: int) -> bool:
    """Whether ``value`` (JSON data) takes more than about ``limit`` characters as JSON;
    stops looking as soon as it does, so a megabyte result costs no more than a small one."""
    pending = [value]
    size = 0
    while pending:
        item = pending.pop()
        if isinstance(item, str | bytes):
            size += len(item) + 2
        elif isinstance(item, Mapping):
            size += 2
            for key, inner in item.items():
                size += len(str(key)) + 4
                pending.append(inner)
        elif isinstance(item, list | tuple):
            size += 2 + len(item)
            pending.extend(item)
        else:  # a number, a boolean or null
            size += 24
        if size > limit:
            return True
    return False
