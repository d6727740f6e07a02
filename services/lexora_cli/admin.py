"""`lexora admin ...`: accounts, keys and credit, asked of a running platform over NATS
(`LEXORA_NATS_URL`, else the local stack's, else nats://127.0.0.1:4222) as its `admin` user, the
only one allowed to grant credit (`LEXORA_NATS_USER`/`LEXORA_NATS_PASSWORD`/`LEXORA_NATS_CA_FILE`,
else the local stack's admin password)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
import uuid
from collections.abc import Awaitable, Callable

from nats.aio.client import Client as NATS

from lexora_auth.client import AuthClient
from lexora_billing.client import BillingClient
from lexora_cli.accounts import open_funded_account
from lexora_cli.local import DEFAULT_NATS_PORT, read_nats_passwords, read_stack_file, state_dir_from_env
from lexora_contracts.accounts_api import CreateUserRequest
from lexora_contracts.errors import LexoraError
from lexora_contracts.messages import Balance
from lexora_contracts.money import micro_to_usd_str, usd_to_micro
from lexora_contracts.nats_permissions import ADMIN
from lexora_runtime.bus import NatsAccess, connect
from lexora_runtime.settings import ServiceSettings

Command = Callable[[argparse.Namespace, NATS], Awaitable[dict[str, object]]]


def nats_url_for_admin() -> str:
    return (
        os.environ.get("LEXORA_NATS_URL")
        or read_stack_file(state_dir_from_env()).get("nats_url")
        or f"nats://127.0.0.1:{DEFAULT_NATS_PORT}"
    )


def nats_access_for_admin() -> NatsAccess:
    access = ServiceSettings().nats_access
    if access.user:
        return access
    local_password = read_nats_passwords(state_dir_from_env()).get(ADMIN)
    return NatsAccess(ADMIN, local_password, access.ca_file) if local_password else access


async def create_key(args: argparse.Namespace, nc: NATS) -> dict[str, object]:
    funded = await open_funded_account(
        AuthClient(nc), BillingClient(nc), usd_to_micro(args.credits), plan=args.plan, name=args.name, actor=args.actor
    )
    return {**funded.account.model_dump(), "balance_usd": micro_to_usd_str(funded.balance_micro)}


async def grant(args: argparse.Namespace, nc: NATS) -> dict[str, object]:
    balance = await BillingClient(nc).grant(
        args.account,
        usd_to_micro(args.credits),
        idempotency_key=args.idempotency_key or f"admin:{uuid.uuid4().hex}",
        actor=args.actor,
        reason=args.reason,
    )
    return balance_view(balance)


async def balance(args: argparse.Namespace, nc: NATS) -> dict[str, object]:
    return balance_view(await BillingClient(nc).balance(args.account))


async def add_key(args: argparse.Namespace, nc: NATS) -> dict[str, object]:
    limit = usd_to_micro(args.spend_limit) if args.spend_limit is not None else None
    return (await AuthClient(nc).create_key(args.account, args.name, limit)).model_dump()


async def list_keys(args: argparse.Namespace, nc: NATS) -> dict[str, object]:
    return (await AuthClient(nc).list_keys(args.account)).model_dump(mode="json")


async def revoke_key(args: argparse.Namespace, nc: NATS) -> dict[str, object]:
    return {"revoked": (await AuthClient(nc).revoke_key(args.key)).key_id}


async def create_user(args: argparse.Namespace, nc: NATS) -> dict[str, object]:
    """A console user with their own account; `--admin` makes the first administrator."""
    password = os.environ.get("LEXORA_USER_PASSWORD") or getpass.getpass("Password for the new user: ")
    request = CreateUserRequest(
        email=args.email, password=password, role="admin" if args.admin else "user", plan=args.plan
    )
    user = await AuthClient(nc).create_user(request)
    return {"user_id": user.user_id, "email": user.email, "role": user.role, "account_id": user.account.account_id}


async def invite(args: argparse.Namespace, nc: NATS) -> dict[str, object]:
    reply = await AuthClient(nc).create_invitation(args.actor, args.email)
    return {"invitation": reply.token, "expires_at": reply.expires_at.isoformat()}


COMMANDS: dict[str, Command] = {
    "create-user": create_user,
    "invite": invite,
    "create-key": create_key,
    "grant": grant,
    "balance": balance,
    "add-key": add_key,
    "list-keys": list_keys,
    "revoke-key": revoke_key,
}


async def _run(command: Command, args: argparse.Namespace) -> dict[str, object]:
    nc = await connect(nats_url_for_admin(), "lexora-admin", nats_access_for_admin())
    try:
        return await command(args, nc)
    finally:
        await nc.drain()


def balance_view(balance: Balance) -> dict[str, object]:
    return {
        **balance.model_dump(),
        "balance_usd": micro_to_usd_str(balance.balance_micro),
        "available_usd": micro_to_usd_str(balance.available_micro),
    }


def add_parsers(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    admin = commands.add_parser("admin", help="administer a running stack over NATS").add_subparsers(
        dest="admin_command", required=True
    )
    create = admin.add_parser("create-key", help="create an account with an API key and initial credit")
    create.add_argument("--credits", default="0", help="initial credit in USD (e.g. 5 or 0.25)")
    create.add_argument("--plan", choices=["free", "pro", "enterprise"], default="free")
    create.add_argument("--name", default=None)
    create.add_argument("--actor", default=os.environ.get("USER", "admin"))
    add = admin.add_parser("grant", help="add credit to an account (recorded as an adjustment)")
    add.add_argument("--account", required=True)
    add.add_argument("--credits", required=True, help="amount in USD")
    add.add_argument("--reason", required=True)
    add.add_argument("--actor", default=os.environ.get("USER", "admin"))
    add.add_argument("--idempotency-key", default=None)
    show = admin.add_parser("balance", help="show an account's balance")
    show.add_argument("--account", required=True)
    new_key = admin.add_parser("add-key", help="create another API key for an account (shown once)")
    new_key.add_argument("--account", required=True)
    new_key.add_argument("--name", default=None)
    new_key.add_argument("--spend-limit", default=None, help="optional cap on the key's total spend, in USD")
    listing = admin.add_parser("list-keys", help="list an account's keys (prefix and last use, never the key)")
    listing.add_argument("--account", required=True)
    user = admin.add_parser(
        "create-user", help="create a console user (password from LEXORA_USER_PASSWORD, else asked for)"
    )
    user.add_argument("--email", required=True)
    user.add_argument("--admin", action="store_true", help="the user administers every account")
    user.add_argument("--plan", choices=["free", "pro", "enterprise"], default="free")
    invitation = admin.add_parser(
        "invite", help="create an invitation (sign-up mode 'invite'): <console>/signup?invitation=<token>"
    )
    invitation.add_argument("--email", default=None, help="the only address that may use it")
    invitation.add_argument("--actor", default=os.environ.get("USER", "admin"))
    revoke = admin.add_parser("revoke-key", help="revoke a key; every gateway refuses it within a second")
    revoke.add_argument("--key", required=True)


def run_admin(args: argparse.Namespace) -> int:
    try:
        result = asyncio.run(_run(COMMANDS[args.admin_command], args))
    except LexoraError as exc:
        print(json.dumps({"error": exc.info().model_dump()}), file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(json.dumps({"error": {"message": str(exc)}}), file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0
