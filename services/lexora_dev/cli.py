"""`lexora dev`: the whole platform on this machine (NATS, Postgres, Triton, the five services),
until Ctrl-C. The database is the embedded Postgres in the state directory (`.lexora/postgres`,
kept between runs) unless DATABASE_URL names a server."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from pathlib import Path

from lexora_cli.local import DEFAULT_NATS_PORT, remove_stack_file, state_dir_from_env, write_stack_file
from lexora_contracts.nats_permissions import DEV
from lexora_dev import stack
from lexora_dev.catalog import (
    LOCAL_CHAT_MODEL,
    LOCAL_EMBEDDING_MODEL,
    LOCAL_IMAGE_MODEL,
    LOCAL_THINKING_MODEL,
    local_catalog,
)
from lexora_dev.processes import ManagedProcess, port_is_free
from lexora_dev.supervision import Supervisor


def run_dev(args: argparse.Namespace) -> int:
    state_dir = state_dir_from_env()
    gateway_port = int(os.environ.get("LEXORA_PORT", "8080"))
    server_url = os.environ.get("DATABASE_URL")
    if not port_is_free(gateway_port):
        print(f"Port {gateway_port} is taken; set LEXORA_PORT to another port.", file=sys.stderr)
        return 1
    nats_port = DEFAULT_NATS_PORT if port_is_free(DEFAULT_NATS_PORT) else stack.free_port()
    nats_url = f"nats://127.0.0.1:{nats_port}"
    processes: list[ManagedProcess] = []
    triton: stack.SupervisedTriton | None = None
    database = contextlib.ExitStack()

    def request_stop(*_: object) -> None:
        raise KeyboardInterrupt

    # Installed explicitly: a launcher started in the background inherits SIGINT as ignored.
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        say(f"state directory {state_dir}")
        nats_users = stack.local_nats_users(state_dir)
        processes.append(stack.start_nats(state_dir, nats_port, users=nats_users))
        say(f"nats-server with JetStream on {nats_url} (a user per service: {state_dir / 'nats-users.json'})")
        tooling = nats_users.access(DEV)
        database_url = database.enter_context(stack.local_database(state_dir, server_url))
        if server_url:
            say("database ready (DATABASE_URL)")
        else:
            address = database_url.split("@")[1].split("/")[0]
            say(f"embedded Postgres on {address} (data in {stack.embedded_postgres_dir(state_dir)})")
        say("starting tritonserver (loading the model takes a few seconds)")
        triton = stack.SupervisedTriton(state_dir)
        endpoint = triton.endpoint
        say(f"tritonserver serving model-repo/ (gRPC {endpoint.grpc_address}, HTTP {endpoint.http_address})")
        catalog = local_catalog(endpoint)
        processes.append(stack.start_model_recovery(state_dir, endpoint, catalog))
        stack.publish_catalog(nats_url, catalog, tooling)
        job_timeout_s = float(os.environ.get("LEXORA_JOB_TIMEOUT_S", "120"))
        config = stack.ServiceConfig(
            nats_url, database_url, state_dir, gateway_port, job_timeout_s=job_timeout_s, nats_users=nats_users
        )
        services_started = time.time()
        for service in stack.SERVICES:
            processes.append(stack.start_service(service, config))
        stack.wait_for_gateway(gateway_port, processes[-1])
        say("warming up: one small request to every model")
        failing = stack.wait_for_warm_up(nats_url, catalog, since=services_started, access=tooling)
        running = {"nats_url": nats_url, "gateway_url": f"http://127.0.0.1:{gateway_port}"}
        if not server_url:  # the embedded database's URL holds no secret (trust on loopback)
            running["database_url"] = database_url
        write_stack_file(state_dir, running)
        print_welcome(gateway_port, state_dir, failing)
        supervisor = Supervisor(processes, say)
        while True:
            supervisor.tick()
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
        database.close()
        remove_stack_file(state_dir)
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
