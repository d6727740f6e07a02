"""Embedding jobs: an embeddings request as a workload for lexora_gateway.admission.admit, and the
credit hold, the router request and the response body, as pure functions of the request, the
model record and the price."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from lexora_contracts import subjects
from lexora_contracts.errors import InvalidRequest
from lexora_contracts.messages import EmbeddingJob
from lexora_contracts.money import ceil_micro, pico_to_usd, token_cost_pico
from lexora_contracts.registry import ModelKind, ModelRecord, Pricing
from lexora_gateway.media.schemas import EmbeddingsRequest

if TYPE_CHECKING:
    from lexora_gateway.state import GatewayState

# WordPiece and byte-level BPE tokens cover at least one byte of text each; the model adds its
# special tokens ([CLS], [SEP]) on top.
EMBEDDING_SPECIAL_TOKENS = 2
ENDPOINT = "/v1/embeddings"


@dataclass(frozen=True)
class Embeddings:
    """POST /v1/embeddings as a job: it fits a model whose size it does not ask to change."""

    kind: ClassVar[ModelKind] = "embedding"
    subject: ClassVar[str] = subjects.ROUTER_EMBEDDING_CREATE
    endpoint: ClassVar[str] = ENDPOINT
    stream: ClassVar[bool] = False

    body: EmbeddingsRequest

    @property
    def model(self) -> str:
        return self.body.model

    async def fit(self, model: ModelRecord, state: GatewayState) -> Embeddings:
        check_dimensions(self.body, model)
        return self

    def reservation_micro(self, model: ModelRecord, pricing: Pricing) -> int:
        return embedding_reservation_micro(self.body.texts(), model, pricing)

    def engine_request(self, model: ModelRecord, header: dict[str, Any]) -> EmbeddingJob:
        return embedding_job(self.body, header)


def check_dimensions(body: EmbeddingsRequest, model: ModelRecord) -> None:
    """`dimensions` may only restate the model's native size: shortening is only meaningful for
    models trained for it, which none served here is."""
    if body.dimensions is None or body.dimensions == model.embedding_dimensions:
        return
    native = f"{model.embedding_dimensions}" if model.embedding_dimensions else "fixed"
    raise InvalidRequest(
        f"{model.id} produces {native}-dimensional embeddings and cannot shorten them; omit dimensions",
        param="dimensions",
    )


def embedding_token_bound(texts: list[str], context_length: int) -> int:
    """The most tokens these inputs can cost: an input over the model's context is refused whole."""
    return sum(min(len(text.encode()) + EMBEDDING_SPECIAL_TOKENS, context_length) for text in texts)


def embedding_reservation_micro(texts: list[str], model: ModelRecord, pricing: Pricing) -> int:
    if pricing.is_free:
        return 0
    bound = token_cost_pico(embedding_token_bound(texts, model.context_length), pricing.input_micro_per_mtok)
    return ceil_micro(bound) + 1  # + the sub-micro remainder the account may carry


def embedding_job(body: EmbeddingsRequest, header: dict[str, Any]) -> EmbeddingJob:
    return EmbeddingJob(inputs=body.texts(), **header)


def embeddings_body(
    model_id: str, vectors: bytes, count: int, encoding_format: str, tokens: int, cost_pico: int
) -> dict[str, Any]:
    """OpenAI's embedding list. `vectors` is float32 little-endian, `count` rows; base64 items are
    each row's raw float32 bytes, which is what the SDKs decode."""
    matrix = np.frombuffer(vectors, dtype="<f4").reshape(count, -1)
    if encoding_format == "base64":
        items: list[Any] = [base64.b64encode(row.tobytes()).decode() for row in matrix]
    else:
        items = matrix.tolist()
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": item} for i, item in enumerate(items)],
        "model": model_id,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "cost": pico_to_usd(cost_pico)},
    }
