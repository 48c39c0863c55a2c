"""The Python client: submit jobs to a coordinator and follow them.

>>> from hydracompute.client import Client
>>> job = Client("http://127.0.0.1:8765").submit("pi", samples=10**9)
>>> job.wait().answer["estimate"]   # doctest: +SKIP
3.14159...
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from hydracompute import tls
from hydracompute.core.config import MAX_JOB_WAIT_S
from hydracompute.errors import (
    CoordinatorUnavailable,
    HydraError,
    TooManyRequests,
    error_from_problem,
)

DEFAULT_URL = "http://127.0.0.1:8765"


class JobFailed(HydraError):
    """A job ended failed or cancelled while being waited for."""

    status = 409
    title = "Job did not finish"


@dataclass(frozen=True)
class JobInfo:
    """A snapshot of a job as the coordinator reports it (see ``JobView`` in the API)."""

    raw: dict[str, Any]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.raw[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def finished(self) -> bool:
        return bool(self.raw["state"] != "running")


class Client:
    """A connection to one coordinator.

    Args:
        url: the coordinator's base URL.
        api_key: an API key of the pool (its role decides what this client may do).
        ca_fingerprint: the SHA-256 fingerprint of the coordinator's own certificate
            authority, as its admin gave it; without one an ``https`` URL is checked against
            the default trusted authorities (certifi's bundle, or ``SSL_CERT_FILE``).
        timeout: seconds for one request.
        transport: an httpx transport (e.g. ``httpx.ASGITransport``) instead of the network.

    Raises:
        CertificateMismatch: the coordinator's authority does not have that fingerprint.
        CoordinatorUnavailable: it could not be reached to fetch its authority.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        api_key: str | None = None,
        ca_fingerprint: str | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        verify = tls.verification(self.url, ca_fingerprint) if transport is None else True
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(
            base_url=self.url,
            timeout=timeout,
            transport=transport,
            verify=verify,
            headers=headers,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send a request; raise the matching :class:`HydraError` for a problem document.

        Raises:
            CoordinatorUnavailable: the coordinator cannot be reached.
            HydraError: the coordinator refused the request.
        """
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise CoordinatorUnavailable(
                f"cannot reach the coordinator at {self.url}: {exc}"
            ) from exc
        if response.status_code >= 400:
            try:
                problem = response.json()
            except ValueError:
                problem = {"detail": response.text[:500]}
            raise error_from_problem(response.status_code, problem)
        return response

    def submit(
        self, kind: str, *, name: str = "", target_chunk_s: float | None = None, **params: Any
    ) -> Job:
        """Submit a job; ``params`` are the kind's parameters (e.g. ``samples=10**9``)."""
        body: dict[str, Any] = {"kind": kind, "params": params, "name": name}
        if target_chunk_s is not None:
            body["target_chunk_s"] = target_chunk_s
        info = JobInfo(self.request("POST", "/api/v1/jobs", json=body).json())
        return Job(self, info.job_id, info)

    def job(self, job_id: str) -> Job:
        return Job(self, job_id)

    def jobs(self, state: str | None = None, limit: int = 100) -> list[JobInfo]:
        params: dict[str, Any] = {"limit": limit}
        if state:
            params["state"] = state
        found = self.request("GET", "/api/v1/jobs", params=params).json()["jobs"]
        return [JobInfo(j) for j in found]

    def workers(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "/api/v1/workers").json()["workers"])

    def health(self) -> dict[str, Any]:
        return dict(self.request("GET", "/api/v1/health").json())


class Job:
    """A handle on one job."""

    def __init__(self, client: Client, job_id: str, info: JobInfo | None = None) -> None:
        self.client = client
        self.job_id = job_id
        self._info = info

    @property
    def known(self) -> JobInfo | None:
        """The job as last read, without a request (for a new job: the submission's
        answer, whose ``waiting_reason`` says if no online worker can run it)."""
        return self._info

    def info(self, wait_s: float = 0.0) -> JobInfo:
        """The job's current state (one request); with ``wait_s``, the coordinator holds
        the answer until the job finishes, at most that long (up to 20 s)."""
        params = {"wait_s": wait_s} if wait_s > 0 else None
        response = self.client.request("GET", f"/api/v1/jobs/{self.job_id}", params=params)
        self._info = JobInfo(response.json())
        return self._info

    def progress(self) -> float:
        """Fraction of the job's work done, from 0 to 1."""
        return float(self.info().progress)

    def cancel(self) -> JobInfo:
        return JobInfo(self.client.request("POST", f"/api/v1/jobs/{self.job_id}/cancel").json())

    def wait(
        self,
        timeout: float | None = None,
        poll_s: float = 0.25,
        on_progress: Callable[[JobInfo], None] | None = None,
    ) -> JobInfo:
        """Block until the job finishes; returns its final state.

        Each request is held by the coordinator until the job finishes or ``poll_s`` passes
        (``on_progress`` is then called), so the answer comes as soon as the job is done.

        Raises:
            JobFailed: it failed or was cancelled.
            TimeoutError: ``timeout`` seconds passed first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        # Held no longer than the coordinator allows, well within one request's timeout.
        hold_s = max(0.0, min(poll_s, MAX_JOB_WAIT_S, self.client.timeout / 2))
        while True:
            if deadline is not None:
                hold_s = max(0.0, min(hold_s, deadline - time.monotonic()))
            try:
                info = self.info(wait_s=hold_s)
            except TooManyRequests as exc:  # polling faster than the key's allowance
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"job {self.job_id} still running after {timeout} s"
                    ) from exc
                retry = exc.extra.get("retry_after_s", 1)
                time.sleep(max(poll_s, float(retry) if isinstance(retry, int | float) else 1.0))
                continue
            if on_progress is not None:
                on_progress(info)
            if info.finished:
                break
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {self.job_id} still running after {timeout} s")
            if hold_s <= 0:
                time.sleep(poll_s)
        if info.state != "done":
            reason = f": {info.error}" if info.error else ""
            raise JobFailed(f"job {self.job_id} {info.state}{reason}")
        return info

    def result(self) -> dict[str, Any]:
        """The answer of the finished job (e.g. π's estimate and standard error)."""
        body = self.client.request("GET", f"/api/v1/jobs/{self.job_id}/result").json()
        return dict(body["answer"])

    def artefact(self, name: str) -> bytes:
        """A finished job's artefact, e.g. ``image.png`` or ``counts.npy``."""
        return self.client.request("GET", f"/api/v1/jobs/{self.job_id}/artefacts/{name}").content
