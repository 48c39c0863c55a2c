"""The coordinator's Prometheus metrics, served at ``/metrics`` (see docs/metrics.md).

Two sources, kept apart on purpose:

- **events of this process** (results accepted and refused, how long exchanges, chunks and
  store transactions took) are counted in plain Python numbers, in O(1) per exchange or per
  result on the exchange's path, and exposed as counters and histograms when scraped
  (:class:`EventCollector`);
- **the pool's state** (workers, cores, leases in flight, jobs by state) is read from the
  store when scraped (:class:`PoolCollector`), never kept here: several coordinators
  sharing one database must report the same pool.

Each :class:`CoordinatorMetrics` has its own registry (not prometheus_client's global one),
so that several applications in one process, as in the tests, do not clash.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Iterable, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
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


class EventHistogram:
    """Observations counted per bucket in plain Python: a bisection and two additions,
    about a tenth of the cost of prometheus_client's ``Histogram.observe`` (2.4 µs, with
    its locks and exemplars), on the exchange's path. Exposed when scraped.

    Each histogram has one writing thread (the event loop, or the store thread); a scrape
    reads it from the store thread, and may see an observation's bucket before its sum.
    """

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last: above every bound
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def add_to(self, family: HistogramMetricFamily, labels: Sequence[str] = ()) -> None:
        counts, total = list(self.counts), self.sum
        cumulative = list(itertools.accumulate(counts))
        # (Bounds are written as Python writes them, e.g. 0.005 and 1.0, as Prometheus does.)
        buckets = [(repr(float(b)), c) for b, c in zip(self.bounds, cumulative, strict=False)]
        buckets.append(("+Inf", cumulative[-1]))
        family.add_metric(list(labels), buckets, total)


class CoordinatorMetrics:
    """One coordinator's metrics and the registry that exposes them.

    :meth:`recorded`, :meth:`granted` and :meth:`refused` are called on the event loop,
    :meth:`exchange_batch` and :meth:`exposition` on the store thread.

    Args:
        store: read when scraped, for the pool's state.
        clock: seconds since the epoch (who is online is judged at scrape time).
    """

    def __init__(self, store: Store, clock: Callable[[], float]) -> None:
        self.results_accepted = 0
        self.credit_granted = 0.0
        self.credit_withdrawn = 0.0
        self.exchanges_refused: dict[str, int] = {}
        self.exchange_latency = EventHistogram(LATENCY_BUCKETS_S)
        self.chunk_compute: dict[str, EventHistogram] = {}
        self.exchange_batches = EventHistogram(TRANSACTION_BUCKETS_S)
        #: lease id -> kind, for the leases this process granted (a cache: a result whose
        #: lease was granted before a restart, or by another coordinator, goes uncounted
        #: in the compute time, not in the results).
        self._lease_kinds: dict[str, str] = {}
        self.registry = CollectorRegistry()
        self.registry.register(EventCollector(self))
        self.registry.register(PoolCollector(store, clock))

    def granted(self, grants: Iterable[LeaseGrant]) -> None:
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
        self.credit_granted += outcome.credit_granted
        self.credit_withdrawn += outcome.credit_withdrawn
        if outcome.accepted:
            self.results_accepted += len(outcome.accepted)
            # (An exchange is recorded or refused whole: its results are all accepted.)
            for report in results:
                kind = self._lease_kinds.pop(report.lease_id, None)
                if kind is not None and report.error is None:
                    histogram = self.chunk_compute.get(kind)
                    if histogram is None:
                        histogram = self.chunk_compute[kind] = EventHistogram(COMPUTE_BUCKETS_S)
                    histogram.observe(report.compute_s)
        if outcome.leases:
            self.granted(outcome.leases)

    def refused(self, error: HydraError) -> None:
        reason = refusal_reason(error)
        self.exchanges_refused[reason] = self.exchanges_refused.get(reason, 0) + 1

    def exchange_batch(self, duration_s: float) -> None:
        """A batch of exchanges was recorded in one transaction of ``duration_s``."""
        self.exchange_batches.observe(duration_s)

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format; reads the store (call it on the store
        thread)."""
        return generate_latest(self.registry)


class EventCollector(Collector):
    """This process's events, as counted by :class:`CoordinatorMetrics`."""

    def __init__(self, metrics: CoordinatorMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        m = self.metrics
        yield CounterMetricFamily(
            "hydracompute_results_accepted",
            "Chunk results the store recorded or acknowledged (a result sent again is "
            "acknowledged again).",
            value=m.results_accepted,
        )
        yield CounterMetricFamily(
            "hydracompute_credit_granted",
            "Credit granted for accepted chunks (their work, once per agreeing copy).",
            value=m.credit_granted,
        )
        yield CounterMetricFamily(
            "hydracompute_credit_withdrawn",
            "Credit withdrawn from workers barred for a wrong output (their outputs accepted "
            "alone).",
            value=m.credit_withdrawn,
        )
        refused = CounterMetricFamily(
            "hydracompute_exchanges_refused",
            "Exchanges the store refused, by reason; each names one offending result, and "
            "none of the exchange's results is recorded.",
            labels=["reason"],
        )
        for reason, count in sorted(m.exchanges_refused.items()):
            refused.add_metric([reason], count)
        yield refused
        latency = HistogramMetricFamily(
            "hydracompute_exchange_latency_seconds",
            "Time to record an exchange (waiting for the store thread, then its batch's "
            "transaction and commit), without any long-poll hold.",
        )
        m.exchange_latency.add_to(latency)
        yield latency
        compute = HistogramMetricFamily(
            "hydracompute_chunk_compute_seconds",
            "Compute time of accepted chunks as their workers report it, by job kind.",
            labels=["kind"],
        )
        for kind, histogram in sorted(m.chunk_compute.items()):
            histogram.add_to(compute, [kind])
        yield compute
        transactions = HistogramMetricFamily(
            "hydracompute_store_transaction_seconds",
            "Time of a store transaction, its commit included, by operation.",
            labels=["operation"],
        )
        m.exchange_batches.add_to(transactions, ["exchange_batch"])
        yield transactions


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
            "hydracompute_workers_barred",
            "Workers barred for returning a wrong output (verification by replication).",
            value=figures.workers_barred,
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
