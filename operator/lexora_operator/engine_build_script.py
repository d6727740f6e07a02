"""Build a TensorRT-LLM engine from a Hugging Face checkpoint, once per cache key.

Shipped as it is in the model-cache ConfigMap (`build_engine.py`) and run with the python3 of the
TensorRT-LLM Triton image, which carries `tensorrt_llm`: by the engine build Job into the model cache
(`engines/<key>` on the cache PVC), or, without a model cache, by the Triton pod's `build-engine`
init container into its own emptyDir. Standard library only, besides tensorrt_llm itself.

Inputs (env): LEXORA_ENGINE_SOURCE (the checkpoint: config.json, weights, tokenizer),
LEXORA_ENGINE_DIR (where the engine goes), LEXORA_ENGINE_KEY (what it is built for: model, GPU
product, tensor-parallel size, TensorRT-LLM version and build settings), LEXORA_TP_SIZE,
LEXORA_TRTLLM_VERSION (expected; empty: any), LEXORA_DTYPE, LEXORA_MAX_BATCH_SIZE,
LEXORA_MAX_SEQ_LEN, LEXORA_MAX_NUM_TOKENS (0: TensorRT-LLM's default), LEXORA_TERMINATION_LOG.

- Next to the engine it writes `xgrammar_tokenizer_info.json`: the checkpoint's tokenizer as xgrammar
  reads it (the vocabulary in id order, the tokenizer's JSON, the stop token ids), made by the same
  TensorRT-LLM function as its `examples/generate_xgrammar_tokenizer_info.py`. The C++ tensorrtllm
  backend needs it for guided decoding (the `xgrammar_tokenizer_info_path` of the tensorrt_llm config).
- An engine directory whose marker holds this key is reused: nothing is built (every replica and
  every later rollout, and a Job re-run after the operator lost track of it). An engine built before
  the tokenizer file existed gets the file added in place.
- The engine is built into `<dir>.partial` and renamed into place only when complete, so a crashed
  build never leaves a directory that looks finished.
- A failure writes one line to the termination log ("engine build failed: ..."), which the operator
  copies into status.engine and the Ready condition; success writes
  `{"sizeBytes": N, "trtllmVersion": "...", "key": "..."}`.

What needs a GPU (the LLM API's build itself) is the one call to `build()`; everything around it is
tested without one (tests/operator/test_operator_engine_build_script.py, with a stand-in module).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from pathlib import Path

MARKER = ".lexora-engine"
TOKENIZER_INFO = "xgrammar_tokenizer_info.json"


class BuildError(Exception):
    pass


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _report(text: str) -> None:
    log = _env("LEXORA_TERMINATION_LOG", "/dev/termination-log")
    with contextlib.suppress(OSError):
        Path(log).write_text(text + "\n", encoding="utf-8")


def _visible_gpus() -> int | None:
    try:
        import torch  # in the TensorRT-LLM image; absent elsewhere

        return int(torch.cuda.device_count())
    except Exception:  # noqa: BLE001 - only a hint
        return None


def build(source: Path, out: Path, tp: int, dtype: str, max_batch: int, max_seq: int, max_tokens: int) -> None:
    """The LLM API: load the checkpoint, build the engine for the GPUs at hand, save it."""
    from tensorrt_llm import LLM, BuildConfig

    settings = {"max_batch_size": max_batch, "max_seq_len": max_seq}
    if max_tokens:
        settings["max_num_tokens"] = max_tokens
    llm = LLM(model=str(source), tensor_parallel_size=tp, dtype=dtype, build_config=BuildConfig(**settings))
    try:
        llm.save(str(out))
    finally:
        shutdown = getattr(llm, "shutdown", None)
        if callable(shutdown):
            shutdown()


def write_tokenizer_info(source: Path, out: Path) -> None:
    """The tokenizer file for xgrammar, from TensorRT-LLM's own helper (what its C++ backend reads)."""
    from tensorrt_llm.llmapi.tokenizer import _xgrammar_tokenizer_info, tokenizer_factory

    info = _xgrammar_tokenizer_info(tokenizer_factory(str(source)))
    partial = out / (TOKENIZER_INFO + ".partial")
    partial.write_text(json.dumps(info), encoding="utf-8")
    partial.rename(out / TOKENIZER_INFO)


def main() -> int:
    try:
        source = Path(_env("LEXORA_ENGINE_SOURCE"))
        out = Path(_env("LEXORA_ENGINE_DIR"))
        key = _env("LEXORA_ENGINE_KEY")
        if not key or not str(out) or str(out) == ".":
            raise BuildError("LEXORA_ENGINE_DIR and LEXORA_ENGINE_KEY are required")
        marker = out / MARKER
        if marker.is_file() and marker.read_text(encoding="utf-8").strip() == key and (out / "config.json").is_file():
            print(f"engine cache hit: {key}", flush=True)
            if not (out / TOKENIZER_INFO).is_file():
                write_tokenizer_info(source, out)
                print(f"wrote {TOKENIZER_INFO} next to the engine", flush=True)
            _report(json.dumps({"sizeBytes": _size(out), "key": key, "cached": True}))
            return 0
        if not (source / "config.json").is_file():
            raise BuildError(f"{source} holds no Hugging Face checkpoint (config.json is missing)")
        scratch = _env("TMPDIR")
        if scratch:  # the Job points it at the cache PVC: a large build's temporary files
            Path(scratch).mkdir(parents=True, exist_ok=True)
        tp = int(_env("LEXORA_TP_SIZE", "1"))
        gpus = _visible_gpus()
        if gpus is not None and gpus < tp:
            raise BuildError(f"tensor-parallel size {tp} needs {tp} GPUs, this container sees {gpus}")
        import tensorrt_llm

        version = str(getattr(tensorrt_llm, "__version__", "unknown"))
        expected = _env("LEXORA_TRTLLM_VERSION")
        if expected and expected != version:
            raise BuildError(
                f"the builder image has TensorRT-LLM {version}, spec.engine.trtllmVersion says {expected}: "
                "fix one of them (the engine would be cached under the wrong version)"
            )
        partial = out.with_name(out.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        print(f"building engine {key} from {source} (TensorRT-LLM {version}, tp={tp})", flush=True)
        build(
            source,
            partial,
            tp,
            _env("LEXORA_DTYPE", "auto") or "auto",
            int(_env("LEXORA_MAX_BATCH_SIZE", "64")),
            int(_env("LEXORA_MAX_SEQ_LEN", "8192")),
            int(_env("LEXORA_MAX_NUM_TOKENS", "0") or 0),
        )
        if not (partial / "config.json").is_file():
            raise BuildError(f"the build wrote no config.json into {partial}")
        write_tokenizer_info(source, partial)
        (partial / MARKER).write_text(key + "\n", encoding="utf-8")
        shutil.rmtree(out, ignore_errors=True)
        partial.rename(out)
        size = _size(out)
        print(f"engine built: {out} ({size} bytes)", flush=True)
        _report(json.dumps({"sizeBytes": size, "trtllmVersion": version, "key": key}))
        return 0
    except Exception as exc:  # noqa: BLE001 - one readable line for the operator, whatever failed
        message = f"engine build failed: {exc}".replace("\n", " ")[:1000]
        print(message, file=sys.stderr, flush=True)
        _report(message)
        return 1


if __name__ == "__main__":
    sys.exit(main())
