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
    ├── StoreError           the state of record could not be read or written
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


class StoreError(HydraError):
    status = 503
    title = "Store unavailable"


class CoordinatorUnavailable(HydraError):
    status = 503
    title = "Coordinator unavailable"
