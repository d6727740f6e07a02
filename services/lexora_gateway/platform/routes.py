"""Routes about the platform itself: the model catalog and health."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from lexora_contracts.errors import LexoraError, ModelNotFound
from lexora_contracts.messages import HealthReply
from lexora_contracts.registry import ModelRecord
from lexora_gateway.admission.admit import find_model
from lexora_gateway.http import JSONBody
from lexora_gateway.state import StateDep

router = APIRouter()


@router.get("/models")
async def list_models(state: StateDep) -> Response:
    return JSONBody({"object": "list", "data": [_model_card(m) for m in state.registry.all()]})


@router.get("/models/{model_id:path}")
async def get_model(model_id: str, state: StateDep) -> Response:
    model = find_model(state, model_id)  # an alias or a name pattern shows the model it means
    if model is None:
        raise ModelNotFound(f"The model '{model_id}' does not exist; GET /v1/models lists them", param="model")
    return JSONBody(_model_card(model))


def _model_card(model: ModelRecord) -> dict[str, Any]:
    return {
        "id": model.id,
        "object": "model",
        "created": model.created,
        "owned_by": model.owned_by,
        "kind": model.kind,
        "context_length": model.context_length,
        "status": model.status,
        "aliases": model.aliases,
        "capabilities": model.capabilities,
        "pricing": _pricing(model),
        **({"dimensions": model.embedding_dimensions} if model.embedding_dimensions else {}),
    }


def _pricing(model: ModelRecord) -> dict[str, int]:
    if model.kind == "image":
        return {"micro_usd_per_image": model.pricing.image_micro}
    return {
        "input_micro_usd_per_1m_tokens": model.pricing.input_micro_per_mtok,
        "output_micro_usd_per_1m_tokens": model.pricing.output_micro_per_mtok,
    }


@router.get("/health")
async def health(state: StateDep) -> Response:
    async def probe(check: Awaitable[HealthReply]) -> dict[str, Any]:
        try:
            return (await check).model_dump(exclude={"service"})
        except LexoraError as exc:
            return {"status": "down", "error": exc.message}

    services = {
        "auth": state.auth.health(),
        "billing": state.billing.health(),
        "usage": state.usage.health(),
        "router": state.router.health(),
    }
    results = await asyncio.gather(*(probe(check) for check in services.values()))
    checks: dict[str, Any] = {"nats": {"status": "ok" if state.nc.is_connected else "down"}}
    checks.update(zip(services, results, strict=True))
    models = {m.id: m.status for m in state.registry.all()}
    # A model whose endpoints are up but whose engine cannot serve is a degraded platform too.
    healthy = all(c["status"] == "ok" for c in checks.values()) and "degraded" not in models.values()
    return JSONBody(
        {"status": "ok" if healthy else "degraded", "checks": checks, "models": models},
        status_code=200 if healthy else 503,
    )
