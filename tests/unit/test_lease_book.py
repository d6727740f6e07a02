"""The gateway's credit lease bookkeeping (lexora_gateway.admission.lease_book), pure."""

from __future__ import annotations

from lexora_contracts.messages import LeaseReturnRequest
from lexora_gateway.admission.lease_book import LeaseBook

ACCOUNT = ("acct_a", None)


def book_with(amount: int = 100, use_until: float = 10.0) -> LeaseBook:
    book = LeaseBook()
    assert book.install(ACCOUNT, "L1", amount, use_until) is None
    return book


def test_requests_are_covered_while_the_free_part_holds_their_worst_case() -> None:
    book = book_with(100)
    assert book.cover(ACCOUNT, "r1", 60, 0.0) == "L1"
    assert book.cover(ACCOUNT, "r2", 41, 0.0) is None, "only 40 free"
    assert book.cover(ACCOUNT, "r2", 40, 0.0) == "L1"
    assert book.current(ACCOUNT).free_micro == 0  # type: ignore[union-attr]
    assert book.cover(("acct_b", None), "r3", 1, 0.0) is None, "another account has no lease"
    assert book.cover(("acct_a", "key_lim"), "r4", 1, 0.0) is None, "a limited key has its own"


def test_a_finished_request_gives_back_what_it_did_not_cost_and_an_unknown_cost_keeps_the_worst_case() -> None:
    book = book_with(100)
    book.cover(ACCOUNT, "r1", 60, 0.0)
    book.cover(ACCOUNT, "r2", 30, 0.0)
    book.finish("r1", 25)
    assert book.current(ACCOUNT).free_micro == 100 - 25 - 30  # type: ignore[union-attr]
    book.finish("r1", 0)  # a second report of the same request changes nothing
    book.finish("r2", None)
    lease = book.current(ACCOUNT)
    assert lease is not None and lease.free_micro == 100 - 25 - 30 and lease.requests == 2
    assert book.lease_of("r1") is None


def test_no_request_starts_on_a_lease_past_its_use_window() -> None:
    book = book_with(100, use_until=10.0)
    assert book.cover(ACCOUNT, "r1", 1, 9.9) == "L1"
    assert book.cover(ACCOUNT, "r2", 1, 10.0) is None


def test_a_retired_lease_returns_its_free_part_at_once_and_the_rest_when_its_last_request_ends() -> None:
    book = book_with(100)
    book.cover(ACCOUNT, "r1", 50, 0.0)
    book.cover(ACCOUNT, "r2", 20, 0.0)
    book.finish("r2", 5)
    assert book.retire_current(ACCOUNT) == LeaseReturnRequest(lease_id="L1", keep_micro=55, requests=2, final=True)
    assert book.current(ACCOUNT) is None
    book.install(ACCOUNT, "L2", 300, 10.0)
    assert book.cover(ACCOUNT, "r3", 10, 0.0) == "L2", "new requests go to the new lease"
    assert book.finish("r1", 12) == LeaseReturnRequest(lease_id="L1", keep_micro=17, requests=2, final=True)
    assert book.close() == [LeaseReturnRequest(lease_id="L2", keep_micro=10, requests=1, final=True)]


def test_a_recall_retires_every_lease_of_the_account_only() -> None:
    book = book_with(100)
    book.install(("acct_a", "key_lim"), "L2", 50, 10.0)
    book.install(("acct_b", None), "L3", 50, 10.0)
    book.cover(ACCOUNT, "r1", 30, 0.0)
    returns = book.recall("acct_a")
    assert sorted((r.lease_id, r.keep_micro, r.final) for r in returns) == [("L1", 30, True), ("L2", 0, True)]
    assert book.current(("acct_b", None)) is not None
    assert book.cover(ACCOUNT, "r2", 1, 0.0) is None


def test_the_periodic_pass_retires_leases_past_their_window_and_gives_up_on_requests_never_reported() -> None:
    book = book_with(100, use_until=10.0)
    book.cover(ACCOUNT, "old", 40, 0.0)
    assert book.due(5.0, stale_after_s=100) == []
    (retired,) = book.due(10.0, stale_after_s=100)
    assert retired == LeaseReturnRequest(lease_id="L1", keep_micro=40, requests=1, final=True)
    (last,) = book.due(101.0, stale_after_s=100)
    assert last == LeaseReturnRequest(lease_id="L1", keep_micro=40, requests=1, final=True), "worst case kept"
    assert book.close() == []


def test_a_lease_that_was_current_when_another_was_installed_is_retired_not_lost() -> None:
    book = book_with(100)
    book.cover(ACCOUNT, "r1", 10, 0.0)
    stray = book.install(ACCOUNT, "L2", 50, 10.0)
    assert stray == LeaseReturnRequest(lease_id="L1", keep_micro=10, requests=1, final=True)
    assert book.finish("r1", 3) == LeaseReturnRequest(lease_id="L1", keep_micro=3, requests=1, final=True)


def test_a_lease_that_covered_nothing_for_a_while_is_returned() -> None:
    book = LeaseBook()
    book.install(ACCOUNT, "L1", 100, use_until=100.0, now=0.0)
    assert book.due(1.0, stale_after_s=100, idle_s=2.0) == []
    book.cover(ACCOUNT, "r1", 10, 1.5)
    book.finish("r1", 4)
    assert book.due(3.0, stale_after_s=100, idle_s=2.0) == [], "used 1.5 s ago"
    assert book.due(3.5, stale_after_s=100, idle_s=2.0) == [
        LeaseReturnRequest(lease_id="L1", keep_micro=4, requests=1, final=True)
    ]
    assert book.current(ACCOUNT) is None


def test_closing_returns_every_lease_current_or_retired() -> None:
    book = book_with(100)
    book.install(("acct_b", None), "L2", 50, 10.0)
    book.cover(ACCOUNT, "r1", 30, 0.0)
    book.retire_current(ACCOUNT)  # r1 still in flight on it
    book.install(ACCOUNT, "L3", 70, 10.0)
    assert sorted((r.lease_id, r.keep_micro) for r in book.close()) == [("L1", 30), ("L2", 0), ("L3", 0)]
    assert book.close() == []
