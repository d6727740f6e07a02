"""The Triton model repository a ModelDeployment serves, as text: config.pbtxt files and the fetch script.

Everything here is pure: spec in, file contents out. The operator puts the files in a ConfigMap; the
pod's init container fetches the model source into the cache volume and assembles /models from the
`layout` file (which model directories to create, which source directories to link in as version 1).

tensorrtllm: tensorrtllm_backend's inflight_batcher_llm models (NVIDIA's stock `preprocessing` and
`postprocessing`, and the `tensorrt_llm` engine) behind our BLS model `lexora-trtllm-chat` (the
model the router calls: it takes the router's tensors, applies the chat template, counts tokens and
derives the finish reason). The model code comes from the Lexora TensorRT-LLM runtime image; the
model source is only the Hugging Face checkpoint (or a prebuilt engine and tokenizer).
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
        layout = tensorrtllm_layout(spec)
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

# Where the Lexora TensorRT-LLM runtime image (images/triton-trtllm/Dockerfile) keeps the model code:
# NVIDIA's stock preprocessing and postprocessing of tensorrtllm_backend's inflight_batcher_llm, as
# shipped at the tag of the image's TensorRT-LLM, and our BLS model (model-repo/lexora-trtllm-chat).
TRTLLM_CHAT_CODE_DIR = "/opt/lexora/models/lexora-trtllm-chat/1"
STOCK_MODELS_DIR = "/opt/lexora/trtllm"
# Written next to the engine by the build (engine_build_script.py): the tokenizer as xgrammar reads
# it, which the C++ tensorrtllm backend needs for guided decoding.
XGRAMMAR_TOKENIZER_INFO = "xgrammar_tokenizer_info.json"
TRTLLM_STEP_MODELS = ("preprocessing", "tensorrt_llm", "postprocessing")


def tensorrtllm_configs(spec: ModelDeploymentSpec) -> dict[str, str]:
    return {
        spec.triton_model_name: trtllm_chat_config(spec),
        "preprocessing": preprocessing_config(spec),
        "tensorrt_llm": tensorrt_llm_config(spec),
        "postprocessing": postprocessing_config(spec),
    }


def tensorrtllm_layout(spec: ModelDeploymentSpec) -> list[str]:
    # build: a Hugging Face checkpoint (the engine and its xgrammar tokenizer file are built into
    # /cache/engine, by the model cache's build Job or by the pod's build-engine init container);
    # prebuilt: engine/ (with the tokenizer file) and tokenizer/.
    if spec.builds_engine:
        files = ["require config.json", "require tokenizer_config.json"]
    else:
        files = ["require engine/config.json", f"require engine/{XGRAMMAR_TOKENIZER_INFO}", "require tokenizer"]
    return [
        *files,
        f"model {spec.triton_model_name} {TRTLLM_CHAT_CODE_DIR}",
        "model tensorrt_llm",
        f"model preprocessing {STOCK_MODELS_DIR}/preprocessing/1",
        f"model postprocessing {STOCK_MODELS_DIR}/postprocessing/1",
    ]


def trtllm_chat_config(spec: ModelDeploymentSpec) -> str:
    """The model the router calls: our BLS model (chat template, counts, finish reason, stop words)
    in front of the stock models. Always decoupled: it streams when the caller asks. No thinking
    budget: TensorRT-LLM has no input to enforce one, so reasoning_budget is not declared."""
    parameters = {
        "tokenizer_dir": tokenizer_dir(spec),
        "preprocessing_model": "preprocessing",
        "engine_model": "tensorrt_llm",
        "postprocessing_model": "postprocessing",
        # Requests in flight through this model (each waits on its engine request in a thread).
        "max_concurrent_requests": str(max(2 * spec.max_batch_size, 8)),
    }
    return _join(
        _header(spec.triton_model_name, 'backend: "python"', 0),
        _decoupled(True),
        _tensors("input", _chat_inputs()),
        _tensors("output", _declared(CHAT_OUTPUTS + OPTIONAL_CHAT_OUTPUTS)),
        _instances(spec.triton.instance_count, "KIND_CPU"),
        _parameters(parameters),
    )


def _scalar_input(name: str, data_type: str) -> str:
    return _tensor(name, data_type, "1", optional=True, extra="reshape: { shape: [ ] }")


def tensorrt_llm_config(spec: ModelDeploymentSpec) -> str:
    """The engine itself (tensorrtllm_backend's C++ backend): in-flight batching, paged KV cache sized
    as a fraction of free GPU memory, guided decoding by xgrammar. Tensor names are the backend's."""
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
        "tokenizer_dir": tokenizer_dir(spec),
        "guided_decoding_backend": "xgrammar",
        "xgrammar_tokenizer_info_path": f"{engine_dir(spec)}/{XGRAMMAR_TOKENIZER_INFO}",
        **spec.triton.parameters,
    }
    inputs = [
        _tensor("input_ids", "TYPE_INT32", "-1", extra="allow_ragged_batch: true"),
        _tensor("input_lengths", "TYPE_INT32", "1", extra="reshape: { shape: [ ] }"),
        _tensor("request_output_len", "TYPE_INT32", "1", extra="reshape: { shape: [ ] }"),
        _scalar_input("end_id", "TYPE_INT32"),
        _scalar_input("pad_id", "TYPE_INT32"),
        _tensor("stop_words_list", "TYPE_INT32", "2, -1", optional=True, extra="allow_ragged_batch: true"),
        _tensor("bad_words_list", "TYPE_INT32", "2, -1", optional=True, extra="allow_ragged_batch: true"),
        _scalar_input("temperature", "TYPE_FP32"),
        _scalar_input("runtime_top_p", "TYPE_FP32"),
        _scalar_input("runtime_top_k", "TYPE_INT32"),
        _scalar_input("frequency_penalty", "TYPE_FP32"),
        _scalar_input("presence_penalty", "TYPE_FP32"),
        _scalar_input("random_seed", "TYPE_UINT64"),
        _scalar_input("streaming", "TYPE_BOOL"),
        _tensor("guided_decoding_guide_type", "TYPE_STRING", "1", optional=True, extra="allow_ragged_batch: true"),
        _tensor("guided_decoding_guide", "TYPE_STRING", "1", optional=True, extra="allow_ragged_batch: true"),
    ]
    outputs = [
        _tensor("output_ids", "TYPE_INT32", "-1, -1"),
        _tensor("sequence_length", "TYPE_INT32", "-1"),
    ]
    return _join(
        _header("tensorrt_llm", 'backend: "tensorrtllm"', spec.max_batch_size),
        # Always decoupled: the BLS model streams from it when its caller streams.
        _decoupled(True),
        _dynamic_batching(spec),
        _tensors("input", inputs),
        _tensors("output", outputs),
        # The backend places the engine on the GPUs itself; one instance drives them all.
        _instances(1, "KIND_CPU"),
        _parameters(parameters),
    )


