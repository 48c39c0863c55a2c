"""Copies of the memory backend's records, and its index sets.

The backend hands out copies and keeps copies, as a database would; ``copy.deepcopy`` was
most of the simulator's time, so each record type is copied by what it holds: its mutable
fields (dicts and lists of scalars, JSON values) anew, the rest shared.
"""

from __future__ import annotations

import copy
from typing import Any

from hydracompute.core.credit import CreditEntry
from hydracompute.core.fairshare import Usage
from hydracompute.core.lifecycle import Copy
from hydracompute.core.models import Chunk, Credential, Job, Lease, Worker


def discard(index: dict[Any, dict[Any, None]], key: Any, member: Any) -> None:
    """Take ``member`` out of the set ``index[key]``, and the set out once empty (an index
    of millions of chunks must not keep an empty set for each)."""
    members = index.get(key)
    if members is not None:
        members.pop(member, None)
        if not members:
            del index[key]


def _json(value: Any) -> Any:
    """A copy of a JSON value (a flat dict of scalars, the common case, in one step)."""
    if type(value) is dict and all(type(v) in _SCALARS for v in value.values()):
        return dict(value)
    return copy.deepcopy(value)


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _shallow(value: Any) -> Any:
    """A shallow copy of a plain dataclass instance (``copy.copy`` goes through pickling's
    protocol, three times slower)."""
    twin = object.__new__(type(value))
    twin.__dict__.update(value.__dict__)
    return twin


def clone(value: Any) -> Any:
    """A copy of a record that shares nothing mutable with it."""
    kind = type(value)
    if kind is Lease or kind is Credential:
        return _shallow(value)
    if kind is Chunk:
        chunk = _shallow(value)
        chunk.failed_by, chunk.holders = dict(chunk.failed_by), dict(chunk.holders)
        return chunk
    if kind is Worker:
        worker = _shallow(value)
        worker.kinds = list(worker.kinds)
        worker.speeds, worker.speed_evidence_s = dict(worker.speeds), dict(worker.speed_evidence_s)
        worker.units_done, worker.trust = dict(worker.units_done), dict(worker.trust)
        return worker
    if kind is Job:
        job = _shallow(value)
        job.params, job.live = _json(job.params), _json(job.live)
        job.answer = None if job.answer is None else _json(job.answer)
        return job
    if kind is Copy:  # frozen: dataclasses.replace would run its __init__ again
        twin = _shallow(value)
        twin.__dict__["output"] = _json(value.output)
        return twin
    if kind is tuple or kind is CreditEntry or kind is Usage:
        return value  # immutable (outputs' rows, ledger entries, owners' usage)
    return copy.deepcopy(value)
