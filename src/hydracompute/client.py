"""The Python client: submit jobs to a coordinator and follow them.

>>> from hydracompute.client import Client
>>> job = Client("http://127.0.0.1:8765").submit("pi", samples=10**9)
>>> job.wait().answer["estimate"]   # doctest: +SKIP
3.14159...

``Client()`` without arguments connects as the command line does: to the URL, API key and
CA fingerprint of the ``HYDRACOMPUTE_*`` variables, else of the saved login (see
:mod:`hydracompute.connection`).
"""

from __future__ import annotations

import hashlib
import re
import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from hydracompute import tls
from hydracompute.connection import DEFAULT_URL, resolve
from hydracompute.core.config import MAX_JOB_WAIT_S
from hydracompute.errors import (
    CoordinatorUnavailable,
    HydraError,
    InvalidParams,
    InvalidRequest,
    TooManyRequests,
    error_from_problem,
)
from hydracompute.jsonvalues import nonfinite_path

__all__ = ["DEFAULT_URL", "Client", "Job", "JobFailed", "JobInfo"]


def split_urls(text: str) -> list[str]:
    """The URLs in ``text``, separated by spaces or commas, without trailing slashes."""
    urls = [u.rstrip("/") for u in re.split(r"[\s,]+", text.strip()) if u]
    return list(dict.fromkeys(urls)) or [text.rstrip("/")]


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
    """A connection to a pool through one of its coordinators.

    Args:
        url: the coordinator's base URL; for a pool of several coordinators, their URLs
            (a list, or one string separated by spaces or commas). Requests go to the
            first; one that cannot connect is sent to the next (nothing was sent, so
            nothing is done twice), which is used from then on.
        api_key: an API key of the pool (its role decides what this client may do).
        ca_fingerprint: the SHA-256 fingerprint of the coordinator's own certificate
            authority, as its admin gave it; without one an ``https`` URL is checked against
            the default trusted authorities (certifi's bundle, or ``SSL_CERT_FILE``).

        Each of these three that is not given is taken from its ``HYDRACOMPUTE_*``
        variable, else from the login profile (:func:`hydracompute.connection.resolve`).
        timeout: seconds for one request.
        transport: an httpx transport (e.g. ``httpx.ASGITransport``) instead of the network.

    Raises:
        CertificateMismatch: the coordinator's authority does not have that fingerprint.
        CoordinatorUnavailable: it could not be reached to fetch its authority.
        ValueError: a malformed fingerprint, or one given with an ``http://`` URL.
    """

    def __init__(
        self,
        url: str | Sequence[str] | None = None,
        api_key: str | None = None,
        ca_fingerprint: str | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        given = url if url is None or isinstance(url, str) else " ".join(url)
        connection = resolve(given, api_key, ca_fingerprint)
        self.urls = split_urls(connection.url)
        self.url = self.urls[0]
        self.timeout = timeout
        self._url_source = connection.url_source
        api_key, ca_fingerprint = connection.api_key, connection.ca_fingerprint
        verify = self._verification(ca_fingerprint) if transport is None else True
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(
            base_url=self.url,
            timeout=timeout,
            transport=transport,
            verify=verify,
            headers=headers,
        )

    def _verification(self, ca_fingerprint: str | None) -> ssl.SSLContext | bool:
        """The pool's CA (its coordinators share one), from the first that answers."""
        for url in self.urls[:-1]:
            try:
                return tls.verification(url, ca_fingerprint)
            except CoordinatorUnavailable:
                continue
        return tls.verification(self.urls[-1], ca_fingerprint)

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
            InvalidRequest: the ``json`` body holds a NaN or an infinity (nothing is sent).
            HydraError: the coordinator refused the request.
        """
        where = nonfinite_path(kwargs.get("json"))
        if where is not None:
            message = "must be a finite number (JSON has no NaN or infinity)"
            raise InvalidRequest(f"{where}: {message}", errors={where: message})
        for _ in range(len(self.urls) - 1):
            try:
                response = self._http.request(method, self.url + path, **kwargs)
                break
            except (httpx.ConnectError, httpx.ConnectTimeout):  # not sent: try the next
                at = self.urls.index(self.url)
                self.url = self.urls[(at + 1) % len(self.urls)]
            except httpx.TransportError as exc:
                raise CoordinatorUnavailable(self._unreachable(exc)) from exc
        else:
            try:
                response = self._http.request(method, self.url + path, **kwargs)
            except httpx.TransportError as exc:
                raise CoordinatorUnavailable(self._unreachable(exc)) from exc
        if response.status_code >= 400:
            try:
                problem = response.json()
            except ValueError:
                problem = {"detail": response.text[:500]}
            raise error_from_problem(response.status_code, problem)
        return response

    def _unreachable(self, exc: httpx.TransportError) -> str:
        """Why the coordinator could not be reached, with what to do about it."""
        detail = f"cannot reach the coordinator at {self.url}: {str(exc).rstrip('.')}"
        if tls.is_certificate_error(exc):
            return (
                f"{detail}. Its certificate is not signed by an authority this machine "
                "trusts: a coordinator with its own authority prints its fingerprint "
                "(sha256:…) in its join command; pass it with --ca-fingerprint "
                "(HYDRACOMPUTE_CA_FINGERPRINT, or ca_fingerprint= in Python)"
            )
        if self.url.startswith("http://") and isinstance(exc, httpx.RemoteProtocolError):
            https = "https://" + self.url.removeprefix("http://")
            return (
                f"{detail}. The coordinator closed the connection without answering: it "
                f"probably serves TLS; try {https}"
            )
        if self._url_source == "default" and isinstance(exc, httpx.ConnectError):
            return (
                f"no coordinator is configured (no --url, no HYDRACOMPUTE_URL, no saved "
                f"login), and none answers at the default {self.url}. Log in once with "
                "'hydracompute login URL --api-key KEY --ca-fingerprint sha256:…' (the "
                "coordinator prints its URL and fingerprint), or give --url"
            )
        return detail

    def submit(
        self,
        kind: str,
        *,
        name: str = "",
        target_chunk_s: float | None = None,
        replication: int | None = None,
        quorum: int | None = None,
        adaptive: bool | None = None,
        priority: int | None = None,
        required_labels: Sequence[str] = (),
        deadline_s: float | None = None,
        carbon: str | None = None,
        **params: Any,
    ) -> Job:
        """Submit a job; ``params`` are the kind's parameters (e.g. ``samples=10**9``).

        ``replication`` copies of each chunk are computed by different workers and
        ``quorum`` of them must agree; ``adaptive`` verification replicates only untrusted
        workers' outputs (and trusted ones' now and then). ``None``: the pool's default.
        ``priority`` orders the submitter's own running jobs (higher first, default 0).
        ``required_labels``: only workers the admin gave all these labels get its chunks.
        ``deadline_s`` (seconds from now) and ``carbon="prefer-clean"`` steer the job to
        cleaner grids and hours within the deadline.

        Raises:
            InvalidParams: a parameter is NaN or infinite (nothing is sent); the
                coordinator refuses other bad parameters with the same error.
            HydraError: the coordinator refused the job.
        """
        where = nonfinite_path(params)
        if where is not None:
            raise InvalidParams({where: "must be a finite number (JSON has no NaN or infinity)"})
        body: dict[str, Any] = {"kind": kind, "params": params, "name": name}
        options = {
            "target_chunk_s": target_chunk_s,
            "replication": replication,
            "quorum": quorum,
            "adaptive": adaptive,
            "priority": priority,
            "required_labels": list(required_labels) or None,
            "deadline_s": deadline_s,
            "carbon": carbon,
        }
        body.update({key: value for key, value in options.items() if value is not None})
        info = JobInfo(self.request("POST", "/api/v1/jobs", json=body).json())
        return Job(self, info.job_id, info)

    def upload(self, data: bytes | Path) -> str:
        """Upload a module or an input to the pool's blob store; its SHA-256, by which a
        job names it. Bytes the pool already holds are not sent again.

        Raises:
            HydraError: the coordinator refused it (role, size).
        """
        path = data if isinstance(data, Path) else None
        digest = hashlib.sha256(data).hexdigest() if isinstance(data, bytes) else _sha256_of(data)
        try:  # a HEAD answer has no body: its status says it all
            held = self._http.head(f"/api/v1/blobs/{digest}").status_code == 200
        except httpx.TransportError as exc:
            raise CoordinatorUnavailable(self._unreachable(exc)) from exc
        if held:
            return digest
        if path is None:
            self.request("PUT", f"/api/v1/blobs/{digest}", content=data)
        else:
            with path.open("rb") as file:
                self.request(
                    "PUT",
                    f"/api/v1/blobs/{digest}",
                    content=_read_pieces(file),
                    headers={"Content-Length": str(path.stat().st_size)},
                )
        return digest

    def submit_wasm(
        self,
        module: bytes | Path,
        units: int,
        *,
        input: bytes | Path | None = None,
        merge: str = "sum",
        args: dict[str, Any] | None = None,
        **options: Any,
    ) -> Job:
        """Upload a WebAssembly module (and an input) and submit a ``wasm`` job of
        ``units`` units over it; ``options`` are :meth:`submit`'s and the kind's limits
        (``fuel_per_unit``, ``memory_mib``, ``output_bytes``). See docs/wasm.md."""
        params: dict[str, Any] = {
            "module": self.upload(module),
            "units": units,
            "merge": merge,
            "args": args or {},
        }
        if input is not None:
            params["input"] = self.upload(input)
        return self.submit("wasm", **params, **options)

    def label_worker(
        self, worker_id: str, add: Sequence[str] = (), remove: Sequence[str] = ()
    ) -> dict[str, Any]:
        """Give a worker labels and take others away (admin); the worker as listed."""
        body = {"add": list(add), "remove": list(remove)}
        answer: dict[str, Any] = self.request(
            "POST", f"/api/v1/workers/{worker_id}/labels", json=body
        ).json()
        return answer

    def job(self, job_id: str) -> Job:
        return Job(self, job_id)

    def jobs(self, state: str | None = None, limit: int = 100) -> list[JobInfo]:
        params: dict[str, Any] = {"limit": limit}
        if state:
            params["state"] = state
        found = self.request("GET", "/api/v1/jobs", params=params).json()["jobs"]
        return [JobInfo(j) for j in found]

    def shares(self) -> list[dict[str, Any]]:
        """Every submitter's share of the pool and recent usage (a submitter sees its own)."""
        return list(self.request("GET", "/api/v1/shares").json()["owners"])

    def workers(self) -> list[dict[str, Any]]:
        return list(self.request("GET", "/api/v1/workers").json()["workers"])

    def coordinators(self) -> list[dict[str, Any]]:
        """The pool's live coordinators (``url``, ``started_s``, ``seen_s``, ``this``)."""
        return list(self.request("GET", "/api/v1/coordinators").json()["coordinators"])

    def kinds(self) -> list[dict[str, Any]]:
        """The job kinds the coordinator accepts, with their unit and work names."""
        return list(self.request("GET", "/api/v1/kinds").json()["kinds"])

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


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for piece in _read_pieces(file):
            digest.update(piece)
    return digest.hexdigest()


def _read_pieces(file: BinaryIO) -> Iterator[bytes]:
    while piece := file.read(1 << 20):
        yield piece
