"""The tensors of a Triton chat model: what a router sends and what it reads back.

Names follow the TensorRT-LLM ensemble (`text_input`, `max_tokens`, `stream`, `temperature`,
`top_p`, `stop_words` → `text_output`) plus Lexora's own (`apply_chat_template` in; the engine's
token counts and finish reason out). The router builds its requests to these names
(lexora_router.triton_engine) and the operator declares them in the model configs it generates
(lexora_operator.model_repository); model-repo/'s chat models declare the same, so a model
deployed either way answers the router.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EngineTensor:
    name: str
    datatype: str  # Triton's wire type: BYTES, BOOL, INT32, UINT64, FP32
    dims: str = "1"  # "-1": any number of elements (stop words)
    optional: bool = True  # a model may be asked without it

    @property
    def config_type(self) -> str:
        """The data_type a config.pbtxt declares (BYTES is TYPE_STRING there)."""
        return "TYPE_STRING" if self.datatype == "BYTES" else f"TYPE_{self.datatype}"


CHAT_INPUTS: tuple[EngineTensor, ...] = (
    EngineTensor("text_input", "BYTES", optional=False),  # JSON messages, or a raw prompt
    EngineTensor("max_tokens", "INT32", optional=False),
    EngineTensor("apply_chat_template", "BOOL"),  # false: text_input is a raw prompt
    EngineTensor("stream", "BOOL"),
    EngineTensor("temperature", "FP32"),
    EngineTensor("top_p", "FP32"),
    EngineTensor("top_k", "INT32"),
    EngineTensor("frequency_penalty", "FP32"),
    EngineTensor("presence_penalty", "FP32"),
    EngineTensor("seed", "UINT64"),
    EngineTensor("stop_words", "BYTES", dims="-1"),
    # Guided decoding as TensorRT-LLM names it: "json" | "json_schema" | "ebnf_grammar", and the guide.
    EngineTensor("guided_decoding_guide_type", "BYTES"),
    EngineTensor("guided_decoding_guide", "BYTES"),
)

# Sent only to models with the "reasoning" capability: the most tokens to spend thinking.
REASONING_INPUTS: tuple[EngineTensor, ...] = (EngineTensor("reasoning_budget", "INT32"),)

CHAT_OUTPUTS: tuple[EngineTensor, ...] = (
    EngineTensor("text_output", "BYTES"),
    EngineTensor("num_input_tokens", "INT32"),
    EngineTensor("num_output_tokens", "INT32"),
    EngineTensor("finish_reason", "BYTES"),
)

# Read when the model declares it (a router asks a model only for outputs it declares): the stop
# word that ended the answer, reported as Anthropic's `stop_sequence`.
OPTIONAL_CHAT_OUTPUTS: tuple[EngineTensor, ...] = (EngineTensor("stop_word", "BYTES"),)


# Embedding models (model-repo/all-minilm-l6-v2; lexora_router's embeddings client): a batch of N
# strings in, N vectors and N token counts out. The vector width is the model's; -1 here.
EMBEDDING_INPUTS: tuple[EngineTensor, ...] = (EngineTensor("text_input", "BYTES", dims="-1", optional=False),)
EMBEDDING_OUTPUTS: tuple[EngineTensor, ...] = (
    EngineTensor("embedding", "FP32", dims="-1, -1"),
    EngineTensor("num_input_tokens", "INT32", dims="-1"),
)

# Image models (model-repo/flux-1-schnell): one prompt in, one PNG out.
IMAGE_INPUTS: tuple[EngineTensor, ...] = (
    EngineTensor("prompt", "BYTES", optional=False),
    EngineTensor("width", "INT32", optional=False),
    EngineTensor("height", "INT32", optional=False),
    EngineTensor("num_inference_steps", "INT32", optional=False),
    EngineTensor("guidance_scale", "FP32", optional=False),
    EngineTensor("seed", "INT64"),
)
IMAGE_OUTPUTS: tuple[EngineTensor, ...] = (EngineTensor("image", "BYTES"),)
