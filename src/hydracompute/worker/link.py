"""The worker's link to its pool: who it is there, and requests that survive outages.

A pool may have several coordinators sharing one database; the link knows their URLs and
talks to one at a time, the first given (its preferred one) when it answers. A request that
finds its coordinator unreachable or failing (5xx) is sent at once to the next; only when
every one has failed in turn does the link wait, with capped exponential backoff
(:func:`backoff_s`), and go round again. Results and leases are the pool's, not one
coordinator's, so whichever answers accepts them. A link that moved away tries its preferred
coordinator again every ``PREFERRED_RETRY_S``. After a 429 the link waits as told and asks
the same coordinator again. Once a request gets through after an outage, the link logs that
it reconnected, where, and after how long. A refusal (other 4xx) is raised at once; so is a
certificate that does not verify, which no retry can fix.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from hydracompute import __version__, tls
from hydracompute.errors import (
    CoordinatorUnavailable,
    NotFound,
    Unauthorized,
    error_from_problem,
)
from hydracompute.private_files import write_private

log = logging.getLogger("hydracompute.worker")

#: The first retry's delay; each next one doubles, up to ``MAX_BACKOFF_S``.
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
#: Each delay is shortened by a random share of at most this (so that workers cut off
#: together do not all come back at the same instant).
BACKOFF_JITTER = 0.2
#: A link that moved away from its preferred coordinator tries it again after this long.
PREFERRED_RETRY_S = 10.0


def backoff_s(attempt: int, draw: Callable[[], float] = random.random) -> float:
    """The delay before retry ``attempt`` (1, 2, ...): ``FIRST_BACKOFF_S`` doubled at each
    attempt, capped at ``MAX_BACKOFF_S``, less a random ``BACKOFF_JITTER`` share at most.

    Delays grow until the cap (each one at least 1.6 times the one before), and a delay is
    never shorter than 80% of the one before: the jitter cannot make them jump around.
    ``draw`` returns a number in [0, 1).
    """
    nominal = min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2.0 ** min(max(attempt, 1) - 1, 32))
    return nominal * (1.0 - BACKOFF_JITTER * draw())


def retry_after_s(header: str | None) -> float:
    """Seconds from a Retry-After header (seconds form), within reason."""
    try:
        return min(max(float(header or 1), 0.1), MAX_BACKOFF_S)
    except ValueError:
        return 1.0


def load_identity(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def pool_urls(urls: str | Sequence[str]) -> list[str]:
    """Coordinator URLs without trailing slashes or repeats, in the order given."""
    given = [urls] if isinstance(urls, str) else list(urls)
    return list(dict.fromkeys(u.rstrip("/") for u in given))


def has_identity(path: Path, urls: str | Sequence[str]) -> bool:
    """Whether ``path`` holds a worker identity (id and secret) for the pool of one of
    ``urls`` (an identity names the coordinators it was used with)."""
    saved = load_identity(path)
    if not saved or not saved.get("secret"):
        return False
    known = saved.get("urls")
    known = known if isinstance(known, list) else [saved.get("url")]
    return bool(set(pool_urls(urls)) & {str(u).rstrip("/") for u in known if u})


def save_identity(path: Path, identity: dict[str, Any]) -> None:
    """Keep the worker's credentials, readable by its owner only."""
    write_private(path, json.dumps(identity))


@dataclass
class Enrolment:
    """What the worker tells the pool about itself when it joins."""

    join_token: str
    name: str
    cores: int
    kinds: list[str]
    identity_file: Path | None = None
    #: Power per busy core, declared by the owner or measured (``None``: the pool's).
    watts_per_core: float | None = None
    #: Whether that figure was measured (RAPL) rather than declared.
    power_measured: bool = False
    #: The worker's grid zone ("" none).
    grid_zone: str = ""

    def power(self) -> dict[str, float | bool | str]:
        """The power and grid members of an enrolment or rejoin (only those given, so that
        a coordinator that predates them is not sent members it refuses)."""
        members: dict[str, float | bool | str] = {}
        if self.watts_per_core is not None:
            members["watts_per_core"] = self.watts_per_core
            if self.power_measured:
                members["power_measured"] = True
        if self.grid_zone:
            members["grid_zone"] = self.grid_zone
        return members


