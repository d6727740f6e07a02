"""fetch.sh in the model cache's modes, run for real with /bin/sh: `fill` (the fill Job, into the
cache PVC's directory for the source) and `cached` (the Triton pod's init container, reading the
cache read-only). A stand-in `hf` on PATH plays Hugging Face."""

from __future__ import annotations

import copy
import json
import os
import stat
import subprocess
from pathlib import Path

from operator_support import load_sample

from lexora_operator import cache as mc
from lexora_operator.model_repository import model_repository_files
from lexora_operator.render import fetch_env
from lexora_operator.spec import parse_spec

FAKE_HF = """#!/bin/sh
# hf download REPO --revision REV --local-dir DIR: writes a small diffusers-like checkout.
echo "$@" >> "$HF_CALLS"
while [ $# -gt 0 ]; do
  case "$1" in --local-dir) dir="$2"; shift ;; esac
  shift
done
mkdir -p "$dir/transformer"
printf '{"_class_name": "FluxPipeline"}' > "$dir/model_index.json"
head -c 4096 /dev/zero > "$dir/transformer/diffusion_pytorch_model.safetensors"
"""


def _flux():
    manifest = load_sample("flux-1-schnell.yaml")
    return manifest["metadata"]["name"], parse_spec(manifest["metadata"]["name"], copy.deepcopy(manifest["spec"]))


def _script(tmp_path: Path) -> Path:
    script = tmp_path / "fetch.sh"
    script.write_text(mc.cache_files()["fetch.sh"])
    return script


def _bin(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    hf = bin_dir / "hf"
    hf.write_text(FAKE_HF)
    hf.chmod(hf.stat().st_mode | stat.S_IEXEC)
    return bin_dir


def run(tmp_path: Path, env: list[dict], **extra: str) -> subprocess.CompletedProcess[str]:
    """Run fetch.sh with the env the operator renders (values only; secrets left out)."""
    values = {e["name"]: e["value"] for e in env if "value" in e}
    values.update(
        PATH=f"{_bin(tmp_path)}:/usr/bin:/bin",
        HF_CALLS=str(tmp_path / "hf-calls"),
        LEXORA_TERMINATION_LOG=str(tmp_path / "termination-log"),
        LEXORA_PROGRESS_SECONDS="1",
        **extra,
    )
    return subprocess.run(["/bin/sh", str(_script(tmp_path))], env=values, capture_output=True, text=True, timeout=60)


def test_the_fill_job_downloads_once_into_the_cache_and_reports_the_size(tmp_path: Path) -> None:
    name, spec = _flux()
    plan = mc.plan_cache(name, spec, "nfs")
    assert plan is not None
    cache = tmp_path / "model-cache"
    source = cache / "sources" / plan.source_key
    env = fetch_env(spec, str(source), mode="fill")

    result = run(tmp_path, env)

    assert result.returncode == 0, result.stderr
    assert (source / "model_index.json").is_file()
    assert (source / ".lexora-fetched").read_text().strip() == "hf:black-forest-labs/FLUX.1-schnell@main"
    report = json.loads((tmp_path / "termination-log").read_text())
    assert report["sizeBytes"] >= 4096 and report["files"] == 3
    assert f"lexora-cache progress bytes={report['sizeBytes']}" in result.stdout
    assert "--revision main --local-dir" in (tmp_path / "hf-calls").read_text()

    again = run(tmp_path, env)
    assert again.returncode == 0, again.stderr
    assert "cache hit" in again.stdout
    assert len((tmp_path / "hf-calls").read_text().splitlines()) == 1, "a filled cache is never downloaded again"


def test_the_fill_job_prunes_nothing_outside_a_cache_sources_directory(tmp_path: Path) -> None:
    name, spec = _flux()
    (tmp_path / "neighbour").mkdir()
    result = run(tmp_path, fetch_env(spec, str(tmp_path / "source"), mode="fill"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "neighbour").is_dir()


def test_the_fill_job_removes_superseded_sources_but_keeps_the_one_in_use(tmp_path: Path) -> None:
    name, spec = _flux()
    cache = tmp_path / "model-cache" / "sources"
    for old in ("in-use", "superseded"):
        (cache / old).mkdir(parents=True)
        (cache / old / "weights").write_text("x")
    env = fetch_env(spec, str(cache / "new"), mode="fill")

    result = run(tmp_path, env, LEXORA_CACHE_KEEP="in-use")

    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in cache.iterdir()) == ["in-use", "new"]


def test_a_pod_reads_the_filled_cache_and_assembles_its_repository(tmp_path: Path) -> None:
    name, spec = _flux()
    files = model_repository_files(spec)
    config = tmp_path / "config"
    config.mkdir()
    for key, text in files.items():
        (config / key).write_text(text)
    source = tmp_path / "model-cache" / "sources" / "flux"
    models = tmp_path / "models"
    models.mkdir()
    env = fetch_env(spec, str(source), mode="cached")
    paths = {"LEXORA_MODEL_REPO": str(models), "LEXORA_CONFIG_DIR": str(config)}

    empty = run(tmp_path, env, **paths)
    assert empty.returncode == 1
    assert (tmp_path / "termination-log").read_text().startswith("model cache not filled:")

    run(tmp_path, fetch_env(spec, str(source), mode="fill"))
    os.chmod(source, 0o555)  # mounted read-only in the pod
    try:
        result = run(tmp_path, env, **paths)
    finally:
        os.chmod(source, 0o755)
    assert result.returncode == 0, result.stderr
    assert "model cache hit" in result.stdout
    assert (models / "flux-1-schnell" / "config.pbtxt").is_file()
    assert len((tmp_path / "hf-calls").read_text().splitlines()) == 1, "the pod downloads nothing"
