"""The Triton model repository a ModelDeployment serves, as text: config.pbtxt files and the fetch script.

Everything here is pure: spec in, file contents out. The operator puts the files in a ConfigMap; the
pod's init container fetches the model source into the cache volume and assembles /models from the
`layout` file (which model directories to create, which source directories to link in as version 1).

tensorrtllm: the inflight_batcher_llm layout of tensorrtllm_backend (preprocessing -> tensorrt_llm ->
postprocessing, wired by `ensemble`). The ensemble exposes the tensor names the router sends (the
TensorRT-LLM ensemble's own `text_input`, `max_tokens`, `stream`, `temperature`, `top_p`, `seed`,
`stop_words`) plus Lexora's `apply_chat_template` in and `num_input_tokens`/`num_output_tokens`/
`finish_reason` out, which the source's preprocessing/postprocessing models implement.
python: one model whose code (`1/model.py`) comes from the source or the image; the config declares
the router's tensors for its kind (lexora_contracts.engine_tensors: chat, embedding, image) and
passes `model_dir` (where the model's files are) and `model_id`.
"""

from __future__ import annotations

from importlib import resources

from lexora_contracts.engine_tensors import (
    CHAT_INPUTS,
    CHAT_OUTPUTS,
    EMBEDDING_INPUTS,
    EMBEDDING_OUTPUTS,
    IMAGE_INPUTS,
    IMAGE_OUTPUTS,
    OPTIONAL_CHAT_OUTPUTS,
    REASONING_INPUTS,
    EngineTensor,
)
from lexora_operator.fetch_script import FETCH_SCRIPT
from lexora_operator.spec import ModelDeploymentSpec

MODEL_REPO_DIR = "/models"
CACHE_DIR = "/cache"
PVC_SOURCE_DIR = "/source"
CONFIG_DIR = "/etc/lexora/model-repo"
LAYOUT_KEY = "layout"
FETCH_SCRIPT_KEY = "fetch.sh"
PROBE_SCRIPT_KEY = "probe.py"
BUILD_SCRIPT_KEY = "build_engine.py"
ENGINE_DIR = f"{CACHE_DIR}/engine"  # a built engine: the model cache's, or built in the pod


def source_dir(spec: ModelDeploymentSpec) -> str:
    """Where the model's files are inside the pod: the PVC itself, the directory in the Triton image,
    or what the fetcher downloaded."""
    if spec.source.image is not None:
        return spec.source.image.path.rstrip("/")
    return PVC_SOURCE_DIR if spec.source.kind == "pvc" else f"{CACHE_DIR}/source"


def config_key(model: str) -> str:
    return f"{model}.config.pbtxt"


def probe_script() -> str:
    """The Triton container's readiness and liveness probe: the module lexora_operator.probe_script is
    the script itself (standard library only), shipped as it is."""
    return resources.files("lexora_operator").joinpath("probe_script.py").read_text(encoding="utf-8")


def model_repository_files(spec: ModelDeploymentSpec) -> dict[str, str]:
    """ConfigMap data: one `<model>.config.pbtxt` per Triton model, the layout, the fetch script and
    the probe script."""
    if spec.backend == "tensorrtllm":
        configs = tensorrtllm_configs(spec)
        # build: a Hugging Face checkpoint (the engine is built into /cache/engine, by the model
        # cache's build Job or by the pod's build-engine init container); prebuilt: engine/ and tokenizer/.
        checkpoint = ["require config.json", "require tokenizer_config.json"]
        layout = [
            *(checkpoint if spec.builds_engine else ["require engine/config.json", "require tokenizer"]),
            "require preprocessing/1/model.py",
            "require postprocessing/1/model.py",
            "model ensemble",
            "model tensorrt_llm",
            "model preprocessing preprocessing/1",
            "model postprocessing postprocessing/1",
        ]
    else:
        configs = {spec.triton_model_name: python_config(spec)}
        code = spec.triton.model_code_dir
        if code is None and spec.source.image is not None:
            # In the Triton image: the fetcher cannot see those files, so nothing is `require`d.
            code = f"{source_dir(spec)}/1"
        layout = (
            [f"model {spec.triton_model_name} {code}"]
            if code
            else ["require 1/model.py", f"model {spec.triton_model_name} 1"]
        )
    data = {config_key(model): text for model, text in configs.items()}
    data[LAYOUT_KEY] = "\n".join(layout) + "\n"
    data[FETCH_SCRIPT_KEY] = FETCH_SCRIPT
    data[PROBE_SCRIPT_KEY] = probe_script()
    if spec.builds_engine:  # the build-engine init container's, when there is no model cache
        data[BUILD_SCRIPT_KEY] = (
            resources.files("lexora_operator").joinpath("engine_build_script.py").read_text(encoding="utf-8")
        )
    return data


