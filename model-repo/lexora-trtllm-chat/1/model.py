"""Lexora's chat model in front of TensorRT-LLM: a decoupled Triton Python (BLS) model.

The router calls this model (the operator names it `lexora-trtllm-chat` in a tensorrtllm deployment)
with the tensors of lexora_contracts.engine_tensors. It drives NVIDIA's stock models of
tensorrtllm_backend's inflight_batcher_llm, which the Lexora TensorRT-LLM runtime image carries as
NVIDIA ships them (images/triton-trtllm/Dockerfile), and adds what they do not do:

- chat: `text_input` holds the messages as JSON when `apply_chat_template` is true; they are
  rendered with the checkpoint's own chat template (transformers' AutoTokenizer from the
  `tokenizer_dir` parameter) into the prompt that `preprocessing` tokenizes. A raw prompt gets the
  tokenizer's BOS text when its tokenizer adds one (preprocessing runs with add_special_tokens off,
  since a chat template writes its own).
- `preprocessing` (QUERY, REQUEST_OUTPUT_LEN, STOP_WORDS_DICT -> INPUT_ID, REQUEST_INPUT_LEN,
  STOP_WORDS_IDS, OUT_END_ID, OUT_PAD_ID), then `tensorrt_llm` (input_ids, input_lengths,
  request_output_len, end_id, pad_id, stop_words_list, streaming, sampling, random_seed,
  guided_decoding_guide_type/guide -> output_ids, sequence_length), always as a decoupled request,
  streaming token by token only when the caller streams.
- detokenizing through `postprocessing` (TOKENS_BATCH, SEQUENCE_LENGTH -> OUTPUT). Decoding each
  streamed token alone is not sound: a character made of several tokens' bytes comes out as U+FFFD,
  and tokenizers that drop a word's leading space at the start of a sequence lose spaces. Decoding
  everything so far at every token is sound but quadratic. So each step asks postprocessing for two
  decodes in one batch, both starting at the tokens of the previous step (the context a tokenizer
  needs at a word boundary): those tokens alone, and those plus the new ones; the new text is the
  difference, held back while it ends in an incomplete character. Linear, and every decode is the
  stock one (the incremental detokenization vLLM and TGI do, with NVIDIA's detokenizer).
- counts: `num_input_tokens` is preprocessing's REQUEST_INPUT_LEN, `num_output_tokens` the tokens the
  engine returned (the sum of `sequence_length`); `finish_reason` is `length` when that count reaches
  `max_tokens`, else `stop`.
- stop words (OpenAI's `stop`): passed to the engine, which stops on their token sequences and keeps
  them in the output, and matched on the text as well (a word can tokenize differently in context):
  the answer ends before the first stop word, which is reported in `stop_word`, and the engine's
  request is cancelled. While streaming, a tail that could still grow into a stop word is held back.
- temperature 0 is greedy decoding: sent to TensorRT-LLM as runtime_top_k 1 without a temperature.
- `max_tokens` 0 only counts the prompt's tokens (the router's count_tokens): nothing is generated.

Not supported: a thinking budget (`reasoning_budget`): TensorRT-LLM has no input for it, so the
operator does not declare it for this model. Images in messages are refused (text models only).
"""

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import triton_python_backend_utils as pb_utils
from transformers import AutoTokenizer

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL


class BadRequest(Exception):
    """The caller's fault: reported as INVALID_ARG, the model carries on."""


class EngineError(Exception):
    """A step model answered with an error: the server's fault."""


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


def held_back(text: str, stops: list[str]) -> int:
    """Length of the longest tail of `text` that could still grow into a stop word."""
    longest = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:n]):
                longest = n
                break
    return longest


def first_stop(text: str, stops: list[str], start: int = 0) -> tuple[int, str] | None:
    """The earliest stop word in text[start:], as (index, word)."""
    hits = [(i, s) for i, s in ((text.find(s, start), s) for s in stops) if i >= 0]
    return min(hits) if hits else None


def _message_text(message: dict) -> dict:
    content = message.get("content")
    if isinstance(content, list):
        if any(part.get("type") != "text" for part in content if isinstance(part, dict)):
            raise BadRequest("this model reads text only: remove the images from the messages")
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return {**message, "content": content if content is not None else ""}


def _bytes_tensor(name, values):
    return pb_utils.Tensor(name, np.array(values, dtype=np.object_))


