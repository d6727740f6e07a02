"""Admitting a job, whatever its kind (chat, embedding, image) and protocol: its model resolved, the
request counted against the plan, the job fitted to the model, its credit held. Then
lexora_gateway.dispatch sends it to a router.

    admitted = await admit_and_hold(http, state, JobSpec(identity, request_id, received_at, work))
    stream, first = await dispatch(state, admitted)

Every outcome is on record exactly once: a job refused here (unknown model, limits, a job that does
not fit its model, credit) is recorded by the gateway, at cost 0; a job a router takes is recorded by
that router; one no router takes is recorded by the gateway too (dispatch, NoRouter).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol

from fastapi import Request

from lexora_contracts.errors import (
    InternalError,
    InvalidRequest,
    LexoraError,
    ModelNotFound,
    ModelUnavailable,
    ServiceUnavailable,
)
from lexora_contracts.messages import Identity, UsageEvent
from lexora_contracts.registry import ModelKind, ModelRecord, Pricing
from lexora_gateway.admission import model_names, rate_limits
from lexora_gateway.state import GatewayState
from lexora_router.client import Job
from lexora_runtime.bus import publish_usage_event
from lexora_runtime.logs import request_id_var

_A_KIND = {"chat": "a chat", "embedding": "an embedding", "image": "an image"}


class Fitted(Protocol):
    """A job fitted to its model: the credit it holds, the request the router is sent."""

    def reservation_micro(self, model: ModelRecord, pricing: Pricing) -> int:
        """The most the job can cost at `pricing` (0 for a free model): the credit to hold."""
        ...

    def engine_request(self, model: ModelRecord, header: dict[str, Any]) -> Job:
        """The router's job, given the JobHeader fields every job carries (job_header)."""
        ...


class Workload(Protocol):
    """What a kind of job brings to admission: lexora_gateway.chat.jobs.ChatJob,
    lexora_gateway.media.embedding_jobs.Embeddings, lexora_gateway.media.image_jobs.ImageGeneration."""

    kind: ClassVar[ModelKind]  # the kind of model that serves it
    subject: ClassVar[str]  # where the router takes it

    @property
    def model(self) -> str:
        """The model as the client named it."""
        ...

    @property
    def endpoint(self) -> str: ...

    @property
    def stream(self) -> bool: ...

    async def fit(self, model: ModelRecord, state: GatewayState) -> Fitted:
        """The job made to fit its model, or the refusal the client should see (before any hold)."""
        ...


@dataclass(frozen=True)
class JobSpec:
    """A job as its route asked for it, before its model is known: enough to record a refusal."""

    identity: Identity
    request_id: str
    received_at: float
    work: Workload


@dataclass(frozen=True)
class Admitted:
    """A job cleared to run: its model, the credit held for it, the router's request."""

    spec: JobSpec
    model: ModelRecord
    reserved_micro: int
    request: Job
    lease_id: str | None = None  # the credit lease covering it (None: a free job)


def find_model(state: GatewayState, name: str) -> ModelRecord | None:
    """The registry record a client's model name means: by id, declared alias, or the platform's
    name patterns (LEXORA_MODEL_ALIASES; lexora_gateway.admission.model_names)."""
    return model_names.resolve(name, state.registry.get, state.settings.model_aliases)


def serving_model(model: ModelRecord | None, model_id: str, kind: ModelKind) -> ModelRecord:
    """The registry record to serve a job of `kind` with, or the error the client should see."""
    if model is None:
        raise ModelNotFound(f"The model '{model_id}' does not exist; GET /v1/models lists them", param="model")
    if model.kind != kind:
        raise InvalidRequest(f"'{model_id}' is {_A_KIND[model.kind]} model, not {_A_KIND[kind]} model", param="model")
    if not model.ready_endpoints:
        if model.deployed_endpoints:  # deployed, but the router saw its engine fail
            raise ModelUnavailable(f"{model.id} cannot serve right now: its engine is failing; retry in 30 seconds")
        if not model.wakes_on_request:  # else at zero replicas: a router holds the job while it wakes
            raise ModelUnavailable(f"No ready instance of {model.id}; retry in 30 seconds")
    return model


async def admit_model(
    request: Request, state: GatewayState, identity: Identity, model_id: str, kind: ModelKind
) -> ModelRecord:
    """Resolve the model and count the request against the caller's limits (429 with Retry-After
    when one is reached). A refused model still gets the caller's rate-limit headers (the edge
    middleware's)."""
    model = serving_model(find_model(state, model_id), model_id, kind)
    await rate_limits.admit(request, state, identity, model)
    return model


async def admit_and_hold(http: Request, state: GatewayState, spec: JobSpec) -> Admitted:
    """Resolve the model, count the request, fit the job to the model and hold its credit; a refusal
    is raised here (so a streaming client still gets a proper HTTP status) and on record at cost 0."""
    request_id_var.set(spec.request_id)  # carried to billing and the router in NATS headers
    require_bus(state)
    work = spec.work
    try:
        model = await admit_model(http, state, spec.identity, work.model, work.kind)
        fitted = await work.fit(model, state)
        pricing = _price(model, spec)
        reserved = fitted.reservation_micro(model, pricing)
        lease_id = await hold_credit(state, spec.identity, spec.request_id, reserved)
    except LexoraError as exc:
        await record_refusal(state, spec, exc)
        raise
    header = job_header(spec, model, pricing, reserved, state.settings.job_timeout_s, lease_id)
    return Admitted(spec, model, reserved, fitted.engine_request(model, header), lease_id)


