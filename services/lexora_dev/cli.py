"""`lexora`: run the local platform (`lexora dev`) and administer it (`lexora admin ...`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel

from lexora_contracts import subjects
from lexora_contracts.errors import LexoraError
from lexora_contracts.messages import (
    Balance,
    BalanceRequest,
    CreateAccountReply,
    CreateAccountRequest,
    CreateKeyReply,
    CreateKeyRequest,
    GrantRequest,
    KeyList,
    KeyRevoked,
    ListKeysRequest,
    RevokeKeyRequest,
)
from lexora_contracts.money import micro_to_usd_str, usd_to_micro
from lexora_dev import stack
from lexora_dev.catalog import (
    LOCAL_CHAT_MODEL,
    LOCAL_EMBEDDING_MODEL,
    LOCAL_IMAGE_MODEL,
    LOCAL_THINKING_MODEL,
    local_catalog,
)
from lexora_dev.processes import ManagedProcess, port_is_free
from lexora_runtime.bus import call, connect

R = TypeVar("R", bound=BaseModel)
DEFAULT_STATE_DIR = ".lexora"
DEFAULT_NATS_PORT = 4222


def state_dir_from_env() -> Path:
    return Path(os.environ.get("LEXORA_STATE_DIR", DEFAULT_STATE_DIR)).resolve()


# ---- lexora dev --------------------------------------------------------------------------------
def run_dev(args: argparse.Namespace) -> int:
    state_dir = state_dir_from_env()
    gateway_port = int(os.environ.get("LEXORA_PORT", "8080"))
    database_url = os.environ.get("DATABASE_URL") or f"sqlite+aiosqlite:///{state_dir / 'lexora.db'}"
    if not port_is_free(gateway_port):
        print(f"Port {gateway_port} is taken; set LEXORA_PORT to another port.", file=sys.stderr)
        return 1
    nats_port = DEFAULT_NATS_PORT if port_is_free(DEFAULT_NATS_PORT) else stack.free_port()
    nats_url = f"nats://127.0.0.1:{nats_port}"
    processes: list[ManagedProcess] = []
    triton: stack.SupervisedTriton | None = None

    def request_stop(*_: object) -> None:
        raise KeyboardInterrupt

    # Installed explicitly: a launcher started in the background inherits SIGINT as ignored.
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        say(f"state directory {state_dir}")
        processes.append(stack.start_nats(state_dir, nats_port))
        say(f"nats-server with JetStream on {nats_url}")
        stack.prepare_database(database_url)
        say(f"database ready ({database_url.split('://')[0]})")
        say("starting tritonserver (loading the model takes a few seconds)")
        triton = stack.SupervisedTriton(state_dir)
        endpoint = triton.endpoint
        say(f"tritonserver serving model-repo/ (gRPC {endpoint.grpc_address}, HTTP {endpoint.http_address})")
        catalog = local_catalog(endpoint)
        processes.append(stack.start_model_recovery(state_dir, endpoint, catalog))
        stack.publish_catalog(nats_url, catalog)
        job_timeout_s = float(os.environ.get("LEXORA_JOB_TIMEOUT_S", "120"))
        config = stack.ServiceConfig(nats_url, database_url, state_dir, gateway_port, job_timeout_s=job_timeout_s)
        services_started = time.time()
        for service in stack.SERVICES:
            processes.append(stack.start_service(service, config))
        stack.wait_for_gateway(gateway_port, processes[-1])
        say("warming up: one small request to every model")
        failing = stack.wait_for_warm_up(nats_url, catalog, since=services_started)
        stack.write_stack_file(state_dir, {"nats_url": nats_url, "gateway_url": f"http://127.0.0.1:{gateway_port}"})
        print_welcome(gateway_port, state_dir, failing)
        while True:
            for process in processes:
                if not process.alive:
                    say(f"{process.name} exited unexpectedly; stopping. Its log:\n{process.log_tail()}")
                    return 1
            if not triton.process.alive:  # a crashed engine can take the server with it: start it again
                say(f"tritonserver exited unexpectedly; starting it again. Its log:\n{triton.process.log_tail(8)}")
                triton.keep_alive()
                say("tritonserver is serving again")
            time.sleep(0.5)
    except KeyboardInterrupt:
        return 0
    except Exception as exc:  # start-up failed: say why, then clean up
        say(f"could not start: {exc}")
        return 1
    finally:
        say("stopping...")
        for process in reversed(processes):
            process.stop()
        if triton is not None:
            triton.stop()
        (state_dir / "stack.json").unlink(missing_ok=True)
        say("stopped")


def say(message: str) -> None:
    print(f"[lexora] {message}", flush=True)


def print_welcome(port: int, state_dir: Path, failing: dict[str, str]) -> None:
    if failing:
        lines = "\n".join(f"  {model}: {reason}" for model, reason in sorted(failing.items()))
        print(
            f"""
WARNING: these models failed their warm-up request and cannot serve (they answer 503):
{lines}
Lexora reloads a failed model by itself (logs/model-recovery.log); a model whose engine crashes
again at once is usually a broken build: `rm -rf .venv && make dev` rebuilds it (the engine log
is {state_dir / "logs" / "triton.log"}).
""",
            flush=True,
        )
    print(
        f"""
