"""The console's pure rules: password policy and hashing, CSRF tokens, session expiry, sign-in
attempt limits, sign-up mode, transaction ordering and the usage chart."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from lexora_auth import passwords, sessions
from lexora_auth.settings import AuthSettings
from lexora_auth.signin_limits import SignInLimiter
from lexora_billing.history import merged
from lexora_console import charts, csrf
from lexora_contracts.usage_api import Transaction

SECRET = "test-secret"


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("short", "at least 10"),
        ("aaaaaaaaaaaa", "4 different"),
        ("x" * 257, "at most 256"),
        ("me@example.com", "email"),
        ("correct horse battery", None),
    ],
)
def test_password_policy_names_the_problem(password: str, problem: str | None) -> None:
    found = passwords.policy_problem(password, "me@example.com")
    assert (found is None) if problem is None else (problem in found)


def test_passwords_are_argon2id_and_only_the_right_one_matches() -> None:
    stored = passwords.hash_password("correct horse battery")
    assert stored.startswith("$argon2id$")
    assert passwords.password_matches(stored, "correct horse battery")
    assert not passwords.password_matches(stored, "correct horse batterY")
    assert not passwords.password_matches("not a hash", "anything at all")
    assert not passwords.password_matches(None, "anything at all")


@pytest.mark.parametrize(
    ("email", "stored"),
    [(" Me@Example.COM ", "me@example.com"), ("no-at-sign", None), ("a@b", None), ("a b@c.d", None), ("@c.d", None)],
)
def test_emails_are_normalised_or_refused(email: str, stored: str | None) -> None:
    assert passwords.normalized_email(email) == stored


def test_a_csrf_token_must_be_ours_and_match_the_cookie() -> None:
    token = csrf.new_token(SECRET)
    assert csrf.submitted_matches(SECRET, token, token)
    assert not csrf.submitted_matches(SECRET, token, None)
    assert not csrf.submitted_matches(SECRET, token, csrf.new_token(SECRET))
    assert not csrf.submitted_matches("another secret", token, token)  # signed by someone else
    planted = "nonce.0123456789abcdef0123456789abcdef"
    assert not csrf.submitted_matches(SECRET, planted, planted)
    assert not csrf.is_signed(SECRET, "")


def test_a_session_ends_at_its_lifetime_or_when_idle() -> None:
    start = datetime(2026, 3, 1, tzinfo=UTC)
    assert not sessions.is_expired(start, start, start + timedelta(days=1))
    assert sessions.is_expired(start, start, start + sessions.IDLE)  # unused for the idle period
    busy = start + timedelta(days=13, hours=23)
    assert not sessions.is_expired(start, busy, busy + timedelta(minutes=30))
    assert sessions.is_expired(start, busy, start + sessions.LIFETIME)  # used daily, still ends
    assert sessions.should_touch(start, start + sessions.SEEN_PRECISION)
    assert not sessions.should_touch(start, start + timedelta(seconds=10))


def test_session_tokens_are_random_and_stored_hashed() -> None:
    first, second = sessions.new_token(), sessions.new_token()
    assert first != second and len(first) >= 43
    assert sessions.token_hash("pepper", first) != first
    assert sessions.token_hash("pepper", first) == sessions.token_hash("pepper", first)


def test_failed_sign_ins_are_limited_per_email_and_per_client() -> None:
    limits = SignInLimiter(window_s=60, per_email=3, per_client=5)
    for second in range(3):
        assert limits.retry_after("a@x.io", "10.0.0.1", second) is None
        limits.failed("a@x.io", "10.0.0.1", second)
    wait = limits.retry_after("a@x.io", "10.0.0.1", 3)
    assert wait == pytest.approx(57)
    for second in range(2):
        limits.failed(f"other{second}@x.io", "10.0.0.1", 10)
    assert limits.retry_after("new@x.io", "10.0.0.1", 11) is not None  # the address tried 5 times
    assert limits.retry_after("new@x.io", "10.0.0.2", 11) is None
    assert limits.retry_after("a@x.io", "10.0.0.2", 61) is None  # the window has passed


def test_a_successful_sign_in_clears_the_email_count() -> None:
    limits = SignInLimiter(window_s=60, per_email=2, per_client=100)
    limits.failed("a@x.io", "c", 0)
    limits.succeeded("a@x.io")
    limits.failed("a@x.io", "c", 1)
    assert limits.retry_after("a@x.io", "c", 2) is None


@pytest.mark.parametrize("mode", ["open", "invite", "closed"])
def test_signup_mode_is_a_setting(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEXORA_SIGNUP_MODE", mode)
    assert AuthSettings().signup_mode == mode


def test_an_unknown_signup_mode_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEXORA_SIGNUP_MODE", "sometimes")
    with pytest.raises(ValueError, match="signup_mode"):
        AuthSettings()


def test_history_is_newest_first_with_a_day_of_charges_above_its_credits() -> None:
    credit = Transaction(kind="topup", amount_micro=20_000_000, created_at=datetime(2026, 3, 2, 9, tzinfo=UTC))
    older = Transaction(kind="adjustment", amount_micro=1, created_at=datetime(2026, 3, 1, 9, tzinfo=UTC))
    charges = Transaction(kind="charges", amount_micro=-5, day=date(2026, 3, 2), count=3)
    assert merged([credit, older], [charges], 10) == [charges, credit, older]
    assert merged([credit, older], [charges], 2) == [charges, credit]


def test_the_usage_chart_scales_to_the_largest_day() -> None:
    bars = charts.daily_bars([("2026-03-01", 0.0), ("2026-03-02", 2.0), ("2026-03-03", 1.0)])
    assert [b.height for b in bars] == [0, charts.HEIGHT, charts.HEIGHT / 2]
    assert bars[1].y == 0 and bars[0].y == charts.HEIGHT
    assert bars[2].label == "2026-03-03: 1"
    assert charts.daily_bars([]) == []


def test_the_oidc_state_cookie_is_signed_and_short_lived() -> None:
    from lexora_gateway.account.oidc import STATE_TTL_S, read_state, safe_next, sign_state

    state = {"state": "s", "nonce": "n", "verifier": "v", "next": "/keys", "at": 1000.0}
    cookie = sign_state(SECRET, state)
    assert read_state(SECRET, cookie, 1000.0 + 5) == state
    assert read_state(SECRET, cookie, 1000.0 + STATE_TTL_S + 1) is None  # too old
    assert read_state("another secret", cookie, 1001.0) is None
    body, _, mac = cookie.rpartition(".")
    assert read_state(SECRET, body + "x." + mac, 1001.0) is None  # tampered
    assert read_state(SECRET, None, 1001.0) is None
    assert safe_next("//evil.example") == "/" and safe_next("https://evil.example") == "/"
    assert safe_next("/usage") == "/usage"