async def admit_and_hold_all(http: Request, state: GatewayState, specs: list[JobSpec]) -> list[Admitted]:
    """Several jobs of one request on one model (the prompts of a legacy completion): the request
    counts once against the plan, and every job's credit is covered before any is dispatched. If one
    is refused (402, a key's spend limit), nothing runs: every job is on record as refused, at cost
    0, and what was covered goes back to its lease."""
    require_bus(state)
    first = specs[0]
    holds = [0] * len(specs)
    leases: list[str | None] = [None] * len(specs)
    try:
        model = await admit_model(http, state, first.identity, first.work.model, first.work.kind)
        pricing = _price(model, first)
        fitted = [await spec.work.fit(model, state) for spec in specs]
        wanted = [one.reservation_micro(model, pricing) for one in fitted]
        outcomes = await asyncio.gather(
            *(_hold(state, spec, amount) for spec, amount in zip(specs, wanted, strict=True)),
            return_exceptions=True,
        )
        holds = [0 if isinstance(o, BaseException) else amount for amount, o in zip(wanted, outcomes, strict=True)]
        leases = [None if isinstance(o, BaseException) else o for o in outcomes]
        refused = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        if refused:
            raise refused[0] if isinstance(refused[0], LexoraError) else InternalError("Internal error")
    except LexoraError as exc:
        await asyncio.gather(
            *(record_refusal(state, s, exc, reserved_micro=h) for s, h in zip(specs, holds, strict=True))
        )
        raise
    timeout = state.settings.job_timeout_s
    return [
        Admitted(
            spec, model, hold, one.engine_request(model, job_header(spec, model, pricing, hold, timeout, lease)), lease
        )
        for spec, one, hold, lease in zip(specs, fitted, holds, leases, strict=True)
    ]


def require_bus(state: GatewayState) -> None:
    """Refuse (503) before anything is held while NATS cannot be reached: no router could take the
    job, and its outcome could not be recorded. Not on record for the same reason: the record
    travels on the bus."""
    if not state.nc.is_connected:
        raise ServiceUnavailable("The message bus cannot be reached right now; retry in a few seconds")


def _price(model: ModelRecord, spec: JobSpec) -> Pricing:
    return model.pricing_at(datetime.fromtimestamp(spec.received_at, UTC))  # the price when it arrived


async def _hold(state: GatewayState, spec: JobSpec, amount_micro: int) -> str | None:
    request_id_var.set(spec.request_id)
    return await hold_credit(state, spec.identity, spec.request_id, amount_micro)


async def hold_credit(state: GatewayState, identity: Identity, request_id: str, amount_micro: int) -> str | None:
    """Cover one job's worst case from this replica's credit lease for the account (or the key,
    when it has a spend limit), acquiring one from billing when needed: 402 when the account or the
    key's spend limit cannot cover it. Returns the lease's id; free models take nothing (None)."""
    if not amount_micro:
        return None
    return await state.credit.cover(identity, request_id, amount_micro)


def job_header(
    spec: JobSpec,
    model: ModelRecord,
    pricing: Pricing,
    reserved_micro: int,
    job_timeout_s: float,
    lease_id: str | None = None,
) -> dict[str, Any]:
    """The `JobHeader` fields every router job carries: who pays, at what price, the credit covering
    it, the deadline."""
    return {
        "request_id": spec.request_id,
        "account_id": spec.identity.account_id,
        "key_id": spec.identity.key_id,
        "model": model.id,
        "deadline": spec.received_at + job_timeout_s,
        "pricing": pricing,
        "reserved_micro": reserved_micro,
        "received_at": spec.received_at,
        "lease_id": lease_id,
    }


async def record_refusal(
    state: GatewayState, spec: JobSpec, error: LexoraError, model_id: str | None = None, reserved_micro: int = 0
) -> None:
    """A job no router took: the gateway records it (cost 0); what it covered goes back to its
    lease (billing counts the event against the lease)."""
    lease_id = state.credit.book.lease_of(spec.request_id)
    await publish_usage_event(
        state.js,
        UsageEvent(
            request_id=spec.request_id,
            account_id=spec.identity.account_id,
            key_id=spec.identity.key_id,
            model=model_id or spec.work.model,
            endpoint=spec.work.endpoint,
            status_code=error.status,
            error_type=error.type,
            reserved_micro=reserved_micro,
            lease_id=lease_id,
            stream=spec.work.stream,
            received_at=spec.received_at,
            latency_ms=int((time.time() - spec.received_at) * 1000),
        ),
    )
    if lease_id is not None:
        state.credit.finish(spec.request_id, 0)
