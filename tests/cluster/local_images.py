"""The images a ModelDeployment's pods name, as this machine holds them (for pod_runner.LocalPod).

Each is this machine's filesystem plus what the image's Dockerfile puts at fixed paths:

- ghcr.io/lexora/triton-python (images/triton-python/Dockerfile): tritonserver with the Python
  backend at /opt/tritonserver (NVIDIA's layout: bin/tritonserver on PATH, backends/ the default
  --backend-directory) from the nvidia-pytriton wheel, model-repo/ at /opt/lexora/models, and the
  venv's packages (torch, diffusers, transformers, llama-cpp-python, the model wheels) on its Python;
- ghcr.io/lexora/model-fetcher (images/model-fetcher/Dockerfile): sh, curl, tar and `hf`.

There is no internet in the box: a pod reaches only the ports a test opens (PodEnvironment.egress),
e.g. the model cache test's HTTP server. The fetcher reports a fill's progress every second here
(LEXORA_PROGRESS_SECONDS; the script's default, 10 s, is what runs in a cluster), so a fill of a
few seconds shows progress.
"""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

from pod_runner import LocalImage

from lexora_dev.triton_server import prepare_backends, pytriton_root, triton_command
from lexora_operator.spec import DEFAULT_FETCHER_IMAGE

REPO_ROOT = Path(__file__).resolve().parents[2]
TRITON_PYTHON_IMAGE = "ghcr.io/lexora/triton-python:0.1.0"
TRITON_HOME = "/opt/tritonserver"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def local_images(state_dir: Path) -> dict[str, LocalImage]:
    venv_bin = sysconfig.get_path("scripts") or str(Path(sys.executable).parent)
    # The environment the wheel's tritonserver and its Python stub need (lexora_dev.triton_server):
    # the interpreter's libpython and the wheel's libraries, and the venv's packages for the models.
    # An empty repository: the image carries no FLUX weights (they come from the model source).
    empty = state_dir / "no-models"
    empty.mkdir(parents=True, exist_ok=True)
    _, triton_env = triton_command(empty, state_dir, 0, 0, 0)
    triton = LocalImage(
        env={
            "PATH": f"{TRITON_HOME}/bin:{venv_bin}:{SYSTEM_PATH}",
            "LD_LIBRARY_PATH": triton_env["LD_LIBRARY_PATH"],
            "PYTHONPATH": triton_env["PYTHONPATH"],
            "PYTHONDONTWRITEBYTECODE": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            # No egress here: libraries must not try the Hub and wait for a timeout.
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
        },
        files={
            TRITON_HOME: pytriton_root(),
            f"{TRITON_HOME}/backends": prepare_backends(state_dir),
            "/opt/lexora/models": REPO_ROOT / "model-repo",
        },
    )
    fetcher = LocalImage(env={"PATH": f"{venv_bin}:{SYSTEM_PATH}", "LEXORA_PROGRESS_SECONDS": "1"})
    return {TRITON_PYTHON_IMAGE: triton, DEFAULT_FETCHER_IMAGE: fetcher}
