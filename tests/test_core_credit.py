"""Credit as pure policy: granted on acceptance from the chunk's work, never from a claim;
each agreeing copy earns it; a liar's unverified credit is withdrawn by corrections."""

from __future__ import annotations

import pytest

from hydracompute.core import credit, lifecycle
from hydracompute.core.credit import (
    Contribution,
    CreditEntry,
    CreditPolicy,
    EntryKind,
    Grouping,
    grants,
    totals,
    withdrawal,
)
from hydracompute.core.lifecycle import Accept, Copy, Terms
from hydracompute.core.models import Chunk
from hydracompute.core.verification import VerificationPolicy
from hydracompute.kinds.pi import PiKind

POLICY = CreditPolicy(watts_per_core=10.0)
VERIFY = VerificationPolicy()


def same(a: dict[str, int], b: dict[str, int]) -> bool:
    return a == b


def accepted(chunk: Chunk, copies: list[Copy], terms: Terms) -> Accept:
    """Report ``copies`` of ``chunk`` one after the other; the life cycle's Accept."""
    for copy in copies:
        lifecycle.granted(chunk, copy.worker_id, "t-" + copy.worker_id)
    held: list[Copy] = []
    for copy in copies:
        decisions = lifecycle.reported(chunk, held, copy, terms, VERIFY, 0, 0.5, same)
        accepts = [d for d in decisions if isinstance(d, Accept)]
        if accepts:
            return accepts[0]
        held.append(copy)
    raise AssertionError("no copy was accepted")


def credit_of(accept: Accept, chunk: Chunk, work: float, compute_s: dict[str, float]) -> list:
    earners = [
        Contribution(c.worker_id, "t-" + c.worker_id, compute_s[c.worker_id])
        for c in accept.agreeing
    ]
    return grants(chunk.job_id, chunk.index, work, earners, 5.0, POLICY)


def test_a_chunk_is_worth_its_kind_work_whatever_the_worker_claims_or_takes() -> None:
    pi = PiKind()
    params = pi.validate({"samples": 10_000_000, "seed": 1})
    work = pi.units_of_work(params, 0, 3)
    fast = grants("j", 0, work, [Contribution("fast", "alice", 0.5)], 1.0, POLICY)
    slow = grants("j", 0, work, [Contribution("slow", "bob", 40.0)], 1.0, POLICY)
    assert fast[0].credit == slow[0].credit == work > 0
    # The slow worker spent more energy (its reported time, capped by the exchange) but
    # earns the same credit.
    assert (fast[0].energy_j, slow[0].energy_j) == (5.0, 400.0)


def test_credit_is_granted_only_when_the_chunk_is_accepted() -> None:
    chunk = Chunk("j", 0, 0, 10, quorum=2, wanted=2)
    lifecycle.granted(chunk, "a", "ta")
    lifecycle.granted(chunk, "b", "tb")
    first = lifecycle.reported(
        chunk, [], Copy("l1", "a", {"t": 1}), Terms(2, 2), VERIFY, 0, 0.5, same
    )
    # Held for agreement: no Accept, so nothing to credit yet.
    assert not [d for d in first if isinstance(d, Accept)]


def test_each_agreeing_copy_earns_the_chunk_a_disagreeing_one_nothing() -> None:
    chunk = Chunk("j", 0, 0, 10, quorum=2, wanted=3)
    copies = [Copy("l1", "a", {"t": 1}), Copy("l2", "liar", {"t": 2}), Copy("l3", "b", {"t": 1})]
    accept = accepted(chunk, copies, Terms(3, 2))
    entries = credit_of(accept, chunk, 10.0, {"a": 1.0, "b": 2.0, "liar": 1.0})
    assert {e.worker_id: e.credit for e in entries} == {"a": 10.0, "b": 10.0}
    assert all(e.kind is EntryKind.GRANT for e in entries)


def test_totals_equal_the_job_work_once_per_agreeing_replica() -> None:
    pi = PiKind()
    params = pi.validate({"samples": 1_000_000, "seed": 3})
    units = pi.total_units(params)
    bounds = [(0, 2), (2, 7), (7, units)]
    ledger: list[CreditEntry] = []
    for index, (start, stop) in enumerate(bounds):
        chunk = Chunk("j", index, start, stop, quorum=2, wanted=2)
        output = {"hits": index}
        accept = accepted(
            chunk, [Copy(f"l{index}a", "a", output), Copy(f"l{index}b", "b", output)], Terms(2, 2)
        )
        work = pi.units_of_work(params, start, stop)
        ledger += credit_of(accept, chunk, work, {"a": 1.0, "b": 3.0})
    by_worker = {t.key: t for t in totals(ledger, Grouping.WORKER)}
    assert by_worker["a"].credit == by_worker["b"].credit == pi.total_work(params)
    assert sum(t.credit for t in by_worker.values()) == 2 * pi.total_work(params)
    assert by_worker["a"].chunks == by_worker["b"].chunks == len(bounds)


def test_a_liars_unverified_credit_is_withdrawn_by_a_correction_never_an_edit() -> None:
    chunk = Chunk("j", 4, 0, 10)
    lifecycle.granted(chunk, "liar", "t-liar")
    decisions = lifecycle.reported(
        chunk, [], Copy("l1", "liar", {"t": 9}), Terms(adaptive=True), VERIFY, 10**6, 0.99, same
    )
    accept = next(d for d in decisions if isinstance(d, Accept))
    assert accept.unverified_by == "liar"
    granted = credit_of(accept, chunk, 10.0, {"liar": 2.0})
    correction = withdrawal(granted, now=9.0)
    assert correction is not None and correction.kind is EntryKind.CORRECTION
    assert (correction.credit, correction.work, correction.energy_j) == (-10.0, -10.0, -20.0)
    assert correction.time_s == 9.0 and granted[0].credit == 10.0  # the grant is unchanged
    ledger = [*granted, correction]
    (total,) = totals(ledger, Grouping.VOLUNTEER)
    assert (total.key, total.credit, total.chunks, total.energy_j) == ("t-liar", 0.0, 0, 0.0)
    # Withdrawn once: nothing is left to withdraw.
    assert withdrawal(ledger, now=10.0) is None


def test_a_withdrawal_is_for_one_worker_and_one_chunk() -> None:
    entries = grants(
        "j", 0, 5.0, [Contribution("a", "ta", 1), Contribution("b", "tb", 1)], 1.0, POLICY
    )
    with pytest.raises(ValueError):
        withdrawal(entries, 2.0)
    assert withdrawal([], 2.0) is None


def test_payouts_are_energy_at_the_rate_in_millionths() -> None:
    total = credit.CreditTotal("alice", 3, 30.0, 30.0, energy_j=7.2e6)  # 2 kWh
    assert total.payout_micros(0.30) == 600_000
    with pytest.raises(ValueError):
        CreditPolicy(watts_per_core=-1)