def engine_dir(spec: ModelDeploymentSpec) -> str:
    return ENGINE_DIR if spec.builds_engine else f"{source_dir(spec)}/engine"


def tokenizer_dir(spec: ModelDeploymentSpec) -> str:
    # A Hugging Face checkpoint carries its tokenizer at its root; a prebuilt source in tokenizer/.
    return source_dir(spec) if spec.builds_engine else f"{source_dir(spec)}/tokenizer"


# --- pbtxt building blocks -------------------------------------------------------------------------


def _tensor(name: str, data_type: str, dims: str, *, optional: bool = False, extra: str = "") -> str:
    lines = [f'    name: "{name}"', f"    data_type: {data_type}", f"    dims: [ {dims} ]"]
    if extra:
        lines.append(f"    {extra}")
    if optional:
        lines.append("    optional: true")
    return "  {\n" + "\n".join(lines) + "\n  }"


def _tensors(kind: str, tensors: list[str]) -> str:
    return f"{kind} [\n" + ",\n".join(tensors) + "\n]"


def _parameters(values: dict[str, str]) -> str:
    return "\n".join(
        f'parameters: {{\n  key: "{key}"\n  value: {{ string_value: "{_escape(value)}" }}\n}}'
        for key, value in values.items()
    )


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _header(name: str, backend_or_platform: str, max_batch_size: int) -> str:
    return f'name: "{name}"\n{backend_or_platform}\nmax_batch_size: {max_batch_size}'


def _decoupled(enabled: bool) -> str:
    return f"model_transaction_policy {{\n  decoupled: {'true' if enabled else 'false'}\n}}"


def _instances(count: int, kind: str) -> str:
    return f"instance_group [\n  {{\n    count: {count}\n    kind: {kind}\n  }}\n]"


def _dynamic_batching(spec: ModelDeploymentSpec) -> str:
    return (
        "dynamic_batching {\n"
        f"  preferred_batch_size: [ {spec.max_batch_size} ]\n"
        f"  max_queue_delay_microseconds: {spec.triton.max_queue_delay_microseconds}\n"
        "}"
    )


def _join(*blocks: str) -> str:
    return "\n\n".join(block for block in blocks if block) + "\n"


# The router's chat interface (lexora_contracts.engine_tensors), as config.pbtxt tensors.
def _declared(tensors: tuple[EngineTensor, ...], *, inputs: bool = False) -> list[str]:
    return [_tensor(t.name, t.config_type, t.dims, optional=inputs and t.optional) for t in tensors]


def _chat_inputs(reasoning: bool = False) -> list[str]:
    return _declared(CHAT_INPUTS + (REASONING_INPUTS if reasoning else ()), inputs=True)


# --- TensorRT-LLM -----------------------------------------------------------------------------------


def tensorrtllm_configs(spec: ModelDeploymentSpec) -> dict[str, str]:
    return {
        "ensemble": ensemble_config(spec),
        "preprocessing": preprocessing_config(spec),
        "tensorrt_llm": tensorrt_llm_config(spec),
        "postprocessing": postprocessing_config(spec),
    }


