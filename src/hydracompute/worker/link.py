"""The worker's link to its coordinator: who it is there, and requests that survive outages.

A request is retried, with exponential backoff and jitter, while the coordinator is
unreachable or failing (5xx), and after the wait it asks for when it says to slow down
(429). A refusal (other 4xx) is raised at once; so is a certificate that does not verify,
which no retry can fix.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from hydracompute import __version__, tls
from hydracompute.errors import CoordinatorUnavailable, Unauthorized, error_from_problem
from hydracompute.private_files import write_private

log = logging.getLogger("hydracompute.worker")

MAX_BACKOFF_S = 30.0


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


@dataclass
class CoordinatorLink:
    """Requests to one coordinator on behalf of one worker.

    Args:
        url: the coordinator's base URL (for messages).
        http: the client, with the coordinator's base URL and certificate checks.
        stopping: whether the agent is stopping (then it gives up after a few retries).
    """

    url: str
    http: httpx.AsyncClient
    stopping: Callable[[], bool]
    worker_id: str = ""
    secret: str = ""
    heartbeat_s: float = 5.0
    #: Why the last request had to be retried ("" once one got through).
    error: str = ""
    reconnects: int = field(default=0)

    async def request(self, path: str, body: Mapping[str, Any]) -> Any:
        """POST ``body`` to ``path``; the answer's JSON.

        Raises:
            HydraError: the coordinator refused the request (4xx).
            CertificateMismatch: its certificate does not verify.
            CoordinatorUnavailable: still unreachable while stopping.
        """
        attempt = 0
        while True:
            try:
                headers = {"Authorization": f"Bearer {self.secret}"} if self.secret else {}
                response = await self.http.post(path, json=body, headers=headers)
                if response.status_code < 500 and response.status_code != 429:
                    self.error = ""
                    break
                problem: Any = response.json() if response.content else {}
                reason = str(error_from_problem(response.status_code, problem))
                if response.status_code == 429:  # slow down as told, then try again
                    wait = retry_after_s(response.headers.get("Retry-After"))
                    self.error = reason
                    log.warning("coordinator asks to slow down (%s); waiting %.1f s", reason, wait)
                    await asyncio.sleep(wait * random.uniform(1.0, 1.5))
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
            if self.stopping() and attempt >= 2:
                raise CoordinatorUnavailable(f"giving up while stopping: {reason}")
            attempt += 1
            self.reconnects += 1
            delay = random.uniform(0, min(MAX_BACKOFF_S, 0.25 * 2**attempt))
            log.warning("coordinator unavailable (%s); retrying in %.1f s", reason, delay)
            await asyncio.sleep(delay)
        if response.status_code >= 400:
            raise error_from_problem(response.status_code, response.json())
        return response.json() if response.content else None

    async def join(self, enrolment: Enrolment, state: Mapping[str, str]) -> None:
        """Take up the identity saved by an earlier run, or enrol with the join token."""
        if await self._resume(enrolment, state):
            return
        answer = await self.request(
            "/api/v1/workers",
            {
                "join_token": enrolment.join_token,
                "name": enrolment.name[:200],
                "cores": enrolment.cores,
                "kinds": enrolment.kinds,
                "version": __version__,
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
        return {
            "url": self.url,
            "worker_id": self.worker_id,
            "secret": self.secret,
            "cores": enrolment.cores,
            "kinds": enrolment.kinds,
        }

    async def _resume(self, enrolment: Enrolment, state: Mapping[str, str]) -> bool:
        """Reuse the saved identity if it is for this pool and set-up and still accepted."""
        path = enrolment.identity_file
        saved = load_identity(path) if path else None
        wanted = {"url": self.url, "cores": enrolment.cores, "kinds": enrolment.kinds}
        if not saved or {k: saved.get(k) for k in wanted} != wanted:
            return False
        self.worker_id, self.secret = str(saved["worker_id"]), str(saved["secret"])
        try:
            answer = await self.request(
                f"/api/v1/workers/{self.worker_id}/exchange", {"want": 0, **state}
            )
        except Unauthorized:  # revoked, or the pool forgot it: enrol again
            self.worker_id = self.secret = ""
            return False
        self.heartbeat_s = float(answer["next_exchange_s"])
        log.info("rejoined as %s", self.worker_id)
        return True
