"""The chunk life cycle and verification policy as pure functions: events in, decisions out."""

from __future__ import annotations

import math

import pytest

from hydracompute.core import lifecycle
from hydracompute.core.lifecycle import Accept, Bar, Confirm, Copy, FailJob, Hold, Released, Terms
from hydracompute.core.models import Chunk, ChunkState
from hydracompute.core.verification import (
    VerificationPolicy,
    agreeing_groups,
    default_quorum,
    max_copies,
    replication_errors,
)

POLICY = VerificationPolicy(error_bound=1e-2, saboteur_share=0.2, floor=0.1)
PLAIN = Terms()


def same(a: dict[str, int], b: dict[str, int]) -> bool:
    return a == b


def leased(wanted: int = 1, quorum: int = 1, holders: dict[str, str] | None = None) -> Chunk:
    chunk = Chunk("j", 3, 30, 40, quorum=quorum, wanted=wanted)
    for worker in holders or {"w1": "t1"}:
        lifecycle.granted(chunk, worker, (holders or {"w1": "t1"})[worker])
    return chunk


def report(
    chunk: Chunk,
    held: list[Copy],
    copy: Copy,
    terms: Terms = PLAIN,
    trust: int = 0,
    draw: float = 0.5,
) -> list[lifecycle.Decision]:
    return lifecycle.reported(chunk, held, copy, terms, POLICY, trust, draw, same)


GOOD = {"v": 1}
BAD = {"v": 2}


def test_without_verification_the_first_output_is_accepted_alone() -> None:
    chunk = leased()
    copy = Copy("l1", "w1", GOOD)
    assert report(chunk, [], copy) == [Accept(copy, (copy,))]
    assert chunk.state is ChunkState.DONE and not chunk.verified and chunk.unverified_by == ""
    assert chunk.holders == {}


def test_quorum_of_two_holds_the_first_copy_and_accepts_when_the_second_agrees() -> None:
    chunk = leased(wanted=2, quorum=2, holders={"w1": "t1", "w2": "t2"})
    assert chunk.state is ChunkState.LEASED
    first, second = Copy("l1", "w1", GOOD), Copy("l2", "w2", GOOD)
    assert report(chunk, [], first, Terms(2, 2)) == [Hold(first)]
    assert chunk.state is ChunkState.LEASED and chunk.reported == 1
    decisions = report(chunk, [first], second, Terms(2, 2))
    assert decisions == [Accept(first, (first, second)), Confirm(("w1", "w2"))]
    assert chunk.state is ChunkState.DONE and chunk.verified


def test_disagreement_asks_for_another_copy_and_the_quorum_bars_the_liar() -> None:
    chunk = leased(wanted=2, quorum=2, holders={"w1": "t1", "w2": "t2"})
    honest, liar, third = Copy("l1", "w1", GOOD), Copy("l2", "w2", BAD), Copy("l3", "w3", GOOD)
    report(chunk, [], honest, Terms(2, 2))
    decisions = report(chunk, [honest], liar, Terms(2, 2))
    # Two copies in play, the largest group one short: a third copy is wanted.
    assert decisions == [Hold(liar), Released()]
    assert chunk.wanted == 3 and chunk.state is ChunkState.PENDING
    lifecycle.granted(chunk, "w3", "t3")
    assert chunk.state is ChunkState.LEASED
    decisions = report(chunk, [honest, liar], third, Terms(2, 2))
    assert decisions[0] == Accept(honest, (honest, third), (liar,))
    assert decisions[1] == Confirm(("w1", "w3"))
    assert isinstance(decisions[2], Bar) and decisions[2].worker_id == "w2"


def test_copies_that_keep_disagreeing_are_disputed_then_fail_the_job() -> None:
    limit = max_copies(2, 2)
    chunk = leased(wanted=2, quorum=2, holders={"w1": "t1", "w2": "t2"})
    copies = [Copy(f"l{i}", f"w{i}", {"v": i}) for i in range(2 * limit)]
    for i, copy in enumerate(copies[:-1]):
        decisions = report(chunk, copies[:i], copy, Terms(2, 2))
        assert isinstance(decisions[0], Hold)
        # Past the bound, only workers with a confirmed output may add a copy.
        assert chunk.disputed == (i + 1 >= limit)
        assert chunk.wanted <= 2 * limit
    assert not lifecycle.may_hold_copy(chunk, "w99", "t99", True, confirmed=False)
    assert lifecycle.may_hold_copy(chunk, "w99", "t99", True, confirmed=True)
    decisions = report(chunk, copies[:-1], copies[-1], Terms(2, 2))
    assert len(decisions) == 1 and isinstance(decisions[0], FailJob)
    assert "disagree" in decisions[0].reason