def _response(text, n_in, n_out, finish_reason="", stop_word=""):
    return pb_utils.InferenceResponse(
        output_tensors=[
            _bytes_tensor("text_output", [text.encode("utf-8")]),
            pb_utils.Tensor("num_input_tokens", np.array([n_in], dtype=np.int32)),
            pb_utils.Tensor("num_output_tokens", np.array([n_out], dtype=np.int32)),
            _bytes_tensor("finish_reason", [finish_reason.encode()]),
            _bytes_tensor("stop_word", [stop_word.encode("utf-8")]),
        ]
    )


def _output(response, name):
    tensor = pb_utils.get_output_tensor_by_name(response, name)
    if tensor is None:
        return None
    return tensor.as_numpy() if tensor.is_cpu() else np.from_dlpack(tensor.to_dlpack())


class Detokenizer:
    """The text of the tokens so far, through the stock postprocessing model (see the module doc)."""

    def __init__(self, decode):
        self.decode = decode  # list of token lists -> list of strings (one postprocessing call)
        self.tokens: list[int] = []
        self.prefix = 0  # where both decodes start
        self.read = 0  # tokens whose text was already produced

    def add(self, new_tokens: list[int]) -> str:
        """The text the new tokens add ("" while the last character is incomplete)."""
        if not new_tokens:
            return ""
        self.tokens.extend(new_tokens)
        before, after = self.decode([self.tokens[self.prefix : self.read], self.tokens[self.prefix :]])
        if len(after) <= len(before) or after.endswith("\ufffd"):
            return ""  # wait for the rest of the character
        self.prefix, self.read = self.read, len(self.tokens)
        return after[len(before) :]

    def rest(self) -> str:
        """The text of the last tokens when the answer ends (an incomplete character dropped)."""
        if self.read == len(self.tokens):
            return ""
        before, after = self.decode([self.tokens[self.prefix : self.read], self.tokens[self.prefix :]])
        self.prefix, self.read = self.read, len(self.tokens)
        return after[len(before) :].rstrip("\ufffd")


