"""Launch the real Triton Inference Server bundled in the ``nvidia-pytriton`` wheel, on CPU.

The wheel ships ``tritonserver`` 2.51 plus the Python backend, but the backend is incomplete
as installed: the per-interpreter ``triton_python_backend_stub`` lives under
``python_backend_stubs/<major.minor>/`` and has to sit next to ``libtriton_python.so``.
Rather than writing into site-packages we assemble a backends directory under a state dir.

Models load offline (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE in Triton's environment). When the
repository holds ``flux-1-schnell`` and ``LEXORA_FLUX_WEIGHTS`` is not set, a tiny randomly
initialised FLUX pipeline (lexora_dev.flux_weights) is built once into a cache directory and
passed to Triton in ``LEXORA_FLUX_WEIGHTS``.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import sysconfig
from collections.abc import Mapping
from pathlib import Path

from lexora_dev.cache import cache_dir
from lexora_dev.flux_weights import RECIPE as FLUX_RECIPE
from lexora_dev.flux_weights import is_complete as flux_weights_complete

__all__ = [
    "cache_dir",
    "ensure_flux_weights",
    "prepare_backends",
    "trace_arguments",
    "triton_command",
    "tritonserver_binary",
    "pytriton_root",
]

_STUB_NAME = "triton_python_backend_stub"
FLUX_MODEL = "flux-1-schnell"
FLUX_WEIGHTS_ENV = "LEXORA_FLUX_WEIGHTS"
# Triton's models must never reach for a hub: everything they load is on disk.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


def pytriton_root() -> Path:
    """The installed ``pytriton/tritonserver`` directory (found without importing pytriton,
    whose import pulls in a lot and configures logging)."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("nvidia-pytriton is not installed (pip install 'lexora[local]')")
    root = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
    if not root.is_dir():
        raise RuntimeError(f"pytriton has no bundled tritonserver at {root}")
    return root


def tritonserver_binary() -> Path:
    binary = pytriton_root() / "bin" / "tritonserver"
    if not binary.is_file():
        raise RuntimeError(f"tritonserver binary missing: {binary}")
    return binary


def _wheel_libs_dir() -> Path:
    # auditwheel puts the vendored shared libraries beside the package, in site-packages.
    return pytriton_root().parent.parent / "nvidia_pytriton.libs"


def _link(target: Path, link: Path) -> None:
    """Make ``link`` a symlink to ``target``; a no-op when it already is one.

    Goes through a temporary name + rename so a concurrent launcher never sees a missing file.
    """
    if link.is_symlink() and Path(os.readlink(link)) == target:
        return
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, link)


def prepare_backends(state_dir: Path) -> Path:
    """Build ``state_dir/tritonserver/backends`` mirroring the wheel's backends, with the
    Python stub for the running interpreter added to ``python/``. Returns that directory.

    Files are symlinked, so a second call only re-checks a handful of links. The stub is
    linked too: its RPATH is ``$ORIGIN``-relative and the loader resolves ``$ORIGIN`` for an
    executable through /proc/self/exe, i.e. to the real file inside the wheel.
    """
    wheel = pytriton_root()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = wheel / "python_backend_stubs" / version / _STUB_NAME
    if not stub.is_file():
        raise RuntimeError(f"nvidia-pytriton has no Python backend stub for Python {version}")

    backends = Path(state_dir).resolve() / "tritonserver" / "backends"
    for backend in sorted(p for p in (wheel / "backends").iterdir() if p.is_dir()):
        dest = backends / backend.name
        dest.mkdir(parents=True, exist_ok=True)
        for item in backend.iterdir():
            if item.name != "__pycache__":
                _link(item, dest / item.name)
    _link(stub, backends / "python" / _STUB_NAME)
    return backends


