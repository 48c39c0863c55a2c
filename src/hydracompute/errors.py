"""The exception tree of Hydra Compute.

::

    HydraError
    ├── InvalidParams        a job's parameters are missing, unknown or out of range (422)
    ├── InvalidResult        a chunk output fails its kind's sanity check (422)
    ├── UnknownKind          no job kind of that name is installed (422)
    ├── NotFound             no such job, worker or lease (404)
    ├── Unauthorized         missing or wrong credential (401)
    ├── Forbidden            the credential may not do this, e.g. another worker's lease (403)
    ├── Conflict             the request contradicts recorded state, e.g. a second,
    │                        different result for one lease, or cancelling a finished job (409)
    ├── InvalidRequest       a malformed request: bad JSON, a field out of range (422)
    ├── TooManyRequests      over a rate limit or quota (429, with Retry-After)
    ├── StoreError           the state of record could not be read or written
    │   └── StoreConflict    a transaction lost a race with another coordinator's
    │                        (a deadlock or serialization failure): the store retries it
    ├── StoreError           the state of record could not be read or written (503)
    │   └── StoreUnavailable the database is unreachable or stays locked: retry later
    │                        (503 with Retry-After; nothing was changed)
    └── CoordinatorUnavailable  the client or worker cannot reach the coordinator

The coordinator converts each of these into a JSON problem document with the status
shown; anything else is a bug and becomes a 500 without a stack trace.
"""

from __future__ import annotations

from collections.abc import Mapping


class HydraError(Exception):
    """Root of every error raised on purpose by Hydra Compute."""

    status = 500
    title = "Internal error"

    def __init__(self, detail: str, **extra: object) -> None:
        super().__init__(detail)
        self.detail = detail
        #: Extra members of the problem document (e.g. the offending ``lease_id``).
        self.extra = extra


class InvalidParams(HydraError):
    """A job's parameters do not validate; ``errors`` maps field names to messages."""

    status = 422
    title = "Invalid job parameters"

    def __init__(self, errors: Mapping[str, str]) -> None:
        self.errors = dict(errors)
        super().__init__("; ".join(f"{k}: {v}" for k, v in self.errors.items()))


class InvalidResult(HydraError):
    status = 422
    title = "Invalid chunk result"


class UnknownKind(HydraError):
    status = 422
    title = "Unknown job kind"


class NotFound(HydraError):
    status = 404
    title = "Not found"


class Unauthorized(HydraError):
    status = 401
    title = "Unauthorized"


class Forbidden(HydraError):
    status = 403
    title = "Forbidden"


class Conflict(HydraError):
    status = 409
    title = "Conflict"


class TooManyRequests(HydraError):
    """A credential went over its rate limit or quota; ``retry_after_s`` says when to retry."""

    status = 429
    title = "Too many requests"


class StoreError(HydraError):
    status = 503
    title = "Store unavailable"


class StoreConflict(StoreError):
    """Another coordinator sharing the database got in the way (PostgreSQL found a deadlock
    or a serialization failure): the whole transaction is rolled back and may be retried."""


class StoreUnavailable(StoreError):
    """The database cannot be reached, or another writer held it longer than the wait
    allowed; the request changed nothing and may be retried after ``retry_after_s``.
    Backends raise it (``from`` the driver's error) for exactly these transient failures."""

    title = "Store unavailable"

    def __init__(self, detail: str, retry_after_s: int = 1, **extra: object) -> None:
        super().__init__(detail, retry_after_s=retry_after_s, **extra)


class CoordinatorUnavailable(HydraError):
    status = 503
    title = "Coordinator unavailable"


class InvalidRequest(HydraError):
    """A request the coordinator refused as malformed (bad JSON, a field out of range)."""

    status = 422
    title = "Invalid request"


_BY_TITLE: dict[str, type[HydraError]] = {
    cls.title: cls
    for cls in (
        InvalidParams,
        InvalidResult,
        UnknownKind,
        NotFound,
        Unauthorized,
        Forbidden,
        Conflict,
        InvalidRequest,
        TooManyRequests,
        StoreError,
    )
}


def error_from_problem(status: int, problem: object) -> HydraError:
    """The exception for a coordinator's problem document (client side of the boundary)."""
    body = problem if isinstance(problem, dict) else {}
    detail = str(body.get("detail") or body.get("title") or f"HTTP {status}")
    extra = {k: v for k, v in body.items() if k not in ("type", "title", "status", "detail")}
    if body.get("title") == InvalidParams.title and isinstance(body.get("errors"), dict):
        return InvalidParams(body["errors"])
    cls = _BY_TITLE.get(str(body.get("title")))
    if cls is None:
        cls = CoordinatorUnavailable if status >= 500 else InvalidRequest
    error = cls(detail, **extra)
    error.status = status
    return error