def test_a_disputed_chunk_is_settled_by_a_confirmed_worker() -> None:
    limit = max_copies(2, 2)
    chunk = leased(wanted=2, quorum=2, holders={"w1": "t1", "w2": "t2"})
    copies = [Copy(f"l{i}", f"w{i}", {"v": i}) for i in range(limit)]
    for i, copy in enumerate(copies):
        report(chunk, copies[:i], copy, Terms(2, 2))
    assert chunk.disputed
    honest = Copy("lh", "wh", {"v": 0})  # agrees with the first copy
    decisions = report(chunk, copies, honest, Terms(2, 2))
    assert decisions[0] == Accept(copies[0], (copies[0], honest), tuple(copies[1:]))
    assert not chunk.disputed
    assert [d.worker_id for d in decisions if isinstance(d, Bar)] == ["w1", "w2", "w3"]


def test_adaptive_replicates_an_untrusted_workers_output() -> None:
    chunk = leased()
    copy = Copy("l1", "w1", GOOD)
    decisions = report(chunk, [], copy, Terms(adaptive=True), trust=0, draw=0.99)
    assert decisions == [Hold(copy), Released()]
    assert (chunk.quorum, chunk.wanted, chunk.state) == (2, 2, ChunkState.PENDING)


def test_adaptive_accepts_a_trusted_workers_output_alone_unless_the_draw_says_verify() -> None:
    trust = POLICY.trust_threshold
    p = POLICY.replicate_probability(trust)
    assert p == POLICY.floor
    chunk = leased()
    copy = Copy("l1", "w1", GOOD)
    assert report(chunk, [], copy, Terms(adaptive=True), trust, draw=p) == [
        Accept(copy, (copy,), unverified_by="w1")
    ]
    assert chunk.unverified_by == "w1" and not chunk.verified
    chunk = leased()
    assert isinstance(report(chunk, [], copy, Terms(adaptive=True), trust, draw=p - 1e-9)[0], Hold)


def test_trust_threshold_is_where_the_credibility_bound_meets_the_error_bound() -> None:
    k = POLICY.trust_threshold
    bound = POLICY.saboteur_share / ((1 - POLICY.saboteur_share) * math.e)
    assert bound / k <= POLICY.error_bound < bound / (k - 1)
    assert POLICY.replicate_probability(k - 1) == 1.0
    assert POLICY.replicate_probability(k) == POLICY.floor
    assert POLICY.replicate_probability(10 * k) == POLICY.floor
    assert VerificationPolicy().trust_threshold == 409  # ε 1e-4, f 0.1: stated in the docs


def test_spot_check_confirms_a_right_answer_and_bars_a_wrong_one() -> None:
    chunk = Chunk("j", 1, 0, 4, state=ChunkState.DONE, verified=True)
    assert lifecycle.checked_against_known(GOOD, Copy("l", "w9", GOOD), same, chunk) == [
        Confirm(("w9",))
    ]
    decisions = lifecycle.checked_against_known(GOOD, Copy("l", "w9", BAD), same, chunk)
    assert len(decisions) == 1 and isinstance(decisions[0], Bar)
    assert decisions[0].worker_id == "w9" and "verified" in decisions[0].reason


def test_a_barred_workers_accepted_chunk_is_reopened_for_verified_copies() -> None:
    chunk = leased()
    report(chunk, [], Copy("l1", "w1", GOOD), Terms(adaptive=True), 10**6, draw=0.99)
    assert chunk.unverified_by == "w1"
    lifecycle.reopened(chunk, quorum=1)
    assert chunk.state is ChunkState.PENDING
    assert (chunk.quorum, chunk.wanted, chunk.unverified_by) == (2, 2, "")


def test_a_barred_workers_held_copy_no_longer_counts() -> None:
    chunk = leased(wanted=2, quorum=2, holders={"w1": "t1", "w2": "t2"})
    report(chunk, [], Copy("l1", "w1", GOOD), Terms(2, 2))
    assert lifecycle.dropped_copy(chunk, "w1") == [Released()]
    assert chunk.holders == {"w2": "t2"} and chunk.reported == 0
    assert chunk.state is ChunkState.PENDING


def test_lapse_and_error_release_a_one_copy_chunk_only_when_no_copy_computes() -> None:
    chunk = leased(holders={"w1": "t1", "w2": "t2"})  # a backup copy
    assert chunk.holders == {}  # one copy wanted: not kept, counted from the leases
    assert lifecycle.lapsed(chunk, "w1", active_copies=1) == []
    assert chunk.state is ChunkState.LEASED
    assert lifecycle.lapsed(chunk, "w2", active_copies=0) == [Released()]
    assert chunk.state is ChunkState.PENDING
    lifecycle.granted(chunk, "w3", "t3")
    assert lifecycle.errored(chunk, "w3", "boom", now=7.0, max_failures=2) == [Released()]
    assert chunk.failed_by == {"w3": 7.0}
    lifecycle.granted(chunk, "w4", "t4")
    decisions = lifecycle.errored(chunk, "w4", "boom again", now=8.0, max_failures=2)
    assert len(decisions) == 1 and isinstance(decisions[0], FailJob)
    assert "boom again" in decisions[0].reason


