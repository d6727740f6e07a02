"""The init container's script, run for real with /bin/sh on a PVC-style source directory."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

from operator_support import load_sample

from lexora_operator.model_repository import model_repository_files
from lexora_operator.spec import parse_spec

PREBUILT = {"source": {"pvc": {"claimName": "llama-engines"}}, "engine": {"mode": "prebuilt"}}


def run_fetch(
    tmp_path: Path,
    source: Path,
    sample: str = "llama-3.2-3b-instruct.yaml",
    kind: str = "pvc",
    overrides: dict[str, Any] | None = None,
    **env_overrides: str,
) -> subprocess.CompletedProcess[str]:
    manifest = load_sample(sample)
    spec = {**copy.deepcopy(manifest["spec"]), **(PREBUILT if overrides is None and kind == "pvc" else overrides or {})}
    files = model_repository_files(parse_spec(manifest["metadata"]["name"], spec))
    config = tmp_path / "config"
    config.mkdir()
    for key, text in files.items():
        (config / key).write_text(text)
    (tmp_path / "models").mkdir()
    env = {
        "PATH": "/usr/bin:/bin",
        "LEXORA_SOURCE_KIND": kind,
        "LEXORA_SOURCE_DIR": str(source),
        "LEXORA_SOURCE_FINGERPRINT": "pvc:test",
        "LEXORA_MODEL_REPO": str(tmp_path / "models"),
        "LEXORA_CONFIG_DIR": str(config),
        "LEXORA_TERMINATION_LOG": str(tmp_path / "termination-log"),
        **env_overrides,
    }
    return subprocess.run(["/bin/sh", str(config / "fetch.sh")], env=env, capture_output=True, text=True, timeout=30)


def test_fetch_assembles_the_tensorrtllm_repository_from_the_source(tmp_path: Path) -> None:
    """A prebuilt source is only the engine (with xgrammar's tokenizer file) and the tokenizer: the
    model code (our BLS model, NVIDIA's stock pre/postprocessing) is linked from the runtime image."""
    source = tmp_path / "source"
    for path in ["engine/config.json", "engine/xgrammar_tokenizer_info.json", "tokenizer/tokenizer.json"]:
        (source / path).parent.mkdir(parents=True, exist_ok=True)
        (source / path).write_text("{}")

    result = run_fetch(tmp_path, source)

    assert result.returncode == 0, result.stderr
    models = tmp_path / "models"
    assert sorted(p.name for p in models.iterdir()) == [
        "lexora-trtllm-chat",
        "postprocessing",
        "preprocessing",
        "tensorrt_llm",
    ]
    assert (models / "lexora-trtllm-chat" / "config.pbtxt").read_text().startswith('name: "lexora-trtllm-chat"')
    assert (models / "tensorrt_llm" / "1").is_dir()
    links = {
        name: str((models / name / "1").readlink())
        for name in ("lexora-trtllm-chat", "preprocessing", "postprocessing")
    }
    assert links == {
        "lexora-trtllm-chat": "/opt/lexora/models/lexora-trtllm-chat/1",
        "preprocessing": "/opt/lexora/trtllm/preprocessing/1",
        "postprocessing": "/opt/lexora/trtllm/postprocessing/1",
    }


def test_fetch_fails_with_a_readable_reason_when_the_engine_is_missing(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()

    result = run_fetch(tmp_path, source)

    assert result.returncode == 1
    message = (tmp_path / "termination-log").read_text().strip()
    assert message == "model source incomplete: engine/config.json is missing from the model source"


def test_a_model_in_the_triton_image_is_linked_without_fetching(tmp_path: Path) -> None:
    """source.image: the files are in the Triton container, not in the fetcher's: only links are made."""
    result = run_fetch(tmp_path, Path("/opt/lexora/models/smollm2-135m-instruct"), "smollm2-cpu.yaml", "image")

    assert result.returncode == 0, result.stderr
    model = tmp_path / "models" / "smollm2-135m-instruct"
    assert (model / "config.pbtxt").read_text().startswith('name: "smollm2-135m-instruct"')
    assert (model / "1").is_symlink()
    assert str((model / "1").readlink()) == "/opt/lexora/models/smollm2-135m-instruct/1"
