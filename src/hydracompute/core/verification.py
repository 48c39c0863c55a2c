"""Verification by replication: how many copies, when they agree, and whom to trust.

Volunteers are untrusted. A job may ask for ``replication`` copies of every chunk, computed
by different workers, and accept a chunk once ``quorum`` of them agree (by the kind's
``same_output``). Under *adaptive* verification a worker earns trust per kind from
consecutive outputs that other workers (or a known answer) confirmed; an untrusted worker's
outputs are always replicated, a trusted one's only with a small probability (the floor).
One wrong output bars the worker.

The bound this policy states (see ``docs/security.md``):

- *Credibility* (Sarmenta, "Sabotage-tolerance mechanisms for volunteer computing systems",
  FGCS 18(4), 2002): if a share ``f`` of workers are saboteurs that each lie on a fixed
  fraction of their outputs, an output of a worker that has passed ``k`` checks is wrong
  with probability at most ``f / ((1 - f) · e · k)``. An output is accepted alone only from
  a worker with ``k >= trust_threshold``, the least ``k`` for which that is at most
  ``error_bound``; past it, outputs are replicated with probability ``floor``.
- Whatever a saboteur's strategy (patient ones behave until trusted), every output it
  reports is replicated with probability at least ``floor``, so it gets at most
  ``(1 - floor) / floor`` wrong outputs accepted alone, on average, before one is caught;
  then it is barred and those of its outputs in jobs still running are re-done.

Everything here is pure: random draws are passed in, so the scheduler's choices can be
replayed and tested exactly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from hydracompute.core.models import JSON

#: Most copies of one chunk a job may ask for.
MAX_REPLICATION = 5
#: Copies beyond the replication (or the adaptive pair) sent when copies disagree, before
#: the chunk fails its job.
EXTRA_COPIES_ON_DISAGREEMENT = 2


def default_quorum(replication: int) -> int:
    """Copies that must agree when a job gives only ``replication``: all of two, a
    majority of more."""
    return replication if replication <= 2 else replication // 2 + 1


def replication_errors(replication: int, quorum: int) -> dict[str, str]:
    """What is wrong with ``replication``/``quorum``, by field (empty if nothing)."""
    if not 1 <= replication <= MAX_REPLICATION:
        return {"replication": f"must be between 1 and {MAX_REPLICATION}"}
    if not 1 <= quorum <= replication:
        return {"quorum": f"must be between 1 and the replication ({replication})"}
    return {}


def workers_needed(quorum: int, adaptive: bool) -> int:
    """Different workers a job's chunks need to be accepted: the quorum, and two under
    adaptive verification (an untrusted worker's output waits for another's)."""
    return max(quorum, 2 if adaptive else 1)


def max_copies(replication: int, quorum: int) -> int:
    """Copies of one chunk computed at most before disagreeing copies fail it."""
    return max(replication, quorum, 2) + EXTRA_COPIES_ON_DISAGREEMENT


@dataclass(frozen=True)
class VerificationPolicy:
    """The pool's tunables of adaptive verification.

    Attributes:
        error_bound: the largest probability, under the credibility model, that an output
            accepted alone is wrong (ε).
        saboteur_share: the share of workers assumed to be saboteurs (f).
        floor: the least probability that a trusted worker's output is replicated.
        spot_check_rate: the share of an untrusted worker's leases that are spot checks
            (a chunk whose verified output is known), when one is available.
    """

    error_bound: float = 1e-4
    saboteur_share: float = 0.1
    floor: float = 0.05
    spot_check_rate: float = 0.1

    def __post_init__(self) -> None:
        checks = {
            "error_bound": 1e-9 <= self.error_bound <= 0.5,
            "saboteur_share": 0 <= self.saboteur_share <= 0.9,
            "floor": 0.001 <= self.floor <= 1,
            "spot_check_rate": 0 <= self.spot_check_rate <= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"verification settings out of range: {', '.join(bad)}")

    @property
    def trust_threshold(self) -> int:
        """Confirmed outputs in a row before a worker's outputs may be accepted alone."""
        f = self.saboteur_share
        return max(1, math.ceil(f / ((1 - f) * math.e * self.error_bound)))

    def replicate_probability(self, trust: int) -> float:
        """Probability that an output of a worker with ``trust`` confirmed outputs in a
        row is replicated: always below the threshold, the floor from there on.

        The credibility bound holds for every ``trust`` past the threshold, so nothing is
        gained by replicating more there (BOINC's ``1/consecutive_valid`` decays slowly:
        at twice the threshold it would still replicate half the outputs); the floor is
        what catches a saboteur that behaves until it is trusted.
        """
        return 1.0 if trust < self.trust_threshold else self.floor

    def is_trusted(self, trust: int) -> bool:
        return trust >= self.trust_threshold


T = TypeVar("T")


def agreeing_groups(
    copies: Sequence[T], output: Callable[[T], JSON], same: Callable[[JSON, JSON], bool]
) -> list[list[T]]:
    """Copies grouped by agreement, each group in report order, largest first (ties: the
    group whose first copy came first).

    Agreement is taken as transitive: each copy joins the first group whose first copy it
    agrees with (a kind with a tolerance compares to that representative).
    """
    groups: list[list[T]] = []
    for copy in copies:
        for group in groups:
            if same(output(group[0]), output(copy)):
                group.append(copy)
                break
        else:
            groups.append([copy])
    return sorted(groups, key=len, reverse=True)  # stable: earlier groups first on ties
