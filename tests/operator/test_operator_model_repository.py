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


def test_tensorrtllm_repository_is_the_inflight_batcher_ensemble() -> None:
    assert sorted(configs("llama-3.2-3b-instruct.yaml")) == [
        "ensemble",
        "postprocessing",
        "preprocessing",
        "tensorrt_llm",
    ]


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


def test_a_built_engine_reads_the_tokenizer_from_the_hugging_face_checkpoint() -> None:
    models = configs("llama-3.2-3b-instruct.yaml")
    for model in ("preprocessing", "postprocessing"):
        assert parameters(models[model])["tokenizer_dir"] == "/cache/source"


def test_ensemble_exposes_exactly_the_router_tensors() -> None:
    ensemble = configs("llama-3.2-3b-instruct.yaml")["ensemble"]
    assert ensemble.platform == "ensemble"
    assert {t.name for t in ensemble.input} == ROUTER_INPUTS
    assert {t.name for t in ensemble.output} == ROUTER_OUTPUTS


def test_every_ensemble_step_maps_tensors_its_model_declares_with_matching_types() -> None:
    models = configs("llama-3.2-3b-instruct.yaml")
    ensemble = models["ensemble"]
    types = {t.name: t.data_type for t in ensemble.input}
    produced = set(types)
    for step in ensemble.ensemble_scheduling.step:
        model = models[step.model_name]
        declared_in = {t.name: t.data_type for t in model.input}
        declared_out = {t.name: t.data_type for t in model.output}
        for model_tensor, ensemble_tensor in step.input_map.items():
            assert model_tensor in declared_in, f"{step.model_name} has no input {model_tensor}"
            assert ensemble_tensor in produced, f"{ensemble_tensor} is used before any step produces it"
            assert types[ensemble_tensor] == declared_in[model_tensor], (step.model_name, model_tensor)
        for model_tensor, ensemble_tensor in step.output_map.items():
            assert model_tensor in declared_out, f"{step.model_name} has no output {model_tensor}"
            types[ensemble_tensor] = declared_out[model_tensor]
            produced.add(ensemble_tensor)
        required = {t.name for t in model.input if not t.optional}
        assert required <= set(step.input_map), f"{step.model_name} misses {required - set(step.input_map)}"
    assert produced >= ROUTER_OUTPUTS
    for output in ensemble.output:
        assert types[output.name] == output.data_type


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
    assert "model preprocessing preprocessing/1" in files["layout"]