def ensure_flux_weights(state_dir: Path) -> Path:
    """The tiny FLUX pipeline for ``flux-1-schnell``, built on first use (a few seconds).

    Built in a child process so the launcher never imports torch; the build itself is atomic
    (temporary directory + rename), so concurrent launchers are safe.
    """
    path = cache_dir(state_dir) / FLUX_RECIPE
    if flux_weights_complete(path):
        return path
    result = subprocess.run(
        [sys.executable, "-m", "lexora_dev.flux_weights", str(path)],
        env={**os.environ, **OFFLINE_ENV},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 or not flux_weights_complete(path):
        tail = "\n".join((result.stderr or result.stdout).splitlines()[-20:])
        raise RuntimeError(f"could not build the tiny FLUX weights in {path}:\n{tail}")
    return path


def _python_paths() -> list[str]:
    paths = sysconfig.get_paths()
    return list(dict.fromkeys([paths["purelib"], paths["platlib"]]))


def servable_models(model_repo: Path) -> list[str]:
    """The models of a repository that carry their own config.pbtxt. model-repo/lexora-trtllm-chat
    does not: it is code for the TensorRT-LLM runtime image, whose configs the operator renders."""
    return sorted(p.name for p in Path(model_repo).iterdir() if (p / "config.pbtxt").is_file())


def triton_command(
    model_repo: Path,
    state_dir: Path,
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    environ: Mapping[str, str] = os.environ,
) -> tuple[list[str], dict[str, str]]:
    """argv and the environment variables to add to ``os.environ`` for running tritonserver;
    traced when `environ` names an OTLP endpoint (trace_arguments).

    Loopback only: this is the developer/test engine, not a network service.
    """
    backends = prepare_backends(state_dir)
    argv = [
        str(tritonserver_binary()),
        f"--model-repository={Path(model_repo).resolve()}",
        f"--backend-directory={backends}",
        "--http-address=127.0.0.1",
        f"--http-port={http_port}",
        "--grpc-address=127.0.0.1",
        f"--grpc-port={grpc_port}",
        "--allow-metrics=true",
        "--allow-gpu-metrics=false",
        "--allow-cpu-metrics=true",
        "--metrics-address=127.0.0.1",
        f"--metrics-port={metrics_port}",
        # Explicit control, every model loaded at start: lexora_dev.model_recovery reloads one model
        # whose Python-backend stub died (an unload, then a load) without restarting the others.
        "--model-control-mode=explicit",
        *(f"--load-model={name}" for name in servable_models(model_repo)),
        # Every model in the repository ships a complete config.pbtxt; backends must not guess.
        "--disable-auto-complete-config",
        "--strict-readiness=true",
        "--exit-on-error=true",
        "--log-verbose=0",
        # No CUDA here: a pinned host pool would only produce allocation warnings.
        "--pinned-memory-pool-byte-size=0",
        "--model-load-thread-count=2",
        "--exit-timeout-secs=10",
        *trace_arguments(environ),
    ]
    # The stub links libpython3.11.so.1.0 by soname; without the running interpreter's lib dir
    # first, the loader may pick a different build's libpython (e.g. the distro's) and the stub
    # crashes at start-up. The wheel's vendored libs cover the symlinked backend library, whose
    # $ORIGIN RPATH no longer points at them from the state dir.
    ld_path = [sysconfig.get_config_var("LIBDIR") or "", str(_wheel_libs_dir())]
    if os.environ.get("LD_LIBRARY_PATH"):
        ld_path.append(os.environ["LD_LIBRARY_PATH"])
    # The stub embeds the base interpreter, which knows nothing of the virtualenv, and its
    # interpreter ignores PYTHONPATH (checked: the variable is set, sys.path lacks it). What
    # works is PATH: the embedded Python derives sys.executable from the first `python3` on
    # PATH, finds the venv's pyvenv.cfg next to it and adds the venv's site-packages -- the
    # same trick pytriton uses. PYTHONPATH is still set for anything that does honour it.
    py_path = _python_paths()
    if os.environ.get("PYTHONPATH"):
        py_path.append(os.environ["PYTHONPATH"])
    bin_path = [sysconfig.get_path("scripts"), os.environ.get("PATH") or os.defpath]
    env = {
        "LD_LIBRARY_PATH": os.pathsep.join(p for p in ld_path if p),
        "PYTHONPATH": os.pathsep.join(py_path),
        "PATH": os.pathsep.join(bin_path),
        **OFFLINE_ENV,
    }
    # flux-1-schnell loads a diffusers checkpoint from $LEXORA_FLUX_WEIGHTS. No FLUX weights
    # exist offline: unless the caller points at real ones, give it the tiny generated pipeline.
    if (Path(model_repo) / FLUX_MODEL).exists() and not os.environ.get(FLUX_WEIGHTS_ENV):
        env[FLUX_WEIGHTS_ENV] = str(ensure_flux_weights(state_dir))
    return argv, env


def trace_arguments(environ: Mapping[str, str]) -> list[str]:
    """tritonserver's OpenTelemetry tracing when `environ` names an OTLP endpoint (as the services'
    tracing does, lexora_runtime.tracing), else none. Triton then traces only the requests that
    carry a trace context (rate=0: the router sends it), continuing the router's trace, and exports
    its spans (request, model, compute) to the same endpoint over OTLP/HTTP."""
    url = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if not url and environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        url = environ["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/traces"
    if not url or environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    settings = ["mode=opentelemetry", "rate=0", "count=-1", "level=TIMESTAMPS", f"opentelemetry,url={url}"]
    settings.append("opentelemetry,resource=service.name=lexora-triton")
    if environ.get("OTEL_BSP_SCHEDULE_DELAY"):
        settings.append(f"opentelemetry,bsp_schedule_delay={environ['OTEL_BSP_SCHEDULE_DELAY']}")
    return [argument for setting in settings for argument in ("--trace-config", setting)]