def tensorrt_llm_config(spec: ModelDeploymentSpec) -> str:
    """The engine itself: in-flight batching, paged KV cache sized as a fraction of free GPU memory."""
    parameters = {
        "max_beam_width": "1",
        "FORCE_CPU_ONLY_INPUT_TENSORS": "no",
        "gpt_model_type": "inflight_fused_batching",
        "gpt_model_path": engine_dir(spec),
        "batch_scheduler_policy": "guaranteed_no_evict",
        "kv_cache_free_gpu_mem_fraction": _fraction(spec.triton.kv_cache_free_gpu_mem_fraction),
        "enable_kv_cache_reuse": "true",
        "enable_chunked_context": "true",
        "exclude_input_in_output": "true",
        "cancellation_check_period_ms": "100",
        "executor_worker_path": "/opt/tritonserver/backends/tensorrtllm/trtllmExecutorWorker",
        **spec.triton.parameters,
    }
    inputs = [
        _tensor("input_ids", "TYPE_INT32", "-1", extra="allow_ragged_batch: true"),
        _tensor("input_lengths", "TYPE_INT32", "1", extra="reshape: { shape: [ ] }"),
        _tensor("request_output_len", "TYPE_INT32", "1", extra="reshape: { shape: [ ] }"),
        _tensor("end_id", "TYPE_INT32", "1", optional=True, extra="reshape: { shape: [ ] }"),
        _tensor("pad_id", "TYPE_INT32", "1", optional=True, extra="reshape: { shape: [ ] }"),
        _tensor("stop_words_list", "TYPE_INT32", "2, -1", optional=True, extra="allow_ragged_batch: true"),
        _tensor("bad_words_list", "TYPE_INT32", "2, -1", optional=True, extra="allow_ragged_batch: true"),
        _tensor("temperature", "TYPE_FP32", "1", optional=True, extra="reshape: { shape: [ ] }"),
        _tensor("runtime_top_p", "TYPE_FP32", "1", optional=True, extra="reshape: { shape: [ ] }"),
        _tensor("runtime_top_k", "TYPE_INT32", "1", optional=True, extra="reshape: { shape: [ ] }"),
        _tensor("frequency_penalty", "TYPE_FP32", "1", optional=True, extra="reshape: { shape: [ ] }"),
        _tensor("presence_penalty", "TYPE_FP32", "1", optional=True, extra="reshape: { shape: [ ] }"),
        _tensor("seed", "TYPE_UINT64", "1", optional=True, extra="reshape: { shape: [ ] }"),
        _tensor("streaming", "TYPE_BOOL", "1", optional=True),
        _tensor("guided_decoding_guide_type", "TYPE_STRING", "1", optional=True, extra="allow_ragged_batch: true"),
        _tensor("guided_decoding_guide", "TYPE_STRING", "1", optional=True, extra="allow_ragged_batch: true"),
    ]
    outputs = [
        _tensor("output_ids", "TYPE_INT32", "-1, -1"),
        _tensor("sequence_length", "TYPE_INT32", "-1"),
    ]
    return _join(
        _header("tensorrt_llm", 'backend: "tensorrtllm"', spec.max_batch_size),
        _decoupled(spec.decoupled),
        _dynamic_batching(spec),
        _tensors("input", inputs),
        _tensors("output", outputs),
        # The backend places the engine on the GPUs itself; one instance drives them all.
        _instances(1, "KIND_CPU"),
        _parameters(parameters),
    )


def preprocessing_config(spec: ModelDeploymentSpec) -> str:
    """Chat template + tokenizer: messages (or a raw prompt) in, token ids and their count out."""
    inputs = [
        _tensor("QUERY", "TYPE_STRING", "1"),
        _tensor("REQUEST_OUTPUT_LEN", "TYPE_INT32", "1"),
        _tensor("STOP_WORDS_DICT", "TYPE_STRING", "-1", optional=True),
        _tensor("APPLY_CHAT_TEMPLATE", "TYPE_BOOL", "1", optional=True),
    ]
    outputs = [
        _tensor("INPUT_ID", "TYPE_INT32", "-1"),
        _tensor("REQUEST_INPUT_LEN", "TYPE_INT32", "1"),
        _tensor("REQUEST_OUTPUT_LEN", "TYPE_INT32", "-1"),
        _tensor("STOP_WORDS_IDS", "TYPE_INT32", "2, -1"),
        _tensor("OUT_END_ID", "TYPE_INT32", "1"),
        _tensor("OUT_PAD_ID", "TYPE_INT32", "1"),
    ]
    return _join(
        _header("preprocessing", 'backend: "python"', spec.max_batch_size),
        _tensors("input", inputs),
        _tensors("output", outputs),
        _instances(spec.triton.instance_count, "KIND_CPU"),
        _parameters({"tokenizer_dir": tokenizer_dir(spec), "add_special_tokens": "false"}),
    )


def postprocessing_config(spec: ModelDeploymentSpec) -> str:
    """Detokenizer: token ids in, text plus the counts and finish reason the router bills from."""
    inputs = [
        _tensor("TOKENS_BATCH", "TYPE_INT32", "-1, -1"),
        _tensor("SEQUENCE_LENGTH", "TYPE_INT32", "-1"),
        _tensor("REQUEST_INPUT_LEN", "TYPE_INT32", "1"),
        _tensor("REQUEST_OUTPUT_LEN", "TYPE_INT32", "-1"),
        _tensor("END_ID", "TYPE_INT32", "1"),
    ]
    outputs = [
        _tensor("OUTPUT", "TYPE_STRING", "1"),
        _tensor("NUM_INPUT_TOKENS", "TYPE_INT32", "1"),
        _tensor("NUM_OUTPUT_TOKENS", "TYPE_INT32", "1"),
        _tensor("FINISH_REASON", "TYPE_STRING", "1"),
    ]
    return _join(
        _header("postprocessing", 'backend: "python"', spec.max_batch_size),
        "dynamic_batching {\n}",
        _tensors("input", inputs),
        _tensors("output", outputs),
        _instances(spec.triton.instance_count, "KIND_CPU"),
        _parameters({"tokenizer_dir": tokenizer_dir(spec), "skip_special_tokens": "true"}),
    )


