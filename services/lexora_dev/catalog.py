"""The catalog the local stack publishes: the model it serves on CPU, plus the documents'
models that have no instance here (listed with status pipeline, answered with 503)."""

from __future__ import annotations

from lexora_contracts.money import usd_per_mtok_to_micro
from lexora_contracts.registry import Endpoint, ModelRecord, Pricing

LOCAL_CHAT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
LOCAL_TRITON_MODEL = "smollm2-135m-instruct"
CREATED = 1730000000


def _per_mtok(usd: str) -> Pricing:
    price = usd_per_mtok_to_micro(usd)
    return Pricing(input_micro_per_mtok=price, output_micro_per_mtok=price)


def local_catalog(triton_grpc_address: str | None) -> list[ModelRecord]:
    endpoints = [Endpoint(name="local", grpc_address=triton_grpc_address)] if triton_grpc_address else []
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