class Reply:
    """What the caller has been sent, and the stop-word check on the text as it grows."""

    def __init__(self, sender, stream: bool, stops: list[str], n_in: int):
        self.sender, self.stream, self.stops, self.n_in = sender, stream, stops, n_in
        self.text, self.sent, self.n_out = "", 0, 0
        self.stop_word = ""

    def add(self, text: str, n_tokens: int) -> bool:
        """Add generated text; True when a stop word ended the answer."""
        self.n_out += n_tokens
        # Only where a stop word could end that was not there before: linear in the answer's length.
        start = max(0, len(self.text) - max((len(s) for s in self.stops), default=0) + 1)
        self.text += text
        hit = first_stop(self.text, self.stops, start)
        if hit is not None:
            self.text, self.stop_word = self.text[: hit[0]], hit[1]
            return True
        if self.stream:
            end = len(self.text) - held_back(self.text, self.stops)
            if end > self.sent:
                self.sender.send(_response(self.text[self.sent : end], self.n_in, self.n_out))
                self.sent = end
        return False

    def finish(self, finish_reason: str) -> None:
        text = self.text[self.sent :] if self.stream else self.text
        self.sender.send(_response(text, self.n_in, self.n_out, finish_reason, self.stop_word), flags=FINAL)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        self.tokenizer = AutoTokenizer.from_pretrained(params["tokenizer_dir"], trust_remote_code=True)
        self.preprocessing = params.get("preprocessing_model") or "preprocessing"
        self.engine = params.get("engine_model") or "tensorrt_llm"
        self.postprocessing = params.get("postprocessing_model") or "postprocessing"
        # preprocessing encodes without special tokens (a chat template writes BOS itself); a raw
        # prompt gets the BOS the tokenizer would have added.
        bos = self.tokenizer.bos_token
        adds_bos = bos is not None and self.tokenizer("x").input_ids[:1] == [self.tokenizer.bos_token_id]
        self.raw_prefix = bos if adds_bos else ""
        # Every request runs in a thread of its own (each waits on its engine request), so requests
        # are batched in flight by TensorRT-LLM rather than served one after another.
        workers = int(params.get("max_concurrent_requests") or 128)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lexora-chat")
        self.lock = threading.Lock()
        pb_utils.Logger.log_info(f"serving {self.engine} with the tokenizer of {params['tokenizer_dir']}")

    def execute(self, requests):
        for request in requests:
            self.pool.submit(self._serve_safely, request, request.get_response_sender())
        return None

    def finalize(self):
        self.pool.shutdown(wait=True, cancel_futures=False)

    def _serve_safely(self, request, sender):
        try:
            self._serve(request, sender)
        except BadRequest as exc:
            self._fail(sender, str(exc), pb_utils.TritonError.INVALID_ARG)
        except Exception as exc:  # never let one request take the model down
            pb_utils.Logger.log_error(f"generation failed: {exc!r}")
            self._fail(sender, f"generation failed: {exc}", pb_utils.TritonError.INTERNAL)

    @staticmethod
    def _fail(sender, message, code):
        try:
            sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code)), flags=FINAL)
        except Exception as exc:  # final already sent, or the client went away
            pb_utils.Logger.log_warn(f"could not report error {message!r}: {exc!r}")

    # --- one request ------------------------------------------------------------------------------

    def _serve(self, request, sender):
        max_tokens = _scalar(request, "max_tokens")
        if max_tokens is None or int(max_tokens) < 0:
            raise BadRequest("max_tokens must be at least 0 (0 counts the prompt's tokens only)")
        max_tokens = int(max_tokens)
        stream = bool(_scalar(request, "stream", False))
        stops = _stop_words(request)
        prompt = self._prompt(request)
        pre = self._preprocess(prompt, max(max_tokens, 1), stops)
        n_in = int(pre["REQUEST_INPUT_LEN"].reshape(-1)[0])
        reply = Reply(sender, stream, stops, n_in)
        if max_tokens == 0:
            reply.finish("length")
            return
        engine_request = pb_utils.InferenceRequest(
            model_name=self.engine,
            inputs=self._engine_inputs(request, pre, max_tokens, stream, bool(stops)),
            requested_output_names=["output_ids", "sequence_length"],
        )
        detokenizer = Detokenizer(self._decode)
        responses = engine_request.exec(decoupled=True)
        stopped = False
        for response in responses:
            if response.has_error():
                raise EngineError(f"{self.engine}: {response.error().message()}")
            if sender.is_cancelled():
                self._cancel(responses)
                pb_utils.Logger.log_info(f"request cancelled after {reply.n_out} generated tokens")
                sender.send(_response("", n_in, reply.n_out, "cancelled"), flags=FINAL)
                self._drain(responses)
                return
            tokens = self._new_tokens(response)
            if tokens is None:
                continue  # the engine's empty final response
            if reply.add(detokenizer.add(tokens), len(tokens)):
                stopped = True
                self._cancel(responses)
                break
        if not stopped and reply.add(detokenizer.rest(), 0):
            stopped = True  # a stop word in the last characters: the engine has already finished
            reply.finish("stop")
            return
        reply.finish("stop" if stopped or reply.n_out < max_tokens else "length")
        if stopped:  # the loop left the engine's request before its end
            self._drain(responses)

    def _prompt(self, request) -> str:
        text = _text(request, "text_input")
        if text is None:
            raise BadRequest("text_input is required")
        if not bool(_scalar(request, "apply_chat_template", False)):
            return self.raw_prefix + text
        try:
            messages = json.loads(text)
        except ValueError:
            raise BadRequest("text_input must be the chat messages as JSON when apply_chat_template is set") from None
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise BadRequest("text_input must be a JSON list of messages")
        with self.lock:  # a tokenizer is not safe to share between threads while it renders
            return self.tokenizer.apply_chat_template(
                [_message_text(m) for m in messages], tokenize=False, add_generation_prompt=True
            )

    def _preprocess(self, prompt: str, output_len: int, stops: list[str]) -> dict:
        inputs = [
            _bytes_tensor("QUERY", [[prompt.encode("utf-8")]]),
            pb_utils.Tensor("REQUEST_OUTPUT_LEN", np.array([[output_len]], dtype=np.int32)),
        ]
        if stops:
            inputs.append(_bytes_tensor("STOP_WORDS_DICT", [[s.encode("utf-8") for s in stops]]))
        names = ["INPUT_ID", "REQUEST_INPUT_LEN", "STOP_WORDS_IDS", "OUT_END_ID", "OUT_PAD_ID"]
        response = pb_utils.InferenceRequest(
            model_name=self.preprocessing, inputs=inputs, requested_output_names=names
        ).exec()
        if response.has_error():
            raise EngineError(f"{self.preprocessing}: {response.error().message()}")
        return {name: _output(response, name) for name in names}

    def _engine_inputs(self, request, pre: dict, max_tokens: int, stream: bool, has_stops: bool) -> list:
        def one(name, value, dtype):
            return pb_utils.Tensor(name, np.array([[value]], dtype=dtype))

        inputs = [
            pb_utils.Tensor("input_ids", pre["INPUT_ID"].astype(np.int32)),
            pb_utils.Tensor("input_lengths", pre["REQUEST_INPUT_LEN"].astype(np.int32).reshape(1, 1)),
            one("request_output_len", max_tokens, np.int32),
            pb_utils.Tensor("end_id", pre["OUT_END_ID"].astype(np.int32).reshape(1, 1)),
            pb_utils.Tensor("pad_id", pre["OUT_PAD_ID"].astype(np.int32).reshape(1, 1)),
            one("streaming", stream, bool),
        ]
        if has_stops:
            inputs.append(pb_utils.Tensor("stop_words_list", pre["STOP_WORDS_IDS"].astype(np.int32)))
        temperature = float(_scalar(request, "temperature", 1.0))
        top_p = float(_scalar(request, "top_p", 1.0))
        top_k = int(_scalar(request, "top_k", 0))
        if temperature < 0 or not 0 < top_p <= 1 or top_k < 0:
            raise BadRequest("temperature must be >= 0, top_p in (0, 1] and top_k >= 0")
        if temperature == 0:
            inputs.append(one("runtime_top_k", 1, np.int32))  # greedy
        else:
            inputs.append(one("temperature", temperature, np.float32))
            if top_k:
                inputs.append(one("runtime_top_k", top_k, np.int32))
        inputs.append(one("runtime_top_p", top_p, np.float32))
        for name in ("frequency_penalty", "presence_penalty"):
            value = _scalar(request, name)
            if value is not None:
                inputs.append(one(name, float(value), np.float32))
        seed = _scalar(request, "seed")
        if seed is not None:
            inputs.append(one("random_seed", int(seed), np.uint64))
        guide_type = _text(request, "guided_decoding_guide_type")
        if guide_type:
            inputs.append(_bytes_tensor("guided_decoding_guide_type", [[guide_type.encode()]]))
            guide = _text(request, "guided_decoding_guide") or ""
            if guide:
                inputs.append(_bytes_tensor("guided_decoding_guide", [[guide.encode("utf-8")]]))
        return inputs

    @staticmethod
    def _new_tokens(response) -> list[int] | None:
        output_ids = _output(response, "output_ids")
        if output_ids is None:
            return None
        lengths = _output(response, "sequence_length")
        tokens = output_ids.reshape(-1) if lengths is None else output_ids[0][0][: int(lengths.reshape(-1)[0])]
        return [int(t) for t in tokens]

    def _decode(self, sequences: list[list[int]]) -> list[str]:
        """One stock postprocessing call for several token sequences, sent as the beams of one
        batch entry (postprocessing decodes each beam up to its own SEQUENCE_LENGTH)."""
        width = max(1, max(len(s) for s in sequences))
        batch = np.zeros((1, len(sequences), width), dtype=np.int32)
        for beam, sequence in enumerate(sequences):
            batch[0, beam, : len(sequence)] = sequence
        lengths = np.array([[len(s) for s in sequences]], dtype=np.int32)
        response = pb_utils.InferenceRequest(
            model_name=self.postprocessing,
            inputs=[pb_utils.Tensor("TOKENS_BATCH", batch), pb_utils.Tensor("SEQUENCE_LENGTH", lengths)],
            requested_output_names=["OUTPUT"],
        ).exec()
        if response.has_error():
            raise EngineError(f"{self.postprocessing}: {response.error().message()}")
        texts = _output(response, "OUTPUT").reshape(-1)
        return [t.decode("utf-8", "replace") if isinstance(t, bytes) else str(t) for t in texts]

    @staticmethod
    def _drain(responses) -> None:
        """Read the engine's request to its end after the caller was answered (at once when it was
        cancelled), so that nothing of it is left behind in this model."""
        for _ in responses:
            pass

    @staticmethod
    def _cancel(responses) -> None:
        cancel = getattr(responses, "cancel", None)  # BLS request cancellation (Triton 24.08+)
        if callable(cancel):
            try:
                cancel()
            except Exception as exc:  # the engine already finished
                pb_utils.Logger.log_verbose(f"cancel: {exc!r}")
