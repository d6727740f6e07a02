"""The generated Triton model repository: config.pbtxt files Triton can parse, wired end to end."""

from __future__ import annotations

import copy
from typing import Any

from google.protobuf import text_format
from operator_support import REPO_ROOT, load_sample
from tritonclient.grpc import model_config_pb2

from lexora_contracts.engine_tensors import CHAT_INPUTS, CHAT_OUTPUTS, OPTIONAL_CHAT_OUTPUTS, REASONING_INPUTS
from lexora_operator.model_repository import model_repository_files
from lexora_operator.spec import parse_spec

# What lexora_router.triton_engine sends and reads, for every chat model whatever its backend.
ROUTER_INPUTS = {t.name for t in CHAT_INPUTS}
ROUTER_OUTPUTS = {t.name for t in CHAT_OUTPUTS}
STOP_WORD = {t.name for t in OPTIONAL_CHAT_OUTPUTS}


def configs(
    sample: str, engine: dict[str, Any] | None = None, **triton: Any
) -> dict[str, model_config_pb2.ModelConfig]:
    manifest = load_sample(sample)
    spec = copy.deepcopy(manifest["spec"])
    spec["triton"].update(triton)
    if engine is not None:
        spec["engine"] = engine
    files = model_repository_files(parse_spec(manifest["metadata"]["name"], spec))
    return {
        key.removesuffix(".config.pbtxt"): text_format.Parse(text, model_config_pb2.ModelConfig())
        for key, text in files.items()
        if key.endswith(".config.pbtxt")
    }


def parameters(config: model_config_pb2.ModelConfig) -> dict[str, str]:
    return {key: value.string_value for key, value in config.parameters.items()}


BLS = "lexora-trtllm-chat"


def test_tensorrtllm_repository_is_our_bls_model_in_front_of_the_stock_models() -> None:
    assert sorted(configs("llama-3.2-3b-instruct.yaml")) == [BLS, "postprocessing", "preprocessing", "tensorrt_llm"]


def test_tensorrt_llm_engine_gets_batch_size_kv_cache_fraction_and_streaming() -> None:
    engine = configs("llama-3.2-3b-instruct.yaml", maxBatchSize=32, kvCacheFreeGpuMemFraction=0.85)["tensorrt_llm"]
    assert engine.backend == "tensorrtllm"
    assert engine.max_batch_size == 32
    assert engine.model_transaction_policy.decoupled is True
    params = parameters(engine)
    assert params["kv_cache_free_gpu_mem_fraction"] == "0.85"
    assert params["gpt_model_type"] == "inflight_fused_batching"
    # Built by the model cache's Job (or the pod's build-engine init container) into /cache/engine.
    assert params["gpt_model_path"] == "/cache/engine"
    prebuilt = configs("llama-3.2-3b-instruct.yaml", engine={"mode": "prebuilt"})
    assert parameters(prebuilt["tensorrt_llm"])["gpt_model_path"] == "/cache/source/engine"
    assert parameters(prebuilt["preprocessing"])["tokenizer_dir"] == "/cache/source/tokenizer"


def test_the_engine_always_streams_to_the_bls_model() -> None:
    models = configs("llama-3.2-3b-instruct.yaml", decoupled=False)
    assert models["tensorrt_llm"].model_transaction_policy.decoupled is True
    assert models[BLS].model_transaction_policy.decoupled is True


def test_guided_decoding_uses_xgrammar_with_the_tokenizer_file_next_to_the_engine() -> None:
    for engine, where in ((None, "/cache/engine"), ({"mode": "prebuilt"}, "/cache/source/engine")):
        params = parameters(configs("llama-3.2-3b-instruct.yaml", engine=engine)["tensorrt_llm"])
        assert params["guided_decoding_backend"] == "xgrammar"
        assert params["xgrammar_tokenizer_info_path"] == f"{where}/xgrammar_tokenizer_info.json"
    engine = configs("llama-3.2-3b-instruct.yaml")["tensorrt_llm"]
    names = {t.name for t in engine.input}
    assert {"guided_decoding_guide_type", "guided_decoding_guide", "random_seed", "runtime_top_k"} <= names


def test_a_built_engine_reads_the_tokenizer_from_the_hugging_face_checkpoint() -> None:
    models = configs("llama-3.2-3b-instruct.yaml")
    for model in (BLS, "preprocessing", "postprocessing", "tensorrt_llm"):
        assert parameters(models[model])["tokenizer_dir"] == "/cache/source"


