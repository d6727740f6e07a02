"""The benchmark's database checks, their pure parts: what a window's row makes of settlement
figures (requests charged against credit leases through the stack, reservations over NATS), what
is still to settle, and the exactly-once verdict. The SQL itself runs in every bench run."""

from __future__ import annotations

from bench import db_checks


def _request_row(**overrides: object) -> dict[str, object]:
    row: dict[str, object] = {
        "requests": 120,
        "costed": 118,
        "settled": 119,
        "span_s": 2.0,
        "lag_p50_s": 0.0123,
        "lag_p99_s": 0.0871,
        "not_charged_once": 0,
        "charge_differs_from_usage": 0,
        "leases": 3,
    }
    row.update(overrides)
    return row


def test_stack_window_figures_come_from_requests_and_their_charges() -> None:
    figures = db_checks.request_window_figures(_request_row())
    assert figures["requests"] == 120 and figures["costed_requests"] == 118 and figures["leases"] == 3
    assert figures["settle_rps"] == 59.5  # 119 charged in 2 s
    assert figures["settle_lag_ms_p50"] == 12.3 and figures["settle_lag_ms_p99"] == 87.1
    assert figures["charged_exactly_once"] is True
    assert "reservations" not in figures


def test_stack_window_is_not_exactly_once_when_a_costed_request_is_uncharged_or_mischarged() -> None:
    assert db_checks.request_window_figures(_request_row(not_charged_once=1))["charged_exactly_once"] is False
    assert db_checks.request_window_figures(_request_row(charge_differs_from_usage=2))["charged_exactly_once"] is False
    # An empty window, or one where nothing cost anything, proves nothing.
    empty = _request_row(requests=0, costed=0, settled=0, span_s=None, lag_p50_s=None, lag_p99_s=None)
    figures = db_checks.request_window_figures(empty)
    assert figures["charged_exactly_once"] is False and figures["settle_rps"] is None
    assert figures["settle_lag_ms_p99"] == 0.0
    assert db_checks.request_window_figures(_request_row(costed=0))["charged_exactly_once"] is False


def test_reservation_window_needs_every_reservation_settled_and_charged_once() -> None:
    row = {
        "reservations": 500,
        "settled": 500,
        "span_s": 4.0,
        "lag_p50_s": 0.2,
        "lag_p99_s": 0.5,
        "not_charged_once": 0,
        "charge_differs_from_usage": 0,
    }
    figures = db_checks.reservation_window_figures(row)
    assert figures["settle_rps"] == 125.0 and figures["settle_lag_ms_p99"] == 500.0
    assert figures["charged_exactly_once"] is True
    assert db_checks.reservation_window_figures({**row, "settled": 499})["charged_exactly_once"] is False
    assert db_checks.reservation_window_figures({**row, "not_charged_once": 1})["charged_exactly_once"] is False


def test_still_to_do_names_every_nonzero_count() -> None:
    counts = {
        "reservations_held": 0,
        "reservations_not_recorded_by_usage": 0,
        "leases_open": 2,
        "costed_requests_not_charged": 0,
        "charges_not_recorded_by_usage": 7,
        "balances_holding": 1,
    }
    assert db_checks.still_to_do(counts) == [
        "leases_open = 2",
        "charges_not_recorded_by_usage = 7",
        "balances_holding = 1",
    ]
    assert db_checks.still_to_do(dict.fromkeys(counts, 0)) == []


def test_verdict_ignores_totals_and_notes_and_names_each_problem() -> None:
    checks = {name: 1000 for name in db_checks.TOTALS} | dict.fromkeys(db_checks.CHECKS, 0)
    passed = db_checks.verdict(checks, {"usage_records_by_status": "200: 1000"})
    assert passed["passed"] is True and passed["problems"] == []
    assert passed["usage_records_by_status"] == "200: 1000" and passed["credit_leases"] == 1000
    failed = db_checks.verdict(checks | {"leases_not_closed": 2, "balances_with_money_still_held": 1}, {})
    assert failed["passed"] is False
    assert failed["problems"] == ["leases_not_closed = 2", "balances_with_money_still_held = 1"]


def test_the_exactly_once_check_covers_leases_and_no_longer_expects_a_reservation_per_request() -> None:
    for check in (
        "leases_not_closed",
        "leases_still_holding",
        "closed_leases_settled_requests_not_as_returned",
        "leases_where_grant_differs_from_charged_plus_released",
        "accounts_where_lease_settlements_differ_from_their_requests_charges",
        "balances_with_money_still_held",
        "balances_held_not_equal_to_ledger_holds",
        "charged_usage_without_exactly_one_matching_charge",
    ):
        assert check in db_checks.CHECKS
    # Requests through the stack have no reservation: the reservations are counted, not checked
    # against the usage records.
    assert "reservations" in db_checks.TOTALS and "credit_leases" in db_checks.TOTALS