# The stock models' tensors, as tensorrtllm_backend's all_models/inflight_batcher_llm declares them
# (v0.19.0). Their model.py reads several of these declarations at load time (the multimodal ones
# included), so each config declares all of them, exactly as NVIDIA's does.
_PREPROCESSING_INPUTS = (
    ("QUERY", "TYPE_STRING", "1", False),
    ("DECODER_QUERY", "TYPE_STRING", "1", True),
    ("IMAGE_BYTES", "TYPE_UINT8", "-1, -1, -1, -1", True),
    ("IMAGE_URL", "TYPE_STRING", "1", True),
    ("VIDEO_BYTES", "TYPE_UINT8", "-1, -1, -1, -1", True),
    ("REQUEST_OUTPUT_LEN", "TYPE_INT32", "1", False),
    ("BAD_WORDS_DICT", "TYPE_STRING", "-1", True),
    ("STOP_WORDS_DICT", "TYPE_STRING", "-1", True),
    ("EMBEDDING_BIAS_WORDS", "TYPE_STRING", "-1", True),
    ("EMBEDDING_BIAS_WEIGHTS", "TYPE_FP32", "-1", True),
    ("END_ID", "TYPE_INT32", "1", True),
    ("PAD_ID", "TYPE_INT32", "1", True),
    ("PROMPT_TABLE_EXTRA_ID", "TYPE_UINT64", "1", True),
)
_PREPROCESSING_OUTPUTS = (
    ("INPUT_ID", "TYPE_INT32", "-1"),
    ("REQUEST_INPUT_LEN", "TYPE_INT32", "1"),
    ("DECODER_INPUT_ID", "TYPE_INT32", "-1"),
    ("REQUEST_DECODER_INPUT_LEN", "TYPE_INT32", "1"),
    ("BAD_WORDS_IDS", "TYPE_INT32", "2, -1"),
    ("STOP_WORDS_IDS", "TYPE_INT32", "2, -1"),
    ("EMBEDDING_BIAS", "TYPE_FP32", "-1"),
    ("REQUEST_OUTPUT_LEN", "TYPE_INT32", "-1"),
    ("OUT_END_ID", "TYPE_INT32", "1"),
    ("OUT_PAD_ID", "TYPE_INT32", "1"),
    ("OUT_PROMPT_TABLE_EXTRA_IDS", "TYPE_UINT64", "-1"),
    ("PIXEL_VALUES", "TYPE_FP16", "-1, -1, -1, -1"),
    ("ASPECT_RATIO_IDS", "TYPE_INT64", "-1"),
    ("ASPECT_RATIO_MASK", "TYPE_INT64", "-1, -1"),
    ("CROSS_ATTENTION_MASK", "TYPE_INT64", "-1, -1, -1"),
    ("IMAGE_SIZES", "TYPE_INT64", "2"),
    ("IS_VIDEO_INPUT", "TYPE_BOOL", "1"),
    ("ATTENTION_MASK", "TYPE_INT64", "-1"),
    ("IMAGE_GRID_THW", "TYPE_INT64", "3"),
    ("VISION_INPUT_ID", "TYPE_INT32", "-1"),
)


