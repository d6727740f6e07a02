"""instant-echo: a decoupled Triton Python-backend model that answers at once.

Same tensors as smollm2-135m-instruct (text_input, max_tokens, stream, ... -> text_output,
num_input_tokens, num_output_tokens, finish_reason, stop_word), so the router drives it exactly
like a real engine. It computes nothing: the answer is `max_tokens` "tokens" cut from a fixed
text, sent as one response per token when stream=true and then a final response carrying
finish_reason ("length"), or as a single final response otherwise. Used by the benchmarks to
measure what sits in front of an engine (python -m bench); needs nothing beyond numpy.
"""

import numpy as np
import triton_python_backend_utils as pb_utils

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
# The "tokens" of the answer, cycled through when max_tokens is larger than the list.
WORDS = ("Hello", " from", " the", " instant", " echo", " model", ".")
# A conservative prompt-token count without a tokenizer: one token per 4 bytes, at least one.
# Always below the gateway's reservation bound (one token per byte).
BYTES_PER_TOKEN = 4


def _array(value, dtype):
    return np.array([value], dtype=dtype)


def _scalar(request, name, default=None):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return default
    values = tensor.as_numpy().reshape(-1)
    if values.size == 0:
        return default
    value = values[0]
    return value.item() if isinstance(value, np.generic) else value


class TritonPythonModel:
    def initialize(self, args):
        self._words = [w.encode() for w in WORDS]
        self._empty = _array(b"", np.object_)
        self._length = _array(b"length", np.object_)
        self._stop = _array(b"stop", np.object_)

    def _response(self, text, n_in, n_out, finish=None, stop_word=b""):
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor("text_output", _array(text, np.object_)),
                pb_utils.Tensor("num_input_tokens", _array(n_in, np.int32)),
                pb_utils.Tensor("num_output_tokens", _array(n_out, np.int32)),
                pb_utils.Tensor("finish_reason", self._empty if finish is None else finish),
                pb_utils.Tensor("stop_word", _array(stop_word, np.object_)),
            ]
        )

    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            try:
                self._serve(request, sender)
            except Exception as exc:  # never let one request take the model down
                try:
                    error = pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
                    sender.send(pb_utils.InferenceResponse(error=error), flags=FINAL)
                except Exception:
                    pass
        return None

    def _serve(self, request, sender):
        text_input = _scalar(request, "text_input")
        if text_input is None:
            raise ValueError("text_input is required")
        max_tokens = _scalar(request, "max_tokens")
        if max_tokens is None or int(max_tokens) < 0:
            raise ValueError("max_tokens must be at least 0 (0 counts the prompt's tokens only)")
        max_tokens = int(max_tokens)
        size = len(text_input) if isinstance(text_input, bytes) else len(str(text_input).encode())
        n_in = max(1, size // BYTES_PER_TOKEN)
        if max_tokens == 0:
            sender.send(self._response(b"", n_in, 0, self._length), flags=FINAL)
            return

        stop_tensor = pb_utils.get_input_tensor_by_name(request, "stop_words")
        stops = [] if stop_tensor is None else [s for s in stop_tensor.as_numpy().reshape(-1) if s]
        stream = bool(_scalar(request, "stream", False))
        words = self._words
        produced = []
        finish, stop_word = self._length, b""
        for i in range(max_tokens):
            word = words[i % len(words)]
            hit = next((s for s in stops if s in word), None)
            if hit is not None:
                finish, stop_word = self._stop, hit
                break
            produced.append(word)
            if stream:
                sender.send(self._response(word, n_in, len(produced)))
        n_out = len(produced)
        text = b"" if stream else b"".join(produced)
        sender.send(self._response(text, n_in, n_out, finish, stop_word), flags=FINAL)
