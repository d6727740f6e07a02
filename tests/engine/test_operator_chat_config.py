"""A chat model deployed by the operator answers the router: the config.pbtxt the operator generates
for a Python-backend chat model, loaded by the real tritonserver with model-repo/'s SmolLM2 code,
and driven by the router's own engine client with every option the router can send."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import llama_cpp  # noqa: F401  (the model's engine: missing means a broken install, not a skip)
import pytest
import yaml

from lexora_contracts.messages import ChatTurn, GenerationRequest
from lexora_contracts.registry import Endpoint, Pricing
from lexora_dev.stack import start_triton
from lexora_operator.model_repository import model_repository_files
from lexora_operator.spec import parse_spec
from lexora_router.triton_engine import EngineOutput, TritonEngine

ROOT = Path(__file__).resolve().parents[2]
MODEL = "smollm2-135m-instruct"


def _operator_config() -> str:
    """What the operator renders for SmolLM2 on CPU with the Python backend (as a thinking model,
    so that the config also takes the thinking budget)."""
    manifest = yaml.safe_load((ROOT / "manifests" / "samples" / "flux-1-schnell.yaml").read_text())
    spec = copy.deepcopy(manifest["spec"])
    spec["model"] = {
        "id": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "kind": "chat",
        "contextLength": 8192,
        "capabilities": ["reasoning"],
    }
    spec["gpu"] = {"count": 0}
    spec["triton"] = {"image": "nvcr.io/nvidia/tritonserver:25.01-py3", "maxBatchSize": 0}
    return model_repository_files(parse_spec("smollm2", spec))[f"{MODEL}.config.pbtxt"]


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    state = tmp_path_factory.mktemp("operator-triton")
    model_dir = state / "models" / MODEL
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(_operator_config())
    (model_dir / "1" / "model.py").symlink_to(ROOT / "model-repo" / MODEL / "1" / "model.py")
    process, endpoint = start_triton(state, model_repo=state / "models", timeout=120)
    try:
        yield endpoint
    finally:
        process.stop()


@pytest.fixture
async def engine() -> AsyncIterator[TritonEngine]:
    engine = TritonEngine()
    try:
        yield engine
    finally:
        await engine.close()


def _request(**options: object) -> GenerationRequest:
    fields: dict[str, object] = {
        "request_id": "req-operator-config",
        "account_id": "acct",
        "key_id": "key",
        "model": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "messages": [ChatTurn(role="user", content="Name three colours.")],
        "max_tokens": 24,
        "temperature": 0.0,
        "top_p": 1.0,
        "stream": False,
        "deadline": 0,
        "pricing": Pricing(input_micro_per_mtok=1, output_micro_per_mtok=1),
        "reserved_micro": 0,
        "received_at": 0,
    }
    return GenerationRequest.model_validate(fields | options)


async def _run(engine: TritonEngine, triton: Endpoint, request: GenerationRequest) -> list[EngineOutput]:
    outputs = engine.generate(triton.grpc_address, MODEL, request, http_address=triton.http_address)
    return [output async for output in outputs]


async def test_a_plain_request_is_answered_with_the_engines_counts(engine: TritonEngine, triton: Endpoint) -> None:
    [output] = await _run(engine, triton, _request())
    assert output.text and output.prompt_tokens > 0 and 0 < output.completion_tokens <= 24
    assert output.finish_reason in {"stop", "length"}


@pytest.mark.parametrize("over_http", [True, False], ids=["http", "grpc"])
async def test_every_sampling_option_and_a_stop_word_reach_the_model(
    engine: TritonEngine, triton: Endpoint, over_http: bool
) -> None:
    """A streaming request, over HTTP `generate_stream` or (an endpoint without an HTTP address) gRPC."""
    outputs = await _run(
        engine,
        triton if over_http else triton.model_copy(update={"http_address": None}),
        _request(
            stream=True,
            temperature=0.7,
            top_p=0.9,
            top_k=20,
            frequency_penalty=0.5,
            presence_penalty=0.5,
            seed=42,
            stop=["\n"],
            max_tokens=64,
        ),
    )
    assert len(outputs) > 1  # token by token
    text = "".join(output.text for output in outputs)
    assert "\n" not in text
    last = outputs[-1]
    if last.finish_reason == "stop" and last.stop_word is not None:
        assert last.stop_word == "\n"  # the config declares stop_word, so the router reads it


async def test_guided_decoding_makes_the_answer_json(engine: TritonEngine, triton: Endpoint) -> None:
    colour = {"type": "string", "enum": ["red", "green", "blue"]}
    schema = {"type": "object", "properties": {"colour": colour}, "required": ["colour"]}
    [output] = await _run(engine, triton, _request(guide_type="json_schema", guide=json.dumps(schema), max_tokens=48))
    assert json.loads(output.text)["colour"] in {"red", "green", "blue"}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_a_thinking_budget_is_accepted(engine: TritonEngine, triton: Endpoint, stream: bool) -> None:
    outputs = await _run(engine, triton, _request(reasoning=True, reasoning_budget=8, max_tokens=32, stream=stream))
    text = "".join(output.text for output in outputs)
    assert text.startswith("<think>") and "</think>" in text
