"""Test stand-in for tensorrtllm_backend's stock `preprocessing` (see ../../README.md).

Same interface as NVIDIA's: QUERY, REQUEST_OUTPUT_LEN, STOP_WORDS_DICT, BAD_WORDS_DICT, END_ID, PAD_ID
in (with a batch dimension); INPUT_ID, REQUEST_INPUT_LEN, STOP_WORDS_IDS, BAD_WORDS_IDS,
REQUEST_OUTPUT_LEN, OUT_END_ID, OUT_PAD_ID (and the decoder/embedding-bias tensors, empty) out.
Parameters `tokenizer_dir` and `add_special_tokens`. Word lists are in TensorRT-LLM's format:
[batch, 2, n], the flat token ids of every word, then the cumulative end offsets padded with -1.
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils
from transformers import AutoTokenizer

OUTPUTS = (
    "INPUT_ID",
    "REQUEST_INPUT_LEN",
    "DECODER_INPUT_ID",
    "REQUEST_DECODER_INPUT_LEN",
    "BAD_WORDS_IDS",
    "STOP_WORDS_IDS",
    "EMBEDDING_BIAS",
    "REQUEST_OUTPUT_LEN",
    "OUT_END_ID",
    "OUT_PAD_ID",
)


def _words(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return None if tensor is None else tensor.as_numpy()


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config["parameters"].items()}
        for name in OUTPUTS:  # NVIDIA's reads each declaration at load time
            assert pb_utils.get_output_config_by_name(config, name) is not None, f"{name} is not declared"
        self.add_special_tokens = params.get("add_special_tokens", "true").lower() in ("true", "1", "yes")
        self.tokenizer = AutoTokenizer.from_pretrained(
            params["tokenizer_dir"], legacy=False, padding_side="left", trust_remote_code=True
        )
        if not self.tokenizer.pad_token:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.end_id = self.tokenizer.encode(self.tokenizer.eos_token, add_special_tokens=False)[0]
        self.pad_id = self.tokenizer.encode(self.tokenizer.pad_token, add_special_tokens=False)[0]

    def execute(self, requests):
        return [self._one(request) for request in requests]

    def _one(self, request):
        query = pb_utils.get_input_tensor_by_name(request, "QUERY").as_numpy()
        batch = query.shape[0]
        ids = [self.tokenizer.encode(row[0].decode(), add_special_tokens=self.add_special_tokens) for row in query]
        width = max(len(i) for i in ids)
        input_id = np.full((batch, width), self.pad_id, dtype=np.int32)
        for row, tokens in enumerate(ids):
            input_id[row, : len(tokens)] = tokens
        end_id = _words(request, "END_ID")
        pad_id = _words(request, "PAD_ID")
        tensors = {
            "INPUT_ID": input_id,
            "REQUEST_INPUT_LEN": np.array([[len(i)] for i in ids], dtype=np.int32),
            "DECODER_INPUT_ID": np.full((batch, 1), self.pad_id, dtype=np.int32),
            "REQUEST_DECODER_INPUT_LEN": np.ones((batch, 1), dtype=np.int32),
            "BAD_WORDS_IDS": self._word_list(_words(request, "BAD_WORDS_DICT"), batch),
            "STOP_WORDS_IDS": self._word_list(_words(request, "STOP_WORDS_DICT"), batch),
            "EMBEDDING_BIAS": np.empty((batch, 0), dtype=np.float32),
            "REQUEST_OUTPUT_LEN": pb_utils.get_input_tensor_by_name(request, "REQUEST_OUTPUT_LEN").as_numpy(),
            "OUT_END_ID": end_id if end_id is not None else np.full((batch, 1), self.end_id, dtype=np.int32),
            "OUT_PAD_ID": pad_id if pad_id is not None else np.full((batch, 1), self.pad_id, dtype=np.int32),
        }
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(n, v) for n, v in tensors.items()])

    def _word_list(self, words, batch):
        if words is None:
            return np.empty((batch, 2, 0), dtype=np.int32)
        flat, offsets = [], []
        for row in words:
            ids, ends = [], []
            for word in row:
                text = word.decode() if isinstance(word, bytes) else word
                tokens = self.tokenizer.encode(text, add_special_tokens=False)
                if tokens:
                    ids += tokens
                    ends.append(len(ids))
            flat.append(ids)
            offsets.append(ends)
        width = max(1, max(len(i) for i in flat))
        result = np.zeros((batch, 2, width), dtype=np.int32)
        result[:, 1, :] = -1
        for row, (ids, ends) in enumerate(zip(flat, offsets, strict=True)):
            result[row, 0, : len(ids)] = ids
            result[row, 1, : len(ends)] = ends
        return result