def _step(model: str, inputs: dict[str, str], outputs: dict[str, str]) -> str:
    maps = [
        f'      input_map {{\n        key: "{key}"\n        value: "{value}"\n      }}' for key, value in inputs.items()
    ]
    maps += [
        f'      output_map {{\n        key: "{key}"\n        value: "{value}"\n      }}'
        for key, value in outputs.items()
    ]
    return "    {\n" + f'      model_name: "{model}"\n      model_version: -1\n' + "\n".join(maps) + "\n    }"


def ensemble_config(spec: ModelDeploymentSpec) -> str:
    steps = [
        _step(
            "preprocessing",
            {
                "QUERY": "text_input",
                "REQUEST_OUTPUT_LEN": "max_tokens",
                "STOP_WORDS_DICT": "stop_words",
                "APPLY_CHAT_TEMPLATE": "apply_chat_template",
            },
            {
                "INPUT_ID": "_INPUT_ID",
                "REQUEST_INPUT_LEN": "_REQUEST_INPUT_LEN",
                "REQUEST_OUTPUT_LEN": "_REQUEST_OUTPUT_LEN",
                "STOP_WORDS_IDS": "_STOP_WORDS_IDS",
                "OUT_END_ID": "_END_ID",
                "OUT_PAD_ID": "_PAD_ID",
            },
        ),
        _step(
            "tensorrt_llm",
            {
                "input_ids": "_INPUT_ID",
                "input_lengths": "_REQUEST_INPUT_LEN",
                "request_output_len": "_REQUEST_OUTPUT_LEN",
                "end_id": "_END_ID",
                "pad_id": "_PAD_ID",
                "stop_words_list": "_STOP_WORDS_IDS",
                "temperature": "temperature",
                "runtime_top_p": "top_p",
                "runtime_top_k": "top_k",
                "frequency_penalty": "frequency_penalty",
                "presence_penalty": "presence_penalty",
                "seed": "seed",
                "streaming": "stream",
                "guided_decoding_guide_type": "guided_decoding_guide_type",
                "guided_decoding_guide": "guided_decoding_guide",
            },
            {"output_ids": "_TOKENS_BATCH", "sequence_length": "_SEQUENCE_LENGTH"},
        ),
        _step(
            "postprocessing",
            {
                "TOKENS_BATCH": "_TOKENS_BATCH",
                "SEQUENCE_LENGTH": "_SEQUENCE_LENGTH",
                "REQUEST_INPUT_LEN": "_REQUEST_INPUT_LEN",
                "REQUEST_OUTPUT_LEN": "_REQUEST_OUTPUT_LEN",
                "END_ID": "_END_ID",
            },
            {
                "OUTPUT": "text_output",
                "NUM_INPUT_TOKENS": "num_input_tokens",
                "NUM_OUTPUT_TOKENS": "num_output_tokens",
                "FINISH_REASON": "finish_reason",
            },
        ),
    ]
    return _join(
        _header("ensemble", 'platform: "ensemble"', spec.max_batch_size),
        _tensors("input", _chat_inputs()),
        # The stock postprocessing reports no stop word; the router asks only for declared outputs.
        _tensors("output", _declared(CHAT_OUTPUTS)),
        "ensemble_scheduling {\n  step [\n" + ",\n".join(steps) + "\n  ]\n}",
    )


# --- Python backend ---------------------------------------------------------------------------------


def python_config(spec: ModelDeploymentSpec) -> str:
    gpus = spec.gpu.count
    reasoning = "reasoning" in spec.model.capabilities
    if spec.model.kind == "chat":
        inputs, outputs = _chat_inputs(reasoning), _declared(CHAT_OUTPUTS + OPTIONAL_CHAT_OUTPUTS)
    elif spec.model.kind == "embedding":
        inputs, outputs = _declared(EMBEDDING_INPUTS, inputs=True), _declared(EMBEDDING_OUTPUTS)
    else:
        inputs, outputs = _declared(IMAGE_INPUTS, inputs=True), _declared(IMAGE_OUTPUTS)
    io = [_tensors("input", inputs), _tensors("output", outputs)]
    parameters = {"model_dir": source_dir(spec), "model_id": spec.model.id, **spec.triton.parameters}
    return _join(
        _header(spec.triton_model_name, 'backend: "python"', spec.max_batch_size),
        _decoupled(spec.decoupled),
        _dynamic_batching(spec) if spec.max_batch_size > 0 else "",
        *io,
        _instances(spec.triton.instance_count, "KIND_GPU" if gpus else "KIND_CPU"),
        _parameters(parameters),
    )


def _fraction(value: float) -> str:
    return f"{value:.4f}".rstrip("0").rstrip(".")