def test_a_replicated_chunk_counts_its_holders() -> None:
    chunk = leased(wanted=2, quorum=2, holders={"w1": "t1", "w2": "t2"})
    assert lifecycle.lapsed(chunk, "w1", active_copies=99) == [Released()]  # not read
    assert chunk.holders == {"w2": "t2"} and chunk.state is ChunkState.PENDING
    lifecycle.granted(chunk, "w3", "t3")
    assert chunk.state is ChunkState.LEASED
    assert lifecycle.errored(chunk, "w3", "boom", now=1.0, max_failures=3) == [Released()]


def test_adaptive_verification_starts_keeping_holders_with_the_reporter() -> None:
    chunk = leased()
    assert not lifecycle.tracked(chunk)
    copy = Copy("l1", "w1", GOOD)
    decisions = lifecycle.reported(
        chunk, [], copy, Terms(adaptive=True), POLICY, 0, 0.5, same, reporter_token="t1"
    )
    assert decisions == [Hold(copy), Released()]
    assert lifecycle.tracked(chunk) and chunk.holders == {"w1": "t1"}
    assert not lifecycle.may_hold_copy(chunk, "w9", "t1", True)  # same volunteer


def test_copies_go_to_different_workers_and_volunteers() -> None:
    chunk = leased(wanted=2, quorum=2, holders={"w1": "alice"})
    assert not lifecycle.may_hold_copy(chunk, "w1", "alice", True)
    assert not lifecycle.may_hold_copy(chunk, "w2", "alice", True)
    assert lifecycle.may_hold_copy(chunk, "w2", "bob", True)
    # A pool whose workers all share one token (a home LAN): different workers suffice.
    assert lifecycle.may_hold_copy(chunk, "w2", "alice", False)


def test_agreeing_groups_largest_first_in_report_order() -> None:
    copies = [{"v": 1}, {"v": 2}, {"v": 2}, {"v": 1}, {"v": 3}]
    groups = agreeing_groups(copies, lambda c: c, same)
    assert groups == [[{"v": 1}, {"v": 1}], [{"v": 2}, {"v": 2}], [{"v": 3}]]


def test_replication_terms() -> None:
    assert [default_quorum(r) for r in range(1, 6)] == [1, 2, 2, 3, 3]
    assert replication_errors(2, 2) == {}
    assert "replication" in replication_errors(6, 2)
    assert "quorum" in replication_errors(2, 3)
    with pytest.raises(ValueError, match="error_bound"):
        VerificationPolicy(error_bound=0)


def pending(start: int = 0, stop: int = 100, **fields: object) -> Chunk:
    chunk = Chunk("j", 3, start, stop)
    for name, value in fields.items():
        setattr(chunk, name, value)
    return chunk


def test_a_reissued_chunk_with_no_copy_in_play_splits_into_two_new_chunks() -> None:
    chunk = pending(quorum=2, wanted=2)
    assert lifecycle.splittable(chunk)
    first, rest = lifecycle.split(chunk, 40, first_index=9)
    assert (first.index, first.start, first.stop) == (9, 0, 40)
    assert (rest.index, rest.start, rest.stop) == (10, 40, 100)
    for part in (first, rest):
        assert part.state is ChunkState.PENDING
        assert (part.quorum, part.wanted) == (2, 2) and not part.holders
    # The chunk is retired: done, no copy wanted, its range kept (a late output of one of
    # its lapsed leases passes its kind's check and is superseded, never accepted).
    assert lifecycle.retired(chunk) and (chunk.start, chunk.stop) == (0, 100)
    assert not lifecycle.splittable(chunk)
    with pytest.raises(ValueError, match="split"):
        lifecycle.split(pending(), 100, first_index=9)


@pytest.mark.parametrize(
    "fields",
    [
        {"state": ChunkState.LEASED},
        {"state": ChunkState.DONE},
        {"holders": {"w1": "t1"}, "wanted": 2},  # a copy in play or reported
        {"reported": 1, "wanted": 2},
        {"failures": 1},
        {"disputed": True},
        {"unverified_by": "w1"},
        {"stop": 1},  # one unit
    ],
)
def test_a_chunk_with_copies_to_compare_is_never_split(fields: dict[str, object]) -> None:
    # Copies of a chunk are compared on identical ranges: one reported or computing keeps
    # the chunk whole.
    assert not lifecycle.splittable(pending(**fields))
