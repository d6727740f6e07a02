"""The platform under test, started on 127.0.0.1 for one gateway run: a private Postgres,
nats-server, tritonserver serving model-repo/ (instant-echo and SmolLM2), the five Lexora services,
the OpenAI shim in front of Triton, and the two peers pointed at that shim: LiteLLM's proxy and
Portkey's AI Gateway (its `x-portkey-custom-host` header names the shim); plus what the sections
read from it (process roots for CPU and memory, nats-server's message counters)."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from bench import BENCH, REPO, log, pg, procstat, tools
from bench.settings import INSTANT_MODEL, INSTANT_PRICE_MICRO_PER_MTOK, INSTANT_TRITON, Settings
from lexora_contracts.registry import Endpoint, ModelRecord, Pricing
from lexora_dev import stack
from lexora_dev.catalog import local_catalog
from lexora_dev.processes import ManagedProcess, free_port, http_ok, wait_until
from lexora_dev.triton_server import triton_command

LITELLM_VENV = BENCH / ".venv-litellm"
LITELLM_PIN = "1.106.2"  # the version bench/setup.sh installs
LITELLM_MASTER_KEY = "sk-bench-master"
PORTKEY_SERVER = BENCH / "portkey" / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"


@dataclass
class Testbed:
    settings: Settings
    state: Path
    exits: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    procs: dict[str, ManagedProcess] = field(default_factory=dict)
    postgres: pg.BenchPostgres | None = None
    database_url: str = ""
    libpq_url: str = ""
    nats_url: str = ""
    nats_monitor: int = 0
    triton_http: int = 0
    triton_grpc: str = ""
    gateway_port: int = 0
    shim_port: int = 0
    litellm_port: int = 0
    portkey_port: int = 0
    litellm_key: str = LITELLM_MASTER_KEY
    litellm_mode: str = "no database"
    litellm_db_probe: str = "not tried (BENCH_LITELLM_DB=1 tries it)"
    workers: int = 1
    config: stack.ServiceConfig | None = None

    # -- start-up --
    def start(self, workers: int, peers: bool = True) -> None:
        """Everything; with `peers` False, without the shim, LiteLLM and Portkey (the CPU run)."""
        self.workers = workers
        logs = self.state / "logs"
        # Triton loads its models while the database and NATS come up.
        self.triton_http, grpc_port, metrics_port = free_port(), free_port(), free_port()
        argv, env = triton_command(stack.MODEL_REPO, self.state / "triton", self.triton_http, grpc_port, metrics_port)
        self.procs["triton"] = ManagedProcess("tritonserver", argv, logs / "triton.log", env=env).start()
        self.triton_grpc = f"127.0.0.1:{grpc_port}"

        self.postgres = self.exits.enter_context(pg.private_postgres(self.state / "pg", fsync=self.settings.pg_fsync))
        self.database_url, self.libpq_url = self.postgres.url, self.postgres.libpq_url
        nats_port, self.nats_monitor = free_port(), free_port()
        self.procs["nats"] = stack.start_nats(self.state, nats_port, self.nats_monitor)
        self.nats_url = f"nats://127.0.0.1:{nats_port}"
        stack.prepare_database(self.database_url)
        wait_until(
            lambda: http_ok(f"http://127.0.0.1:{self.triton_http}/v2/health/ready"),
            300,
            "tritonserver",
            self.procs["triton"],
        )
        stack.publish_catalog(self.nats_url, [*local_catalog(self.triton_endpoint()), self.instant_record()])

        self.gateway_port = free_port()
        self.config = stack.ServiceConfig(
            nats_url=self.nats_url,
            database_url=self.database_url,
            state_dir=self.state,
            gateway_port=self.gateway_port,
            log_level="INFO",
            extra_env={"LEXORA_WORKERS": str(workers)},
        )
        for service in stack.SERVICES:
            self.procs[service] = stack.start_service(service, self.config)
        stack.wait_for_gateway(self.gateway_port, self.procs["gateway"])
        if not peers:
            return

        self.shim_port = free_port()
        shim_argv = tools.argv("shim", "--port", str(self.shim_port))
        shim_argv += ["--triton-http", f"127.0.0.1:{self.triton_http}", "--model", INSTANT_TRITON]
        self.procs["shim"] = ManagedProcess("shim", shim_argv, logs / "shim.log", cwd=REPO).start()
        wait_until(lambda: _port_answers(self.shim_port, "/v1/models"), 30, "shim", self.procs["shim"])
        self.start_litellm(workers)
        self.start_portkey()

    def instant_record(self) -> ModelRecord:
        price = INSTANT_PRICE_MICRO_PER_MTOK
        return ModelRecord(
            id=INSTANT_MODEL,
            owned_by="lexora-bench",
            triton_model=INSTANT_TRITON,
            context_length=8192,
            pricing=Pricing(input_micro_per_mtok=price, output_micro_per_mtok=price),
            capabilities=["chat"],
            created=1730000000,
            endpoints=[self.triton_endpoint()],
        )

    def triton_endpoint(self) -> Endpoint:
        return Endpoint(name="local", grpc_address=self.triton_grpc, http_address=f"127.0.0.1:{self.triton_http}")

    def _litellm_config(self, database_url: str | None) -> Path:
        lines = [
            "model_list:",
            "  - model_name: instant-echo",
            "    litellm_params:",
            "      model: openai/instant-echo",
            f"      api_base: http://127.0.0.1:{self.shim_port}/v1",
            "      api_key: none",
            "general_settings:",
            f"  master_key: {LITELLM_MASTER_KEY}",
        ]
        if database_url:
            lines.append(f"  database_url: {database_url}")
        path = self.state / ("litellm-db.yaml" if database_url else "litellm.yaml")
        path.write_text("\n".join(lines) + "\n")
        return path

    def start_litellm(self, workers: int) -> None:
        binary = LITELLM_VENV / "bin" / "litellm"
        if not binary.exists():
            raise FileNotFoundError(f"{binary} missing: run bench/setup.sh (make bench does)")
        env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
        wants_db = self.litellm_mode.startswith("database") or (
            self.settings.litellm_db and self.litellm_db_probe.startswith("not tried")
        )
        if wants_db and self._try_litellm_database(binary, env, workers):
            return
        self.litellm_port = free_port()
        argv = [str(binary), "--config", str(self._litellm_config(None)), "--host", "127.0.0.1"]
        argv += ["--port", str(self.litellm_port), "--num_workers", str(workers)]
        self.procs["litellm"] = ManagedProcess(
            "litellm", argv, self.state / "logs" / f"litellm-w{workers}.log", env=env, cwd=self.state
        ).start()
        wait_until(
            lambda: _port_answers(self.litellm_port, "/health/liveliness"), 180, "litellm", self.procs["litellm"]
        )
        self.litellm_mode = "no database (master key, no spend tracking)"

    def _try_litellm_database(self, binary: Path, env: dict[str, str], workers: int) -> bool:
        """LiteLLM with a virtual key and spend tracking on Postgres, if Prisma can start offline."""
        db_url = self.libpq_url.rsplit("/", 1)[0] + "/litellm"
        asyncio.run(_create_database(self.libpq_url, "litellm"))
        self.litellm_port = free_port()
        argv = [str(binary), "--config", str(self._litellm_config(db_url)), "--host", "127.0.0.1"]
        argv += ["--port", str(self.litellm_port), "--num_workers", str(workers)]
        proc = ManagedProcess(
            "litellm", argv, self.state / "logs" / "litellm-db.log", env={**env, "DATABASE_URL": db_url}, cwd=self.state
        ).start()
        try:
            wait_until(lambda: _port_answers(self.litellm_port, "/health/liveliness"), 120, "litellm (database)", proc)
            key = _litellm_virtual_key(self.litellm_port)
        except Exception as exc:
            tail = proc.log_tail(8).replace("\n", " ")
            self.litellm_db_probe = f"failed: {type(exc).__name__}: {tail[-600:]}"
            proc.stop()
            log(f"LiteLLM's database mode did not start; running it without a database ({self.litellm_db_probe})")
            return False
        self.procs["litellm"] = proc
        self.litellm_key = key
        self.litellm_mode = "database (virtual key, spend tracking on Postgres)"
        self.litellm_db_probe = "started"
        return True

    def start_portkey(self) -> None:
        """Portkey's AI Gateway, as its README starts it (`node build/start-server.js`), one Node
        process: it checks no key and keeps no books, it only relays to the host a request names."""
        if not PORTKEY_SERVER.is_file():
            raise RuntimeError(f"Portkey's gateway is not installed ({PORTKEY_SERVER}): run bash bench/setup.sh")
        self.portkey_port = free_port()
        argv = ["node", str(PORTKEY_SERVER), f"--port={self.portkey_port}", "--headless"]
        log_path = self.state / "logs" / "portkey.log"
        self.procs["portkey"] = ManagedProcess("portkey", argv, log_path, cwd=self.state).start()
        wait_until(lambda: _port_answers(self.portkey_port, "/"), 60, "portkey", self.procs["portkey"])

    def portkey_headers(self) -> dict[str, str]:
        """What routes a request through Portkey to the shim, as a Portkey user configures it."""
        return {"x-portkey-provider": "openai", "x-portkey-custom-host": f"http://127.0.0.1:{self.shim_port}/v1"}

    def restart_front(self, workers: int) -> None:
        """Gateway and LiteLLM again, with another number of worker processes."""
        assert self.config is not None
        for name in ("gateway", "litellm"):
            self.procs.pop(name).stop()
        self.workers = workers
        self.gateway_port = free_port()
        self.config = stack.ServiceConfig(
            **{
                **self.config.__dict__,
                "gateway_port": self.gateway_port,
                "extra_env": {"LEXORA_WORKERS": str(workers)},
            }
        )
        self.procs["gateway"] = stack.start_service("gateway", self.config, f"gateway-w{workers}")
        stack.wait_for_gateway(self.gateway_port, self.procs["gateway"])
        self.start_litellm(workers)

    @property
    def postgres_version(self) -> str:
        return self.postgres.version if self.postgres else "not started"

    def roots(self) -> dict[str, int]:
        """The process (tree) of each component, by name, for CPU and memory figures."""
        out = {name: p.proc.pid for name, p in self.procs.items() if p.proc is not None and p.alive}
        if self.postgres and self.postgres.postmaster_pid:
            out["postgres"] = self.postgres.postmaster_pid
        return out

    def memory(self) -> dict[str, dict[str, float]]:
        procs = procstat.snapshot()
        return {
            name: {"rss": round(procstat.rss_mib(pid, procs), 1), "pss": round(procstat.pss_mib(pid, procs), 1)}
            for name, pid in self.roots().items()
        }

    def nats_counts(self) -> tuple[int, int]:
        """Messages into and out of nats-server since it started (its monitoring endpoint)."""
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.nats_monitor, timeout=5)
            conn.request("GET", "/varz")
            varz = json.loads(conn.getresponse().read())
            return int(varz["in_msgs"]), int(varz["out_msgs"])
        except (OSError, ValueError, KeyError):
            return 0, 0

    def stop(self) -> None:
        """Everything at once (each stop waits for its process), then the database."""

        def stop_one(process: ManagedProcess) -> None:
            with contextlib.suppress(Exception):
                process.stop(timeout=10)

        threads = [threading.Thread(target=stop_one, args=(p,)) for p in self.procs.values()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.procs.clear()
        self.exits.close()


def _port_answers(port: int, path: str) -> bool:
    return http_ok(f"http://127.0.0.1:{port}{path}")


async def _create_database(libpq_url: str, name: str) -> None:
    conn = await asyncpg.connect(libpq_url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    except asyncpg.DuplicateDatabaseError:
        pass
    finally:
        await conn.close()


def _litellm_virtual_key(port: int) -> str:
    body = json.dumps({"models": ["instant-echo"], "max_budget": 1000}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(
        "POST",
        "/key/generate",
        body,
        {"Authorization": f"Bearer {LITELLM_MASTER_KEY}", "Content-Type": "application/json"},
    )
    response = conn.getresponse()
    data = json.loads(response.read())
    if response.status != 200:
        raise RuntimeError(f"/key/generate answered {response.status}: {data}")
    return str(data["key"])