@dataclass
class CoordinatorLink:
    """Requests to the coordinators of one pool on behalf of one worker.

    Args:
        urls: the coordinators' base URLs, the preferred one first (or one URL).
        http: the client, with the certificate checks (the pool's coordinators share one
            CA); requests name absolute URLs.
        stopping: whether the agent is stopping (then it gives up after a few retries).
    """

    #: A list once built (a single URL given as a string is one item).
    urls: Sequence[str]
    http: httpx.AsyncClient
    stopping: Callable[[], bool]
    worker_id: str = ""
    secret: str = ""
    heartbeat_s: float = 5.0
    #: Why the last request had to be retried ("" once one got through).
    error: str = ""
    reconnects: int = field(default=0)
    #: Waits between retries, and the clock that times an outage (injectable for tests).
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    clock: Callable[[], float] = time.monotonic
    #: When the current outage began (``clock``), or ``None`` while the link is up.
    outage_since: float | None = None
    #: Index in ``urls`` of the coordinator requests go to.
    current: int = 0
    #: When (``clock``) to try the preferred coordinator again, having moved away.
    _preferred_at: float = 0.0

    def __post_init__(self) -> None:
        self.urls = pool_urls(self.urls)
        if not self.urls:
            raise ValueError("a worker needs at least one coordinator URL")

    @property
    def url(self) -> str:
        """The base URL of the coordinator in use."""
        return self.urls[self.current]

    def _move_on(self, reason: str) -> None:
        """Use the next coordinator (the request that failed goes there at once)."""
        left = self.url
        self.current = (self.current + 1) % len(self.urls)
        if self.current != 0:
            self._preferred_at = self.clock() + PREFERRED_RETRY_S
        log.warning("coordinator at %s unavailable (%s); trying %s", left, reason, self.url)

    async def request(self, path: str, body: Mapping[str, Any]) -> Any:
        """POST ``body`` to ``path``; the answer's JSON.

        Raises:
            HydraError: the coordinator refused the request (4xx).
            CertificateMismatch: its certificate does not verify.
            CoordinatorUnavailable: still unreachable while stopping.
        """
        attempt = 0
        if self.current != 0 and self.clock() >= self._preferred_at:
            self.current = 0  # back to the preferred coordinator if it answers again
        moved = 0  # coordinators tried since the last wait
        while True:
            try:
                headers = {"Authorization": f"Bearer {self.secret}"} if self.secret else {}
                response = await self.http.post(self.url + path, json=body, headers=headers)
                if response.status_code < 500 and response.status_code != 429:
                    self.error = ""
                    self._reconnected()
                    break
                problem: Any = response.json() if response.content else {}
                reason = str(error_from_problem(response.status_code, problem))
                if response.status_code == 429:  # slow down as told, then try again
                    wait = retry_after_s(response.headers.get("Retry-After"))
                    self.error = reason
                    log.warning("coordinator asks to slow down (%s); waiting %.1f s", reason, wait)
                    await self.sleep(wait * random.uniform(1.0, 1.5))
                    continue
            except (httpx.TransportError, ValueError) as exc:
                if tls.is_certificate_error(exc):  # not transient: never retried
                    raise tls.CertificateMismatch(
                        f"could not verify the certificate of the coordinator at {self.url} "
                        "(a wrong --ca-fingerprint, none given for a coordinator with its own "
                        f"authority, or someone in between): {exc}"
                    ) from exc
                reason = f"{type(exc).__name__}: {exc}"
            self.error = reason
            if self.outage_since is None:
                self.outage_since = self.clock()
            if moved < len(self.urls) - 1:  # another coordinator may answer: at once
                moved += 1
                self._move_on(reason)
                continue
            moved = 0
            if self.stopping() and attempt >= 2:
                raise CoordinatorUnavailable(f"giving up while stopping: {reason}")
            attempt += 1
            self.reconnects += 1
            delay = backoff_s(attempt)
            log.warning("coordinator unavailable (%s); retrying in %.1f s", reason, delay)
            await self.sleep(delay)
            if len(self.urls) > 1:
                self._move_on(reason)
        if response.status_code >= 400:
            raise error_from_problem(response.status_code, response.json())
        return response.json() if response.content else None

    def _reconnected(self) -> None:
        """A request got through: say so once if it ends an outage."""
        if self.outage_since is not None:
            log.info(
                "reconnected to the coordinator at %s after %.1f s",
                self.url,
                self.clock() - self.outage_since,
            )
            self.outage_since = None

    async def join(self, enrolment: Enrolment) -> None:
        """Take up the identity saved by an earlier run, or enrol with the join token.

        Raises:
            Unauthorized: no saved identity the pool still knows, and the join token is
                refused (the message says why to its holder: used up, expired, revoked).
        """
        if await self._resume(enrolment):
            return
        if not enrolment.join_token:
            raise Unauthorized(
                "the pool no longer accepts this worker's saved identity (revoked, removed "
                "or forgotten), and no join token was given to enrol again: pass --token"
            )
        answer = await self.request(
            "/api/v1/workers",
            {
                "join_token": enrolment.join_token,
                "name": enrolment.name[:200],
                "cores": enrolment.cores,
                "kinds": enrolment.kinds,
                "version": __version__,
                **enrolment.power(),
            },
        )
        self.worker_id, self.secret = answer["worker_id"], answer["secret"]
        self.heartbeat_s = float(answer["heartbeat_s"])
        if enrolment.identity_file is not None:
            save_identity(enrolment.identity_file, self._identity(enrolment))
        log.info(
            "enrolled as %s with %d core(s) for %s",
            self.worker_id,
            enrolment.cores,
            ", ".join(enrolment.kinds),
        )

    def _identity(self, enrolment: Enrolment) -> dict[str, Any]:
        saved = load_identity(enrolment.identity_file) if enrolment.identity_file else None
        known = saved.get("urls") if saved else None
        urls = pool_urls([*self.urls, *(known if isinstance(known, list) else [])])
        return {
            "url": self.urls[0],
            "urls": urls,
            "worker_id": self.worker_id,
            "secret": self.secret,
            "cores": enrolment.cores,
            "kinds": enrolment.kinds,
        }

    async def tell_profile(self, enrolment: Enrolment) -> None:
        """Tell the pool this worker's profile again, e.g. its newly measured power."""
        await self.request(f"/api/v1/workers/{self.worker_id}/rejoin", _profile(enrolment))

    async def _resume(self, enrolment: Enrolment) -> bool:
        """Take up the saved identity if it is for this pool and the pool still knows it,
        telling the pool the cores and kinds this run has (they may have changed)."""
        path = enrolment.identity_file
        if path is None or not has_identity(path, self.urls):
            return False
        saved = load_identity(path) or {}
        self.worker_id, self.secret = str(saved.get("worker_id")), str(saved["secret"])
        profile = _profile(enrolment)
        try:
            try:
                answer = await self.request(f"/api/v1/workers/{self.worker_id}/rejoin", profile)
                self.heartbeat_s = float(answer["heartbeat_s"])
            except NotFound:  # a coordinator older than the rejoin call: cores, kinds stay
                answer = await self.request(f"/api/v1/workers/{self.worker_id}/exchange", {})
                self.heartbeat_s = float(answer["next_exchange_s"])
        except Unauthorized:  # revoked, removed or forgotten by the pool: enrol again
            log.warning(
                "the pool no longer accepts worker %s (revoked, removed or forgotten); "
                "enrolling again with the join token",
                self.worker_id,
            )
            self.worker_id = self.secret = ""
            return False
        before = (saved.get("cores"), saved.get("kinds"))
        if before != (enrolment.cores, enrolment.kinds):
            log.info(
                "rejoined as %s, now with %d core(s) for %s",
                self.worker_id,
                enrolment.cores,
                ", ".join(enrolment.kinds),
            )
        else:
            log.info("rejoined as %s", self.worker_id)
        save_identity(path, self._identity(enrolment))
        return True


def _profile(enrolment: Enrolment) -> dict[str, Any]:
    """What a rejoin tells the pool: the worker's cores, kinds, version and power."""
    return {
        "cores": enrolment.cores,
        "kinds": enrolment.kinds,
        "version": __version__,
        **enrolment.power(),
    }