def test_the_stock_models_get_their_stock_interface() -> None:
    """NVIDIA's model.py reads its declared tensors and parameters at load time; a missing one fails
    the load (a KeyError on multimodal_model_path, a None config for an output)."""
    models = configs("llama-3.2-3b-instruct.yaml")
    pre, post = models["preprocessing"], models["postprocessing"]
    assert {"QUERY", "REQUEST_OUTPUT_LEN", "STOP_WORDS_DICT", "BAD_WORDS_DICT", "END_ID", "PAD_ID"} <= {
        t.name for t in pre.input
    }
    assert {t.name for t in pre.input if not t.optional} == {"QUERY", "REQUEST_OUTPUT_LEN"}
    read_at_load = {"INPUT_ID", "DECODER_INPUT_ID", "REQUEST_INPUT_LEN", "REQUEST_DECODER_INPUT_LEN", "BAD_WORDS_IDS"}
    read_at_load |= {"STOP_WORDS_IDS", "OUT_END_ID", "OUT_PAD_ID", "OUT_PROMPT_TABLE_EXTRA_IDS", "PIXEL_VALUES"}
    assert read_at_load | {"IMAGE_SIZES"} <= {t.name for t in pre.output}
    assert {"EMBEDDING_BIAS_WORDS", "EMBEDDING_BIAS_WEIGHTS"} <= {t.name for t in pre.input}
    assert parameters(pre) == {
        "tokenizer_dir": "/cache/source",
        "add_special_tokens": "false",  # the chat template writes BOS itself
        "multimodal_model_path": "",
        "gpt_model_path": "/cache/engine",
        "max_num_images": "",
    }
    assert [t.name for t in post.input] == ["TOKENS_BATCH", "SEQUENCE_LENGTH"]
    assert [t.name for t in post.output] == ["OUTPUT"]
    assert parameters(post) == {"tokenizer_dir": "/cache/source", "skip_special_tokens": "true"}
    assert pre.max_batch_size == post.max_batch_size == 64


def test_the_bls_model_exposes_exactly_the_router_tensors() -> None:
    bls = configs("llama-3.2-3b-instruct.yaml")[BLS]
    assert bls.backend == "python" and bls.max_batch_size == 0
    assert {t.name for t in bls.input} == ROUTER_INPUTS
    assert {t.name for t in bls.input if not t.optional} == {"text_input", "max_tokens"}
    # It names the stop word it cut the answer at; it takes no thinking budget (TensorRT-LLM has none).
    assert {t.name for t in bls.output} == ROUTER_OUTPUTS | STOP_WORD
    manifest = load_sample("llama-3.2-3b-instruct.yaml")
    spec = copy.deepcopy(manifest["spec"])
    spec["model"]["capabilities"] = ["chat", "reasoning"]
    files = model_repository_files(parse_spec(manifest["metadata"]["name"], spec))
    reasoning = text_format.Parse(files[f"{BLS}.config.pbtxt"], model_config_pb2.ModelConfig())
    assert "reasoning_budget" not in {t.name for t in reasoning.input}
    params = parameters(bls)
    assert (params["preprocessing_model"], params["engine_model"], params["postprocessing_model"]) == (
        "preprocessing",
        "tensorrt_llm",
        "postprocessing",
    )


def test_the_bls_model_calls_the_stock_models_by_their_tensor_names() -> None:
    """The tensors model-repo/lexora-trtllm-chat sends each step model and reads back are declared
    there with the types it uses."""
    code = (REPO_ROOT / "model-repo" / BLS / "1" / "model.py").read_text()
    models = configs("llama-3.2-3b-instruct.yaml")
    sent = {
        "preprocessing": {"QUERY", "REQUEST_OUTPUT_LEN", "STOP_WORDS_DICT"},
        "tensorrt_llm": {
            "input_ids", "input_lengths", "request_output_len", "end_id", "pad_id", "streaming",
            "stop_words_list", "temperature", "runtime_top_k", "runtime_top_p", "random_seed",
            "guided_decoding_guide_type", "guided_decoding_guide",
        },
        "postprocessing": {"TOKENS_BATCH", "SEQUENCE_LENGTH"},
    }  # fmt: skip
    read = {
        "preprocessing": {"INPUT_ID", "REQUEST_INPUT_LEN", "STOP_WORDS_IDS", "OUT_END_ID", "OUT_PAD_ID"},
        "tensorrt_llm": {"output_ids", "sequence_length"},
        "postprocessing": {"OUTPUT"},
    }
    for model, names in sent.items():
        assert names <= {t.name for t in models[model].input}, model
        assert all(f'"{name}"' in code for name in names), model
    for model, names in read.items():
        assert names <= {t.name for t in models[model].output}, model
        assert all(f'"{name}"' in code for name in names), model
    for name in ("frequency_penalty", "presence_penalty"):
        assert name in {t.name for t in models["tensorrt_llm"].input}


def test_the_model_code_comes_from_the_runtime_image() -> None:
    manifest = load_sample("llama-3.2-3b-instruct.yaml")
    layout = model_repository_files(parse_spec(manifest["metadata"]["name"], manifest["spec"]))["layout"]
    assert layout.splitlines() == [
        "require config.json",
        "require tokenizer_config.json",
        f"model {BLS} /opt/lexora/models/{BLS}/1",
        "model tensorrt_llm",
        "model preprocessing /opt/lexora/trtllm/preprocessing/1",
        "model postprocessing /opt/lexora/trtllm/postprocessing/1",
    ]
    prebuilt = dict(manifest["spec"], engine={"mode": "prebuilt"})
    layout = model_repository_files(parse_spec(manifest["metadata"]["name"], prebuilt))["layout"]
    assert layout.splitlines()[:3] == [
        "require engine/config.json",
        "require engine/xgrammar_tokenizer_info.json",
        "require tokenizer",
    ]