def preprocessing_config(spec: ModelDeploymentSpec) -> str:
    """NVIDIA's tokenizer model, with its stock tensors and parameters. add_special_tokens is off:
    the BLS model hands it prompts that a chat template already opened (with BOS)."""
    inputs = [_tensor(n, t, d, optional=o) for n, t, d, o in _PREPROCESSING_INPUTS]
    outputs = [_tensor(n, t, d) for n, t, d in _PREPROCESSING_OUTPUTS]
    parameters = {
        "tokenizer_dir": tokenizer_dir(spec),
        "add_special_tokens": "false",
        "multimodal_model_path": "",
        "gpt_model_path": engine_dir(spec),
        "max_num_images": "",
    }
    return _join(
        _header("preprocessing", 'backend: "python"', spec.max_batch_size),
        _dynamic_batching(spec),
        _tensors("input", inputs),
        _tensors("output", outputs),
        _instances(spec.triton.instance_count, "KIND_CPU"),
        _parameters(parameters),
    )


def postprocessing_config(spec: ModelDeploymentSpec) -> str:
    """NVIDIA's detokenizer model, with its stock tensors: token ids in, text out."""
    inputs = [_tensor("TOKENS_BATCH", "TYPE_INT32", "-1, -1"), _tensor("SEQUENCE_LENGTH", "TYPE_INT32", "-1")]
    return _join(
        _header("postprocessing", 'backend: "python"', spec.max_batch_size),
        "dynamic_batching {\n}",
        _tensors("input", inputs),
        _tensors("output", [_tensor("OUTPUT", "TYPE_STRING", "-1")]),
        _instances(spec.triton.instance_count, "KIND_CPU"),
        _parameters({"tokenizer_dir": tokenizer_dir(spec), "skip_special_tokens": "true"}),
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
