"""build_engine.py (lexora_operator.engine_build_script), run as the build Job runs it, with a
stand-in `tensorrt_llm` module on its path in place of NVIDIA's: everything but the GPU build
itself (reuse per key, version check, atomic output, the termination message) is checked here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from lexora_operator import cache as mc

FAKE_TRTLLM = """
import json, os
from pathlib import Path
__version__ = "0.17.0"

class BuildConfig:
    def __init__(self, **settings):
        self.settings = settings

class LLM:
    def __init__(self, model, tensor_parallel_size, dtype, build_config):
        if os.environ.get("FAKE_FAIL"):
            raise RuntimeError("CUDA out of memory")
        self.args = {"model": model, "tp": tensor_parallel_size, "dtype": dtype, **build_config.settings}

    def save(self, path):
        Path(path, "config.json").write_text(json.dumps(self.args))
        Path(path, "rank0.engine").write_bytes(b"x" * 100)
        with open(os.environ["FAKE_CALLS"], "a") as calls:
            calls.write(json.dumps(self.args) + "\\n")

    def shutdown(self):
        pass
"""

# tensorrt_llm.llmapi.tokenizer: the two functions build_engine.py calls for xgrammar's tokenizer file.
FAKE_TOKENIZER = """
import json
from pathlib import Path

def tokenizer_factory(path):
    return json.loads(Path(path, "tokenizer.json").read_text())

def _xgrammar_tokenizer_info(tokenizer):
    vocab = sorted(tokenizer["vocab"], key=tokenizer["vocab"].get)
    return {"encoded_vocab": vocab, "tokenizer_str": json.dumps(tokenizer), "stop_token_ids": [tokenizer["eos"]]}
"""


def run_build(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    fake = tmp_path / "fake"
    (fake / "tensorrt_llm").mkdir(parents=True, exist_ok=True)
    (fake / "tensorrt_llm" / "__init__.py").write_text(FAKE_TRTLLM)
    (fake / "tensorrt_llm" / "llmapi").mkdir(exist_ok=True)
    (fake / "tensorrt_llm" / "llmapi" / "__init__.py").write_text("")
    (fake / "tensorrt_llm" / "llmapi" / "tokenizer.py").write_text(FAKE_TOKENIZER)
    source = tmp_path / "source"
    source.mkdir(exist_ok=True)
    (source / "config.json").write_text("{}")
    (source / "tokenizer.json").write_text(json.dumps({"vocab": {"b": 1, "a": 0, "</s>": 2}, "eos": 2}))
    script = tmp_path / "build_engine.py"
    script.write_text(mc.build_script())
    values = {
        "PYTHONPATH": str(fake),
        "LEXORA_ENGINE_SOURCE": str(source),
        "LEXORA_ENGINE_DIR": str(tmp_path / "engines" / "h100-tp1"),
        "LEXORA_ENGINE_KEY": "h100-tp1-abc",
        "LEXORA_TP_SIZE": "1",
        "LEXORA_TRTLLM_VERSION": "0.17.0",
        "LEXORA_MAX_BATCH_SIZE": "64",
        "LEXORA_MAX_SEQ_LEN": "131072",
        "LEXORA_TERMINATION_LOG": str(tmp_path / "termination-log"),
        "FAKE_CALLS": str(tmp_path / "calls"),
        "TMPDIR": str(tmp_path / "engines" / "tmp"),
        **env,
    }
    # -S: no site-packages (the real torch would answer how many GPUs there are: none here).
    return subprocess.run([sys.executable, "-S", str(script)], env=values, capture_output=True, text=True, timeout=60)


def test_the_engine_is_built_with_the_llm_api_once_per_key(tmp_path: Path) -> None:
    first = run_build(tmp_path)
    assert first.returncode == 0, first.stderr
    engine = tmp_path / "engines" / "h100-tp1"
    assert (engine / ".lexora-engine").read_text().strip() == "h100-tp1-abc"
    assert not (tmp_path / "engines" / "h100-tp1.partial").exists()
    args = json.loads((tmp_path / "calls").read_text())
    assert args == {
        "model": str(tmp_path / "source"),
        "tp": 1,
        "dtype": "auto",
        "max_batch_size": 64,
        "max_seq_len": 131072,
    }
    report = json.loads((tmp_path / "termination-log").read_text())
    assert report["trtllmVersion"] == "0.17.0" and report["sizeBytes"] > 100
    # Guided decoding on the C++ backend reads the tokenizer as xgrammar does, next to the engine.
    info = json.loads((engine / "xgrammar_tokenizer_info.json").read_text())
    assert info["encoded_vocab"] == ["a", "b", "</s>"] and info["stop_token_ids"] == [2]

    again = run_build(tmp_path)
    assert again.returncode == 0, again.stderr
    assert "engine cache hit" in again.stdout
    assert len((tmp_path / "calls").read_text().splitlines()) == 1, "an engine that exists is never rebuilt"

    (engine / "xgrammar_tokenizer_info.json").unlink()  # an engine built before the file existed
    added = run_build(tmp_path)
    assert added.returncode == 0, added.stderr
    assert (engine / "xgrammar_tokenizer_info.json").is_file()
    assert len((tmp_path / "calls").read_text().splitlines()) == 1, "the file is added without a rebuild"

    other_key = run_build(tmp_path, LEXORA_ENGINE_KEY="h100-tp1-def")
    assert other_key.returncode == 0, other_key.stderr
    assert len((tmp_path / "calls").read_text().splitlines()) == 2, "another key is another engine"


def test_a_wrong_tensorrt_llm_version_is_refused_before_building(tmp_path: Path) -> None:
    result = run_build(tmp_path, LEXORA_TRTLLM_VERSION="0.18.0")
    assert result.returncode == 1
    message = (tmp_path / "termination-log").read_text()
    assert message.startswith("engine build failed: the builder image has TensorRT-LLM 0.17.0")
    assert not (tmp_path / "calls").exists()


def test_a_failed_build_leaves_no_engine_that_looks_finished(tmp_path: Path) -> None:
    result = run_build(tmp_path, FAKE_FAIL="1")
    assert result.returncode == 1
    assert (tmp_path / "termination-log").read_text().strip() == "engine build failed: CUDA out of memory"
    assert not (tmp_path / "engines" / "h100-tp1").exists()


def test_a_source_without_a_checkpoint_is_reported(tmp_path: Path) -> None:
    result = run_build(tmp_path, LEXORA_ENGINE_SOURCE=str(tmp_path / "nowhere"))
    assert result.returncode == 1
    assert "holds no Hugging Face checkpoint" in (tmp_path / "termination-log").read_text()
