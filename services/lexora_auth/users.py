"""Users, sessions and invitations in the database (auth owns users, sessions, invitations, and the
accounts a sign-up creates). Passwords are Argon2id hashes; session and invitation tokens are stored
only as keyed hashes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from lexora_auth import keys, passwords, sessions
from lexora_contracts.accounts_api import (
    AccountInfo,
    AccountUpdate,
    InvitationReply,
    Role,
    SessionReply,
    SignupMode,
    UserInfo,
    UserUpdate,
)
from lexora_contracts.errors import Conflict, Forbidden, InvalidRequest, NotFound, Unauthorized
from lexora_contracts.messages import Plan
from lexora_db.schema import accounts, api_keys, invitations, users
from lexora_db.schema import sessions as session_rows

INVITATION_LIFETIME = timedelta(days=7)
WRONG_CREDENTIALS = "Wrong email or password"


def valid_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        message = f"'{name}' is not a timezone (use an IANA name such as Europe/Paris)"
        raise InvalidRequest(message, param="timezone") from None
    return name


def checked_email(email: str) -> str:
    normalized = passwords.normalized_email(email)
    if normalized is None:
        raise InvalidRequest("That is not an email address", param="email")
    return normalized


def checked_password(password: str, email: str) -> str:
    problem = passwords.policy_problem(password, email)
    if problem:
        raise InvalidRequest(problem, param="password")
    return password


def _account_info(row: Any) -> AccountInfo:
    return AccountInfo(
        account_id=row.id,
        name=row.name,
        plan=row.plan,
        timezone=row.timezone,
        created_at=row.created_at,
        disabled=row.disabled_at is not None,
        email=row.email,
        role=row.role,
    )


ACCOUNT_COLUMNS = (
    accounts.c.id,
    accounts.c.name,
    accounts.c.plan,
    accounts.c.timezone,
    accounts.c.created_at,
    accounts.c.disabled_at,
    users.c.email,
    users.c.role,
)


class UserStore:
    def __init__(self, engine: AsyncEngine, pepper: str):
        self._engine = engine
        self._pepper = pepper
        # What an unknown email's password is checked against, so sign-in takes as long either way.
        self._decoy_hash = passwords.hash_password(sessions.new_token())

    # ---- users --------------------------------------------------------------------------------
    async def sign_up(
        self, email: str, password: str, timezone: str, invitation: str | None, mode: SignupMode
    ) -> SessionReply:
        email = checked_email(email)
        checked_password(password, email)
        valid_timezone(timezone)
        if mode == "closed":
            raise Forbidden("Sign-up is closed on this installation: ask an administrator for an account")
        now = datetime.now(UTC)
        password_hash = await asyncio.to_thread(passwords.hash_password, password)
        async with self._engine.begin() as conn:
            if mode == "invite" or invitation:
                await self._use_invitation(conn, invitation, email, now)
            user_id = await self._insert_user(conn, email, password_hash, "user", "free", timezone, now)
        return await self._open_session(user_id, now)

    async def create_user(self, email: str, password: str, role: Role, plan: Plan) -> UserInfo:
        email = checked_email(email)
        checked_password(password, email)
        now = datetime.now(UTC)
        password_hash = await asyncio.to_thread(passwords.hash_password, password)
        async with self._engine.begin() as conn:
            user_id = await self._insert_user(conn, email, password_hash, role, plan, "UTC", now)
        return await self.user(user_id)

    async def _insert_user(
        self,
        conn: AsyncConnection,
        email: str,
        password_hash: str | None,
        role: Role,
        plan: Plan,
        timezone: str,
        now: datetime,
    ) -> str:
        taken = (await conn.execute(select(users.c.id).where(users.c.email == email))).first()
        if taken is not None:
            raise Conflict("An account with this email exists: sign in instead", param="email")
        account_id, user_id = keys.new_id("acct"), keys.new_id("user")
        await conn.execute(
            insert(accounts).values(id=account_id, name=email, plan=plan, timezone=timezone, created_at=now)
        )
        try:
            await conn.execute(
                insert(users).values(
                    id=user_id,
                    account_id=account_id,
                    email=email,
                    password_hash=password_hash,
                    role=role,
                    created_at=now,
                )
            )
        except IntegrityError:
            raise Conflict("An account with this email exists: sign in instead", param="email") from None
        return user_id

    async def user(self, user_id: str) -> UserInfo:
        query = select(*ACCOUNT_COLUMNS, users.c.id.label("user_id")).join_from(users, accounts)
        async with self._engine.connect() as conn:
            row = (await conn.execute(query.where(users.c.id == user_id))).first()
        if row is None:
            raise NotFound(f"No user {user_id}")
        return UserInfo(user_id=row.user_id, email=row.email, role=row.role, account=_account_info(row))

    async def update_user(self, request: UserUpdate) -> UserInfo:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(users).where(users.c.id == request.user_id))).first()
        if row is None:
            raise NotFound(f"No user {request.user_id}")
        if request.email is None and request.new_password is None:
            return await self.user(request.user_id)
        ok = await asyncio.to_thread(passwords.password_matches, row.password_hash, request.current_password or "")
        if not ok:
            raise InvalidRequest("The current password is wrong", param="current_password")
        values: dict[str, Any] = {}
        email = row.email
        if request.email is not None:
            values["email"] = email = checked_email(request.email)
        if request.new_password is not None:
            checked_password(request.new_password, email)
            values["password_hash"] = await asyncio.to_thread(passwords.hash_password, request.new_password)
        try:
            async with self._engine.begin() as conn:
                await conn.execute(update(users).where(users.c.id == request.user_id).values(**values))
        except IntegrityError:
            raise Conflict("Another account uses this email", param="email") from None
        return await self.user(request.user_id)

    # ---- sessions -----------------------------------------------------------------------------
    async def sign_in(self, email: str, password: str) -> SessionReply:
        email = passwords.normalized_email(email) or ""
        async with self._engine.connect() as conn:
            query = select(users.c.id, users.c.password_hash, accounts.c.disabled_at).join_from(users, accounts)
            row = (await conn.execute(query.where(users.c.email == email))).first()
        stored = row.password_hash if row is not None and row.password_hash else self._decoy_hash
        if not await asyncio.to_thread(passwords.password_matches, stored, password) or row is None:
            raise Unauthorized(WRONG_CREDENTIALS)
        if row.disabled_at is not None:
            raise Forbidden("This account is disabled")
        if passwords.needs_rehash(stored):
            new_hash = await asyncio.to_thread(passwords.hash_password, password)
            async with self._engine.begin() as conn:
                await conn.execute(update(users).where(users.c.id == row.id).values(password_hash=new_hash))
        return await self._open_session(row.id, datetime.now(UTC))

    async def sign_in_external(self, email: str, mode: SignupMode) -> SessionReply:
        """A session for the user with this (provider-verified) email; a new user when sign-up is
        open. Such a user has no password until they set one (Settings needs the current one, so
        they keep signing in through the provider)."""
        email = checked_email(email)
        now = datetime.now(UTC)
        async with self._engine.begin() as conn:
            query = select(users.c.id, accounts.c.disabled_at).join_from(users, accounts)
            row = (await conn.execute(query.where(users.c.email == email))).first()
            if row is None:
                if mode != "open":
                    raise Forbidden("No account for this email here, and sign-up is not open: ask an administrator")
                user_id = await self._insert_user(conn, email, None, "user", "free", "UTC", now)
            elif row.disabled_at is not None:
                raise Forbidden("This account is disabled")
            else:
                user_id = row.id
        return await self._open_session(user_id, now)

    async def _open_session(self, user_id: str, now: datetime) -> SessionReply:
        token = sessions.new_token()
        expires = sessions.expires_at(now, now)
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(session_rows).values(
                    token_hash=sessions.token_hash(self._pepper, token),
                    user_id=user_id,
                    created_at=now,
                    last_seen_at=now,
                    expires_at=expires,
                )
            )
        return SessionReply(token=token, expires_at=expires, user=await self.user(user_id))

    async def verify_session(self, token: str) -> UserInfo:
        token_hash = sessions.token_hash(self._pepper, token)
        now = datetime.now(UTC)
        query = (
            select(session_rows, accounts.c.disabled_at)
            .join_from(session_rows, users)
            .join(accounts, accounts.c.id == users.c.account_id)
            .where(session_rows.c.token_hash == token_hash)
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None or sessions.is_expired(row.created_at, row.last_seen_at, now):
            raise Unauthorized("Not signed in, or the session has ended: sign in again")
        if row.disabled_at is not None:
            raise Unauthorized("This account is disabled")
        if sessions.should_touch(row.last_seen_at, now):
            async with self._engine.begin() as conn:
                await conn.execute(
                    update(session_rows)
                    .where(session_rows.c.token_hash == token_hash)
                    .values(last_seen_at=now, expires_at=sessions.expires_at(row.created_at, now))
                )
        return await self.user(row.user_id)

    async def delete_session(self, token: str) -> bool:
        token_hash = sessions.token_hash(self._pepper, token)
        async with self._engine.begin() as conn:
            result = await conn.execute(delete(session_rows).where(session_rows.c.token_hash == token_hash))
        return bool(result.rowcount)

    # ---- invitations --------------------------------------------------------------------------
    async def create_invitation(self, created_by: str, email: str | None) -> InvitationReply:
        now = datetime.now(UTC)
        token = sessions.new_token()
        expires = now + INVITATION_LIFETIME
        async with self._engine.begin() as conn:
            await conn.execute(
                insert(invitations).values(
                    token_hash=sessions.token_hash(self._pepper, "invite:" + token),
                    created_by=created_by,
                    email=checked_email(email) if email else None,
                    created_at=now,
                    expires_at=expires,
                )
            )
        return InvitationReply(token=token, expires_at=expires)

    async def _use_invitation(self, conn: AsyncConnection, token: str | None, email: str, now: datetime) -> None:
        if not token:
            raise Forbidden("Sign-up is by invitation only: open the invitation link you were sent")
        used = await conn.execute(
            update(invitations)
            .where(
                invitations.c.token_hash == sessions.token_hash(self._pepper, "invite:" + token),
                invitations.c.used_at.is_(None),
                invitations.c.expires_at > now,
                or_(invitations.c.email.is_(None), invitations.c.email == email),
            )
            .values(used_at=now)
        )
        if used.rowcount != 1:
            raise Forbidden("This invitation is not valid: it was used, has expired, or is for another email")

    # ---- accounts (admin) ---------------------------------------------------------------------
    def _accounts_query(self):  # type: ignore[no-untyped-def]
        return select(*ACCOUNT_COLUMNS).select_from(accounts.outerjoin(users, users.c.account_id == accounts.c.id))

    async def account(self, account_id: str) -> AccountInfo:
        async with self._engine.connect() as conn:
            row = (await conn.execute(self._accounts_query().where(accounts.c.id == account_id))).first()
        if row is None:
            raise NotFound(f"No account {account_id}")
        return _account_info(row)

    async def search_accounts(self, text: str, limit: int) -> list[AccountInfo]:
        query = self._accounts_query()
        if text.strip():
            pattern = "%" + text.strip().lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            query = query.where(
                or_(
                    func.lower(users.c.email).like(pattern, escape="\\"),
                    func.lower(accounts.c.id).like(pattern, escape="\\"),
                    func.lower(accounts.c.name).like(pattern, escape="\\"),
                )
            )
        query = query.order_by(accounts.c.created_at.desc()).limit(limit)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_account_info(row) for row in rows]

    async def update_account(self, request: AccountUpdate) -> tuple[AccountInfo, list[str]]:
        """The account after the change, and its key ids (whose cached verifications are now stale)."""
        values: dict[str, Any] = {}
        if request.plan is not None:
            values["plan"] = request.plan
        if request.timezone is not None:
            values["timezone"] = valid_timezone(request.timezone)
        if request.disabled is not None:
            values["disabled_at"] = datetime.now(UTC) if request.disabled else None
        async with self._engine.begin() as conn:
            if values:
                change = update(accounts).where(accounts.c.id == request.account_id).values(**values)
                result = await conn.execute(change)
                if result.rowcount != 1:
                    raise NotFound(f"No account {request.account_id}")
            key_ids = (
                await conn.execute(select(api_keys.c.id).where(api_keys.c.account_id == request.account_id))
            ).scalars()
            key_ids = list(key_ids)
        return await self.account(request.account_id), key_ids
