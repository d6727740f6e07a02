"""Passwords: the policy a new one must meet, and Argon2id hashing. No I/O, no clock.

Argon2id with argon2-cffi's defaults (RFC 9106's second recommended profile: 64 MiB, 3 passes);
a hash made with weaker parameters is re-hashed at the next successful sign-in.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

MIN_LENGTH = 10
MAX_LENGTH = 256  # Argon2 takes any length; this bounds the work an attacker can ask for

_HASHER = PasswordHasher()  # type Argon2id; stateless, safe to share


def policy_problem(password: str, email: str = "") -> str | None:
    """Why `password` may not be used, or None when it may."""
    if len(password) < MIN_LENGTH:
        return f"The password must be at least {MIN_LENGTH} characters long"
    if len(password) > MAX_LENGTH:
        return f"The password must be at most {MAX_LENGTH} characters long"
    if len(set(password)) < 4:
        return "The password must use at least 4 different characters"
    if email and password.lower() == email.lower():
        return "The password must not be the email address"
    return None


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def password_matches(password_hash: str | None, password: str) -> bool:
    if not password_hash:
        return False
    try:
        return _HASHER.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _HASHER.check_needs_rehash(password_hash)


def normalized_email(email: str) -> str | None:
    """The address as stored (trimmed, lower-cased), or None when it is not one."""
    email = email.strip().lower()
    local, at, domain = email.partition("@")
    if not at or not local or "." not in domain or domain.startswith(".") or domain.endswith("."):
        return None
    if len(email) > 320 or any(c.isspace() for c in email) or "@" in domain:
        return None
    return email
