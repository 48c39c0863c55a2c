"""What the pool's online workers can run now, to say why a job is waiting.

A job whose kind no online worker has installed would otherwise sit at 0 % with no ETA and
no explanation; its view carries a ``waiting_reason`` instead, computed from here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from hydracompute.core.models import Worker
from hydracompute.core.placement import may_place, may_run


@dataclass(frozen=True)
class PoolCapacity:
    """The kinds of the online workers, and of those of them not paused by their owner."""

    online: int = 0
    kinds_online: frozenset[str] = frozenset()
    kinds_running: frozenset[str] = frozenset()
    #: (kind, how many online workers not paused, and not barred, have it), sorted.
    running_per_kind: tuple[tuple[str, int], ...] = ()
    #: The labels of each online worker, with its kinds (for jobs that require labels).
    labelled: tuple[tuple[frozenset[str], frozenset[str]], ...] = ()
    #: The versions the online workers not paused run, with their kinds and labels (for
    #: jobs that older workers cannot run: see :func:`~hydracompute.core.placement.may_run`).
    #: A set, so that equal pools compare equal whatever the order of their workers.
    versions: frozenset[tuple[frozenset[str], frozenset[str], str]] = frozenset()

    @classmethod
    def of(cls, workers: Iterable[Worker], now: float, lease_ttl_s: float) -> PoolCapacity:
        online = [w for w in workers if w.online(now, lease_ttl_s)]
        running = Counter(
            k for w in online if w.state != "paused" and not w.barred for k in w.kinds
        )
        return cls(
            online=len(online),
            kinds_online=frozenset(k for w in online for k in w.kinds),
            kinds_running=frozenset(k for w in online if w.state != "paused" for k in w.kinds),
            running_per_kind=tuple(sorted(running.items())),
            labelled=tuple((frozenset(w.kinds), frozenset(w.labels)) for w in online if w.labels),
            versions=frozenset(
                (frozenset(w.kinds), frozenset(w.labels), w.version)
                for w in online
                if w.state != "paused"
            ),
        )

    def waiting_reason(
        self,
        kind: str,
        workers_needed: int = 1,
        required_labels: Collection[str] = (),
        min_version: str = "",
    ) -> str | None:
        """Why a running job of ``kind`` cannot progress now, or ``None`` if it can.

        ``workers_needed``: the different workers a chunk of the job needs (its copies
        verified against each other; see :func:`~hydracompute.core.verification.
        workers_needed`); ``required_labels``: the labels its workers must carry;
        ``min_version``: the oldest version of Hydra Compute that runs its parameters.
        """
        if self.online == 0:
            return f"no worker is online to run kind {kind}"
        if kind not in self.kinds_online:
            return f"no online worker has kind {kind}"
        if kind not in self.kinds_running:
            return f"every online worker with kind {kind} is paused by its owner"
        if required_labels and not any(
            kind in kinds and may_place(required_labels, labels) for kinds, labels in self.labelled
        ):
            return (
                f"no online worker with kind {kind} carries the labels "
                f"{', '.join(sorted(required_labels))} this job requires"
            )
        if min_version and not any(
            kind in kinds and may_place(required_labels, labels) and may_run(min_version, version)
            for kinds, labels, version in self.versions
        ):
            return (
                f"no online worker with kind {kind} runs Hydra Compute {min_version} or later, "
                "which this job's parameters need"
            )
        running = dict(self.running_per_kind).get(kind, 0)
        if running < workers_needed:
            return (
                f"its chunks are verified by {workers_needed} different workers and "
                f"{running} online worker{'s' if running != 1 else ''} with kind {kind} "
                f"can compute {'them' if running != 1 else 'it'}"
            )
        return None
