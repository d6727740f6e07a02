"""Test stand-in for the `tensorrt_llm` model (TensorRT-LLM's C++ backend needs a GPU; see ../../README.md).

Served with the config the operator renders for the engine, its backend changed to python: the same
tensor names (input_ids, input_lengths, request_output_len, end_id, pad_id, stop_words_list,
streaming, temperature, runtime_top_k, runtime_top_p, frequency_penalty, presence_penalty,
random_seed, guided_decoding_guide_type, guided_decoding_guide -> output_ids [batch, beam, tokens],
sequence_length [batch, beam]), decoupled, with exclude_input_in_output: only new tokens come back,
one response per token when streaming, all of them in one response otherwise.

It "generates" REPLY (or, for a guided-decoding request, a JSON echo of the guide and of the sampling
inputs it received) tokenized with the checkpoint's tokenizer, and stops as the engine does: at
request_output_len tokens, at the end of the reply (without returning the end token), or after the
tokens of a stop word (which stay in the output). Like the real backend it loads only with
guided_decoding_backend xgrammar and an xgrammar tokenizer file that exists.
"""

import json
import time
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils
from transformers import AutoTokenizer

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
REPLY = "Hello from the engine: alpha beta gamma delta 日本語 ✓ epsilon END zeta eta theta."
SAMPLING = ("temperature", "runtime_top_k", "runtime_top_p", "frequency_penalty", "presence_penalty", "random_seed")


def _value(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return None
    value = tensor.as_numpy().reshape(-1)[0]
    if isinstance(value, bytes):
        return value.decode()
    return value.item() if isinstance(value, np.generic) else value


def _stop_words(request) -> list[list[int]]:
    tensor = pb_utils.get_input_tensor_by_name(request, "stop_words_list")
    if tensor is None:
        return []
    ids, ends = tensor.as_numpy().reshape(2, -1)
    words, start = [], 0
    for end in ends:
        if end < 0:
            break
        words.append([int(t) for t in ids[start:end]])
        start = end
    return words


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config["parameters"].items()}
        if params.get("guided_decoding_backend") != "xgrammar":
            raise RuntimeError("guided decoding needs guided_decoding_backend xgrammar")
        info = json.loads(Path(params["xgrammar_tokenizer_info_path"]).read_text())
        self.tokenizer = AutoTokenizer.from_pretrained(params["tokenizer_dir"])
        if len(info["encoded_vocab"]) != len(self.tokenizer):
            raise RuntimeError("the xgrammar tokenizer file is not this checkpoint's tokenizer")

    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            try:
                self._generate(request, sender)
            except Exception as exc:
                sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))), flags=FINAL)
        return None

    def _generate(self, request, sender):
        input_ids = pb_utils.get_input_tensor_by_name(request, "input_ids").as_numpy().reshape(-1)
        input_length = int(_value(request, "input_lengths"))
        if input_length != len(input_ids):
            raise ValueError(f"input_lengths {input_length} for {len(input_ids)} input_ids")
        limit = int(_value(request, "request_output_len"))
        end_id = _value(request, "end_id")
        streaming = bool(_value(request, "streaming"))
        guide_type = _value(request, "guided_decoding_guide_type")
        if guide_type is not None:
            received = {name: _value(request, name) for name in SAMPLING}
            echo = {"guide_type": guide_type, "guide": _value(request, "guided_decoding_guide"), **received}
            reply = json.dumps(echo, sort_keys=True)
        else:
            reply = REPLY
        script = self.tokenizer.encode(reply, add_special_tokens=False)
        stops = _stop_words(request)
        produced: list[int] = []
        for token in script:
            if len(produced) == limit or token == end_id or sender.is_cancelled():
                break
            produced.append(token)
            if streaming:
                time.sleep(0.002)
                sender.send(self._tokens([token]))
            if any(stop and produced[-len(stop) :] == stop for stop in stops):
                break
        if streaming:
            sender.send(flags=FINAL)
        else:
            sender.send(self._tokens(produced), flags=FINAL)

    @staticmethod
    def _tokens(tokens):
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor("output_ids", np.array([[tokens]], dtype=np.int32)),
                pb_utils.Tensor("sequence_length", np.array([[len(tokens)]], dtype=np.int32)),
            ]
        )
