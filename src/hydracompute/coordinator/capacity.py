"""What the pool's online workers can run now, to say why a job is waiting.

A job whose kind no online worker has installed would otherwise sit at 0 % with no ETA and
no explanation; its view carries a ``waiting_reason`` instead, computed from here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from hydracompute.core.models import Worker


@dataclass(frozen=True)
class PoolCapacity:
    """The kinds of the online workers, and of those of them not paused by their owner."""

    online: int = 0
    kinds_online: frozenset[str] = frozenset()
    kinds_running: frozenset[str] = frozenset()

    @classmethod
    def of(cls, workers: Iterable[Worker], now: float, lease_ttl_s: float) -> PoolCapacity:
        online = [w for w in workers if w.online(now, lease_ttl_s)]
        return cls(
            online=len(online),
            kinds_online=frozenset(k for w in online for k in w.kinds),
            kinds_running=frozenset(k for w in online if w.state != "paused" for k in w.kinds),
        )

    def waiting_reason(self, kind: str) -> str | None:
        """Why a running job of ``kind`` cannot progress now, or ``None`` if it can."""
        if self.online == 0:
            return f"no worker is online to run kind {kind}"
        if kind not in self.kinds_online:
            return f"no online worker has kind {kind}"
        if kind not in self.kinds_running:
            return f"every online worker with kind {kind} is paused by its owner"
        return None
