"""The catalog the local stack publishes: the model it serves on CPU, plus the documents'
models that have no instance here (listed with status pipeline, answered with 503)."""

from __future__ import annotations

from lexora_contracts.money import usd_per_mtok_to_micro, usd_to_micro
from lexora_contracts.registry import Endpoint, ModelRecord, Pricing

LOCAL_CHAT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
LOCAL_TRITON_MODEL = "smollm2-135m-instruct"
# The same SmolLM2 made to think by budget forcing (model-repo/smollm2-135m-think): a development
# model for the reasoning path (thinking blocks, reasoning deltas, thinking_used), not a reasoner.
LOCAL_THINKING_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct-think"
LOCAL_EMBEDDING_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
LOCAL_IMAGE_MODEL = "black-forest-labs/FLUX.1-schnell"
CREATED = 1730000000


def _per_mtok(usd: str) -> Pricing:
    price = usd_per_mtok_to_micro(usd)
    return Pricing(input_micro_per_mtok=price, output_micro_per_mtok=price)


def _per_image(usd: str) -> Pricing:
    return Pricing(input_micro_per_mtok=0, output_micro_per_mtok=0, image_micro=usd_to_micro(usd))


def local_catalog(triton: Endpoint | None) -> list[ModelRecord]:
    endpoints = [triton] if triton else []
    return [
        *_chat_models(endpoints),
        ModelRecord(
            id=LOCAL_EMBEDDING_MODEL,
            kind="embedding",
            owned_by="sentence-transformers",
            triton_model="all-minilm-l6-v2",
            context_length=256,  # the model's max_seq_length; longer inputs are refused, not cut
            embedding_dimensions=384,
            pricing=Pricing(input_micro_per_mtok=usd_per_mtok_to_micro("0.01"), output_micro_per_mtok=0),
            capabilities=["embedding"],
            aliases=["all-minilm-l6-v2"],
            created=CREATED,
            endpoints=endpoints,
        ),
        # The local engine runs the real FluxPipeline code on a tiny random-weight FLUX (no weights
        # exist offline): the API, billing and PNG path are real, the pictures are noise.
        ModelRecord(
            id=LOCAL_IMAGE_MODEL,
            kind="image",
            owned_by="black-forest-labs",
            triton_model="flux-1-schnell",
            context_length=256,  # T5 prompt tokens (longer prompts are cut, as FluxPipeline does)
            template_overhead_tokens=0,
            pricing=_per_image("0.002"),
            capabilities=["image"],
            aliases=["flux-schnell"],
            created=CREATED,
            endpoints=endpoints,
        ),
        ModelRecord(
            id="black-forest-labs/FLUX.1-dev",
            kind="image",
            owned_by="black-forest-labs",
            triton_model="flux-1-dev",
            context_length=512,
            template_overhead_tokens=0,
            pricing=_per_image("0.002"),
            capabilities=["image"],
            created=CREATED,
        ),
        ModelRecord(
            id="stabilityai/stable-diffusion-xl-base-1.0",
            kind="image",
            owned_by="stabilityai",
            triton_model="sdxl-base",
            context_length=77,
            template_overhead_tokens=0,
            pricing=_per_image("0.002"),
            capabilities=["image"],
            created=CREATED,
        ),
    ]


def _chat_models(endpoints: list[Endpoint]) -> list[ModelRecord]:
    return [
        ModelRecord(
            id=LOCAL_CHAT_MODEL,
            owned_by="huggingfacetb",
            triton_model=LOCAL_TRITON_MODEL,
            context_length=8192,
            # Priced like the contract's Llama-3.2-3B row: $0.04 per 1M tokens, input and output.
            pricing=_per_mtok("0.04"),
            capabilities=["chat", "tools", "json_output"],
            aliases=["smollm2"],
            created=CREATED,
            endpoints=endpoints,
        ),
        ModelRecord(
            id=LOCAL_THINKING_MODEL,
            owned_by="huggingfacetb",
            triton_model="smollm2-135m-think",
            context_length=8192,
            pricing=_per_mtok("0.04"),
            # Stop words and guided decoding (forced tool calls, JSON output) apply to the answer
            # after the thinking block, so tools and JSON output work as on the plain model.
            capabilities=["chat", "reasoning", "tools", "json_output"],
            aliases=["smollm2-think"],
            created=CREATED,
            endpoints=endpoints,
        ),
        ModelRecord(
            id="meta-llama/Llama-3.2-3B-Instruct",
            owned_by="meta-llama",
            triton_model="llama-3.2-3b-instruct",
            context_length=131072,
            pricing=_per_mtok("0.04"),
            capabilities=["chat", "tools"],
            created=CREATED,
        ),
        ModelRecord(
            id="meta-llama/Llama-3.1-8B-Instruct",
            owned_by="meta-llama",
            triton_model="llama-3.1-8b-instruct",
            context_length=131072,
            pricing=_per_mtok("0.10"),
            capabilities=["chat", "tools"],
            created=CREATED,
        ),
    ]
