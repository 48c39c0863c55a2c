"""Transactions tried again when they lose a race with another coordinator's.

On a shared database (PostgreSQL) two coordinators' transactions can deadlock: each holds a
row the other waits for (a batch of exchanges locks its jobs, workers, leases and chunks up
front in one order, but rows it reaches later, such as a replica partner's worker row, are
locked as they come).
The database breaks the tie by failing one of them, as
:class:`~hydracompute.errors.StoreConflict`; everything it wrote is rolled back, so the
whole operation is simply run again, a bounded number of times.

Only the outermost operation is retried: a conflict inside an enclosing transaction
propagates to it (the locks taken before the inner block stay held until the whole ends).
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from hydracompute.errors import StoreConflict
from hydracompute.store.backend import Backend

log = logging.getLogger("hydracompute.store")

#: Times an operation is run at most when it keeps losing races.
CONFLICT_ATTEMPTS = 5
#: The longest pause before the first retry (doubled each time; a random part of it).
FIRST_PAUSE_S = 0.005


class _HasBackend(Protocol):
    backend: Backend


P = ParamSpec("P")
T = TypeVar("T")
S = TypeVar("S", bound=_HasBackend)


def retried_on_conflict(method: Callable[Concatenate[S, P], T]) -> Callable[Concatenate[S, P], T]:
    """Run ``method`` (of an object with a ``backend``) again when it raises
    :class:`StoreConflict` outside any transaction, up to :data:`CONFLICT_ATTEMPTS` times
    in all, after a short random pause (so the two sides do not meet again at once)."""

    def retrying(self: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
        if self.backend.in_transaction():
            return method(self, *args, **kwargs)
        for attempt in range(1, CONFLICT_ATTEMPTS + 1):
            try:
                return method(self, *args, **kwargs)
            except StoreConflict as exc:
                if attempt == CONFLICT_ATTEMPTS:
                    raise
                log.info("%s lost a race (%s); trying again", method.__name__, exc.detail)
                time.sleep(random.uniform(0, FIRST_PAUSE_S * 2 ** (attempt - 1)))
        raise AssertionError("unreachable")

    functools.update_wrapper(retrying, method)
    return retrying
