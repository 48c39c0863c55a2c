"""How a PostgreSQL transaction saves round trips and stays exact: writes sent with the next
statement, rows held once locked, savepoints sent only when needed (see
``store/postgres/session.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from hydracompute.core.models import Worker
from hydracompute.errors import StoreError
from hydracompute.store import ResultReport, Store
from hydracompute.store.postgres import PostgresBackend
from hydracompute.store.postgres.session import Session
from hydracompute.store.records import ExchangeRequest
from tests.postgres_support import Schemas
from tests.sum_kind import SumKind, sum_registry
from tests.test_store_postgres import CONFIG


class Refused(Exception):
    pass


@pytest.fixture
def backend(postgres: Schemas) -> Iterator[PostgresBackend]:
    db = postgres.backend()
    yield db
    db.close()


def worker(worker_id: str) -> Worker:
    return Worker(worker_id, "w", 1, ["sum"], "hash", 0.0, 0.0)


def stored_ids(db: PostgresBackend) -> set[str]:
    with db.transaction(read_only=True):
        return {w.worker_id for w in db.list_workers()}


@pytest.fixture
def sends(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the round trips of every session (each ``send_many`` is one pipeline)."""
    counted = [0]
    send_many = Session.send_many

    def counting(self: Session, queries: Any) -> Any:
        counted[0] += 1
        return send_many(self, queries)

    monkeypatch.setattr(Session, "send_many", counting)
    return counted


def test_writes_wait_for_the_next_statement_which_sees_them(
    backend: PostgresBackend, sends: list[int]
) -> None:
    with backend.transaction():
        backend.put_worker(worker("w-a"))
        backend.put_worker(replace(worker("w-a"), name="renamed"))  # the last write wins
        assert sends == [0]  # nothing sent yet: not even BEGIN
        assert [w.name for w in backend.list_workers()] == ["renamed"]
        assert sends == [1]  # BEGIN, the write and the read: one round trip
        held = backend.get_worker("w-a")  # written by this transaction: held
        assert held is not None and held.name == "renamed" and sends == [1]
    assert stored_ids(backend) == {"w-a"}


def test_a_refused_nested_block_that_sent_nothing_is_undone_alone(
    backend: PostgresBackend,
) -> None:
    with backend.transaction():
        backend.put_worker(worker("w-kept"))
        with pytest.raises(Refused), backend.transaction():
            backend.put_worker(worker("w-undone"))
            kept = backend.get_worker("w-kept")
            assert kept is not None
            kept.name = "changed inside"
            backend.put_worker(kept)
            raise Refused
        assert backend.get_worker("w-undone") is None
        again = backend.get_worker("w-kept")
        assert again is not None and again.name == "w"  # as before the block
    assert stored_ids(backend) == {"w-kept"}


def test_a_refused_nested_block_that_sent_writes_is_rolled_back_to_its_savepoint(
    backend: PostgresBackend,
) -> None:
    with backend.transaction():
        backend.put_worker(worker("w-before"))
        with pytest.raises(Refused), backend.transaction():
            backend.put_worker(worker("w-undone"))
            # A read the database answers: the writes go first, after a savepoint.
            assert {w.worker_id for w in backend.list_workers()} == {"w-before", "w-undone"}
            raise Refused
        backend.put_worker(worker("w-after"))
        assert {w.worker_id for w in backend.list_workers()} == {"w-before", "w-after"}
        with backend.transaction():  # a later block that sends and ends well
            backend.put_worker(worker("w-nested"))
            backend.list_workers()
    assert stored_ids(backend) == {"w-before", "w-after", "w-nested"}


def test_a_statement_failing_in_a_nested_block_fails_the_whole_transaction(
    backend: PostgresBackend,
) -> None:
    with pytest.raises(StoreError, match="failed"), backend.transaction():
        backend.put_worker(worker("w-lost"))
        backend.list_workers()
        with pytest.raises(StoreError), backend.transaction():
            backend._db.execute("SELECT no_such_column FROM workers")
        # Swallowed inside, but the transaction cannot go on: the next statement is
        # refused at once, and so is the commit.
        with pytest.raises(StoreError, match="failed earlier"):
            backend.list_workers()
    assert stored_ids(backend) == set()


def test_a_batch_of_exchanges_costs_a_few_round_trips_however_many_it_holds(
    backend: PostgresBackend, sends: list[int]
) -> None:
    store = Store(backend, sum_registry(), CONFIG)
    store.submit_job("sum", {"n": 10**6}, now=0.0)
    workers = [store.enrol_worker(f"w{k}", 1, ["sum"], 0.0)[0].worker_id for k in range(40)]
    held = {w: list[ResultReport]() for w in workers}
    for step in range(1, 4):
        sends[0] = 0
        requests = [ExchangeRequest(w, held[w], [], 1, step * 0.01) for w in workers]
        outcomes = store.exchange_many(requests)
        accepted = 0
        for worker_id, outcome in zip(workers, outcomes, strict=True):
            assert not isinstance(outcome, Exception), outcome
            accepted += len(outcome.accepted)
            held[worker_id] = [
                ResultReport(g.lease_id, SumKind().compute(g.params, g.start, g.stop), 0.01)
                for g in outcome.leases
            ]
            assert len(held[worker_id]) == 1
        assert accepted == (0 if step == 1 else len(workers))
        # The rows locked up front; the first claim of pending chunks (none: the rest of
        # the batch knows it); the owners' usage; the commit. Not one per exchange.
        assert sends[0] <= 5
