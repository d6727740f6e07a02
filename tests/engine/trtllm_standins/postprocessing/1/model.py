"""Test stand-in for tensorrtllm_backend's stock `postprocessing` (see ../../README.md).

Same interface as NVIDIA's: TOKENS_BATCH [batch, beams, tokens] and SEQUENCE_LENGTH [batch, beams] in,
OUTPUT out (one string per beam of every batch entry, flat); any other input is refused. Parameters
`tokenizer_dir` and `skip_special_tokens`.
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils
from transformers import AutoTokenizer


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config["parameters"].items()}
        self.skip_special_tokens = params.get("skip_special_tokens", "true").lower() in ("true", "1", "yes")
        self.tokenizer = AutoTokenizer.from_pretrained(
            params["tokenizer_dir"], legacy=False, padding_side="left", trust_remote_code=True
        )

    def execute(self, requests):
        responses = []
        for request in requests:
            inputs = {tensor.name(): tensor.as_numpy() for tensor in request.inputs()}
            unknown = set(inputs) - {"TOKENS_BATCH", "SEQUENCE_LENGTH"}
            if unknown:
                raise ValueError(f"unknown input {sorted(unknown)}")
            sequences = [
                tokens[:length]
                for batch_tokens, batch_lengths in zip(inputs["TOKENS_BATCH"], inputs["SEQUENCE_LENGTH"], strict=True)
                for tokens, length in zip(batch_tokens, batch_lengths, strict=True)
            ]
            texts = self.tokenizer.batch_decode(sequences, skip_special_tokens=self.skip_special_tokens)
            output = np.array([t.encode("utf-8") for t in texts], dtype=np.object_)
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT", output)]))
        return responses
