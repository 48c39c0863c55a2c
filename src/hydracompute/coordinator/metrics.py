"""The coordinator's Prometheus metrics, served at ``/metrics`` (see docs/metrics.md).

Two sources, kept apart on purpose:

- **events of this process** (results accepted and refused, how long exchanges, chunks and
  store transactions took) are counters and histograms in memory, each updated in O(1)
  per exchange or per result on the exchange's path;
- **the pool's state** (workers, cores, leases in flight, jobs by state) is read from the
  store when scraped (:class:`PoolCollector`), never kept here: several coordinators
  sharing one database must report the same pool.

Each :class:`CoordinatorMetrics` has its own registry (not prometheus_client's global one),
so that several applications in one process, as in the tests, do not clash.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hydracompute.errors import (
    Conflict,
    Forbidden,
    HydraError,
    InvalidResult,
    NotFound,
    StoreError,
    Unauthorized,
)
from hydracompute.store import ExchangeOutcome, ResultReport, Store
from hydracompute.store.figures import pool_figures
from hydracompute.store.records import LeaseGrant

#: Recording an exchange: queueing for the store thread, then its batch's transaction.
LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: A chunk's compute time as its worker reports it (2 s is the default target).
COMPUTE_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 300.0)
#: One store transaction, its commit (an fsync with SQLite) included.
TRANSACTION_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
#: Leases whose kind is remembered (for the compute time per kind) at most; then the oldest
#: are forgotten (a lease never reported, e.g. expired, is never asked about).
MAX_LEASE_KINDS = 200_000
#: The label of each refusal of an exchange, by the error the store raised.
REFUSAL_REASONS: tuple[tuple[type[HydraError], str], ...] = (
    (InvalidResult, "invalid_result"),
    (Conflict, "conflicting_result"),
    (Forbidden, "not_lease_holder"),
    (NotFound, "unknown_lease"),  # "unknown_worker" when it names no lease
    (Unauthorized, "revoked_worker"),
    (StoreError, "store_unavailable"),
)


def refusal_reason(error: HydraError) -> str:
    """The ``reason`` label of an exchange refused with ``error``."""
    if isinstance(error, NotFound) and "lease_id" not in error.extra:
        return "unknown_worker"
    for kind, reason in REFUSAL_REASONS:
        if isinstance(error, kind):
            return reason
    return "other"


class CoordinatorMetrics:
    """One coordinator's metrics and the registry that exposes them.

    Args:
        store: read when scraped, for the pool's state.
        clock: seconds since the epoch (who is online is judged at scrape time).
    """

    def __init__(self, store: Store, clock: Callable[[], float]) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.results_accepted = Counter(
            "hydracompute_results_accepted",
            "Chunk results the store recorded or acknowledged (a result sent again is "
            "acknowledged again).",
            registry=registry,
        )
        self.exchanges_refused = Counter(
            "hydracompute_exchanges_refused",
            "Exchanges the store refused, by reason; each names one offending result, and "
            "none of the exchange's results is recorded.",
            ["reason"],
            registry=registry,
        )
        self.exchange_latency = Histogram(
            "hydracompute_exchange_latency_seconds",
            "Time to record an exchange (waiting for the store thread, then its batch's "
            "transaction and commit), without any long-poll hold.",
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.chunk_compute = Histogram(
            "hydracompute_chunk_compute_seconds",
            "Compute time of accepted chunks as their workers report it, by job kind.",
            ["kind"],
            buckets=COMPUTE_BUCKETS_S,
            registry=registry,
        )
        self.store_transaction = Histogram(
            "hydracompute_store_transaction_seconds",
            "Time of a store transaction, its commit included, by operation.",
            ["operation"],
            buckets=TRANSACTION_BUCKETS_S,
            registry=registry,
        )
        # Children looked up once: .labels() costs a lock and a dict per call.
        self._compute_by_kind: dict[str, Histogram] = {}
        self._exchange_batch = self.store_transaction.labels("exchange_batch")
        #: lease id -> kind, for the leases this process granted (a cache: a result whose
        #: lease was granted before a restart, or by another coordinator, goes uncounted
        #: in the compute time, not in the results).
        self._lease_kinds: dict[str, str] = {}
        self._lock = threading.Lock()
        registry.register(PoolCollector(store, clock))

    def granted(self, grants: Iterable[LeaseGrant]) -> None:
        with self._lock:
            kinds = self._lease_kinds
            for grant in grants:
                kinds[grant.lease_id] = grant.kind
            while len(kinds) > MAX_LEASE_KINDS:
                del kinds[next(iter(kinds))]

    def recorded(
        self, results: Sequence[ResultReport], outcome: ExchangeOutcome, latency_s: float
    ) -> None:
        """An exchange with ``results`` was recorded in ``latency_s``, with ``outcome``."""
        self.exchange_latency.observe(latency_s)
        if outcome.accepted:
            self.results_accepted.inc(len(outcome.accepted))
            # (An exchange is recorded or refused whole: its results are all accepted.)
            with self._lock:
                kinds = self._lease_kinds
                taken = [(kinds.pop(r.lease_id, None), r) for r in results]
            for kind, report in taken:
                if kind is not None and report.error is None:
                    self._compute(kind).observe(report.compute_s)
        if outcome.leases:
            self.granted(outcome.leases)

    def refused(self, error: HydraError) -> None:
        self.exchanges_refused.labels(refusal_reason(error)).inc()

    def exchange_batch(self, duration_s: float) -> None:
        """A batch of exchanges was recorded in one transaction of ``duration_s``."""
        self._exchange_batch.observe(duration_s)

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format; reads the store (call it on the store
        thread)."""
        return generate_latest(self.registry)

    def _compute(self, kind: str) -> Histogram:
        child = self._compute_by_kind.get(kind)
        if child is None:
            child = self._compute_by_kind[kind] = self.chunk_compute.labels(kind)
        return child


class PoolCollector(Collector):
    """The pool's state, read from the store at each scrape."""

    def __init__(self, store: Store, clock: Callable[[], float]) -> None:
        self.store, self.clock = store, clock

    def collect(self) -> Iterable[Metric]:
        figures = pool_figures(self.store, self.clock())
        yield GaugeMetricFamily(
            "hydracompute_workers_enrolled",
            "Workers enrolled and not revoked, online or not.",
            value=figures.workers_enrolled,
        )
        yield GaugeMetricFamily(
            "hydracompute_workers_online",
            "Workers seen within one lease lifetime that have neither left nor been revoked.",
            value=figures.workers_online,
        )
        yield GaugeMetricFamily(
            "hydracompute_workers_paused",
            "Online workers that their owner's rules paused.",
            value=figures.workers_paused,
        )
        yield GaugeMetricFamily(
            "hydracompute_cores_online", "Cores of the online workers.", value=figures.cores_online
        )
        yield GaugeMetricFamily(
            "hydracompute_leases_in_flight",
            "Active leases: chunks handed to workers and not yet returned, expired or abandoned.",
            value=figures.leases_in_flight,
        )
        jobs = GaugeMetricFamily("hydracompute_jobs", "Jobs by state.", labels=["state"])
        for state, count in figures.jobs.items():
            jobs.add_metric([state.value], count)
        yield jobs