def python_chat_config(**model: Any) -> model_config_pb2.ModelConfig:
    manifest = load_sample("flux-1-schnell.yaml")
    spec = copy.deepcopy(manifest["spec"])
    spec["model"] = {"id": "HuggingFaceTB/SmolLM2-135M-Instruct", "kind": "chat", "contextLength": 8192, **model}
    spec["gpu"] = {"count": 0}
    del spec["triton"]["decoupled"]
    files = model_repository_files(parse_spec("smollm2", spec))
    return text_format.Parse(files["smollm2-135m-instruct.config.pbtxt"], model_config_pb2.ModelConfig())


def test_python_chat_model_declares_the_router_interface() -> None:
    config = python_chat_config()
    assert config.backend == "python"
    assert config.model_transaction_policy.decoupled is True  # chat streams by default
    assert {t.name for t in config.input} == ROUTER_INPUTS
    assert {t.name for t in config.output} == ROUTER_OUTPUTS | STOP_WORD
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU


def test_only_the_text_and_max_tokens_are_required_inputs() -> None:
    config = python_chat_config()
    assert {t.name for t in config.input if not t.optional} == {"text_input", "max_tokens"}


def test_a_reasoning_model_also_takes_a_thinking_budget() -> None:
    config = python_chat_config(capabilities=["reasoning"])
    assert {t.name for t in config.input} == ROUTER_INPUTS | {t.name for t in REASONING_INPUTS}
    budget = next(t for t in config.input if t.name == "reasoning_budget")
    assert budget.optional and budget.data_type == model_config_pb2.TYPE_INT32


def test_the_generated_python_config_declares_what_model_repo_smollm2_declares() -> None:
    """model-repo/'s SmolLM2 config is written by hand; the operator's for the same model must
    offer the router the same tensors with the same types."""
    path = REPO_ROOT / "model-repo" / "smollm2-135m-instruct" / "config.pbtxt"
    local = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    generated = python_chat_config(capabilities=["reasoning"])
    for kind in ("input", "output"):
        declared = {t.name: (t.data_type, list(t.dims)) for t in getattr(generated, kind)}
        assert declared == {t.name: (t.data_type, list(t.dims)) for t in getattr(local, kind)}


def test_flux_is_one_python_model_on_the_gpu_with_its_code_from_the_image() -> None:
    manifest = load_sample("flux-1-schnell.yaml")
    files = model_repository_files(parse_spec(manifest["metadata"]["name"], manifest["spec"]))
    config = text_format.Parse(files["flux-1-schnell.config.pbtxt"], model_config_pb2.ModelConfig())
    assert config.backend == "python"
    assert config.max_batch_size == 0 and config.model_transaction_policy.decoupled is False
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert parameters(config)["model_dir"] == "/cache/source"
    assert files["layout"] == "model flux-1-schnell /opt/lexora/models/flux-1-schnell/1\n"


def test_embedding_and_image_models_declare_what_model_repo_declares() -> None:
    """Triton refuses a tensor its config does not declare ("unexpected inference output"), and
    model-repo/'s Python models declare none through auto_complete_config: the generated configs
    must offer the router the tensors of model-repo/'s hand-written ones, with the same types (the
    cluster in a box, tests/cluster, sees the rendered pods fail readiness otherwise)."""
    for sample, model in (("all-minilm-l6-v2-cpu.yaml", "all-minilm-l6-v2"), ("flux-1-schnell.yaml", "flux-1-schnell")):
        local = text_format.Parse(
            (REPO_ROOT / "model-repo" / model / "config.pbtxt").read_text(), model_config_pb2.ModelConfig()
        )
        manifest = load_sample(sample)
        files = model_repository_files(parse_spec(manifest["metadata"]["name"], manifest["spec"]))
        generated = text_format.Parse(files[f"{model}.config.pbtxt"], model_config_pb2.ModelConfig())
        for kind in ("input", "output"):
            declared = {
                t.name: (t.data_type, getattr(t, "optional", False), len(t.dims)) for t in getattr(generated, kind)
            }
            assert declared == {
                t.name: (t.data_type, getattr(t, "optional", False), len(t.dims)) for t in getattr(local, kind)
            }


def test_the_fetch_script_is_shipped_with_the_layout_it_reads() -> None:
    manifest = load_sample("llama-3.2-3b-instruct.yaml")
    files = model_repository_files(parse_spec(manifest["metadata"]["name"], manifest["spec"]))
    assert files["fetch.sh"].startswith("#!/bin/sh")
    assert "require config.json" in files["layout"].splitlines(), "a Hugging Face checkpoint to build from"
    assert "require engine/config.json" not in files["layout"]
    assert files["build_engine.py"].startswith('"""Build a TensorRT-LLM engine')
    assert "require preprocessing/1/model.py" not in files["layout"], "the stock models come from the image"