Lexora is up{" (degraded: see the warning above)" if failing else ""}.
  API:      http://127.0.0.1:{port}/v1   (also /api/v1)
  Health:   http://127.0.0.1:{port}/v1/health
  Models:   {LOCAL_CHAT_MODEL}, {LOCAL_THINKING_MODEL} (thinks),
            {LOCAL_EMBEDDING_MODEL}, {LOCAL_IMAGE_MODEL}
  Logs:     {state_dir / "logs"}

Create a key with $5 of credit (in another terminal):
  .venv/bin/lexora admin create-key --credits 5

Then, with the openai SDK:
  OpenAI(base_url="http://127.0.0.1:{port}/v1", api_key="<api_key>")

Ctrl-C stops everything.
""",
        flush=True,
    )


# ---- lexora admin -----------------------------------------------------------------------------
def nats_url_for_admin() -> str:
    return (
        os.environ.get("LEXORA_NATS_URL")
        or stack.read_stack_file(state_dir_from_env()).get("nats_url")
        or f"nats://127.0.0.1:{DEFAULT_NATS_PORT}"
    )


async def create_key(args: argparse.Namespace) -> dict[str, object]:
    amount = usd_to_micro(args.credits)
    nc = await connect(nats_url_for_admin(), "lexora-admin")
    try:
        account = await call(
            nc, subjects.AUTH_ACCOUNT_CREATE, CreateAccountRequest(plan=args.plan, name=args.name), CreateAccountReply
        )
        result: dict[str, object] = account.model_dump()
        if amount:
            balance = await call(
                nc,
                subjects.BILLING_CREDITS_GRANT,
                GrantRequest(
                    account_id=account.account_id,
                    amount_micro=amount,
                    idempotency_key=f"create-key:{account.account_id}",
                    actor=args.actor,
                    reason="initial credit at account creation",
                ),
                Balance,
            )
            result["balance_usd"] = micro_to_usd_str(balance.balance_micro)
        else:
            result["balance_usd"] = micro_to_usd_str(0)
        return result
    finally:
        await nc.drain()


async def grant(args: argparse.Namespace) -> dict[str, object]:
    request = GrantRequest(
        account_id=args.account,
        amount_micro=usd_to_micro(args.credits),
        idempotency_key=args.idempotency_key or f"admin:{uuid.uuid4().hex}",
        actor=args.actor,
        reason=args.reason,
    )
    return balance_view(await _ask(subjects.BILLING_CREDITS_GRANT, request, Balance))


async def balance(args: argparse.Namespace) -> dict[str, object]:
    return balance_view(await _ask(subjects.BILLING_BALANCE_GET, BalanceRequest(account_id=args.account), Balance))


async def add_key(args: argparse.Namespace) -> dict[str, object]:
    limit = usd_to_micro(args.spend_limit) if args.spend_limit is not None else None
    request = CreateKeyRequest(account_id=args.account, name=args.name, spend_limit_micro=limit)
    return (await _ask(subjects.AUTH_KEY_CREATE, request, CreateKeyReply)).model_dump()


async def list_keys(args: argparse.Namespace) -> dict[str, object]:
    listing = await _ask(subjects.AUTH_KEY_LIST, ListKeysRequest(account_id=args.account), KeyList)
    return listing.model_dump(mode="json")


async def revoke_key(args: argparse.Namespace) -> dict[str, object]:
    revoked = await _ask(subjects.AUTH_KEY_REVOKE, RevokeKeyRequest(key_id=args.key), KeyRevoked)
    return {"revoked": revoked.key_id}


async def _ask(subject: str, request: BaseModel, reply_model: type[R]) -> R:
    nc = await connect(nats_url_for_admin(), "lexora-admin")
    try:
        return await call(nc, subject, request, reply_model)
    finally:
        await nc.drain()


def balance_view(balance: Balance) -> dict[str, object]:
    return {
        **balance.model_dump(),
        "balance_usd": micro_to_usd_str(balance.balance_micro),
        "available_usd": micro_to_usd_str(balance.available_micro),
    }


def run_admin(handler, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    try:
        result = asyncio.run(handler(args))
    except LexoraError as exc:
        print(json.dumps({"error": exc.info().model_dump()}), file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(json.dumps({"error": {"message": str(exc)}}), file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="lexora", description="Lexora: self-hosted inference API platform")
    commands = root.add_subparsers(dest="command", required=True)
    commands.add_parser("dev", help="run the whole platform locally (NATS, database, Triton, services)")
    migrate = commands.add_parser("migrate", help="bring the database schema up to date")
    migrate.add_argument(
        "--database-url", default=os.environ.get("DATABASE_URL") or os.environ.get("LEXORA_DATABASE_URL")
    )

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
    revoke = admin.add_parser("revoke-key", help="revoke a key; every gateway refuses it within a second")
    revoke.add_argument("--key", required=True)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "dev":
        return run_dev(args)
    if args.command == "migrate":
        url = args.database_url or f"sqlite+aiosqlite:///{state_dir_from_env() / 'lexora.db'}"
        stack.prepare_database(url)
        return 0
    handlers = {
        "create-key": create_key,
        "grant": grant,
        "balance": balance,
        "add-key": add_key,
        "list-keys": list_keys,
        "revoke-key": revoke_key,
    }
    return run_admin(handlers[args.admin_command], args)


if __name__ == "__main__":
    sys.exit(main())
