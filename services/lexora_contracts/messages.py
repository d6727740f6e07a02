"""Payloads that travel over NATS between services."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from lexora_contracts.errors import ErrorInfo
from lexora_contracts.registry import Pricing

Plan = Literal["free", "pro", "enterprise"]


# ---- auth -------------------------------------------------------------------------------------
class VerifyKeyRequest(BaseModel):
    api_key: str


class Identity(BaseModel):
    """Who is calling: the result of verifying a key (cacheable in the gateway)."""

    account_id: str
    key_id: str
    plan: Plan
    timezone: str = "UTC"  # the account's; daily limits reset at its midnight
    spend_limit_micro: int | None = None  # this key's optional cap on total spend
    admin: bool = False  # the key's account belongs to an admin: it may use the admin API


class CreateAccountRequest(BaseModel):
    plan: Plan = "free"
    name: str | None = None
    timezone: str = "UTC"


class CreateAccountReply(BaseModel):
    account_id: str
    key_id: str
    api_key: str  # shown once; only its hash is stored
    plan: Plan


class KeyRevoked(BaseModel):
    key_id: str


class CreateKeyRequest(BaseModel):
    account_id: str
    name: str | None = None
    spend_limit_micro: int | None = Field(default=None, ge=0)


class CreateKeyReply(BaseModel):
    key_id: str
    api_key: str  # shown once; only its hash is stored
    display_prefix: str


class ListKeysRequest(BaseModel):
    account_id: str


class KeyInfo(BaseModel):
    """What a listing shows of a key: never the key, only its prefix and when it was last used."""

    key_id: str
    name: str | None
    display_prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    spend_limit_micro: int | None


class KeyList(BaseModel):
    account_id: str
    keys: list[KeyInfo]


class RevokeKeyRequest(BaseModel):
    key_id: str
    account_id: str | None = None  # when given, the key must belong to this account


# ---- billing ----------------------------------------------------------------------------------
class ReserveRequest(BaseModel):
    request_id: str
    account_id: str
    amount_micro: int = Field(ge=0)
    ttl_s: float = Field(gt=0)
    key_id: str | None = None
    key_spend_limit_micro: int | None = None  # the key's cap, checked in the same transaction


class ReserveReply(BaseModel):
    reserved_micro: int
    available_micro: int


class LeaseAcquireRequest(BaseModel):
    """A gateway replica asks for a credit lease on an account (and on a key with a spend limit):
    at least `need_micro`, sized by billing. `lease_id` is chosen by the gateway, so a retried
    acquisition grants once."""

    lease_id: str
    holder: str  # the gateway replica
    account_id: str
    key_id: str | None = None  # set only for a key with a spend limit: the lease holds against it too
    key_spend_limit_micro: int | None = None
    need_micro: int = Field(gt=0)
    ttl_s: float = Field(gt=0)  # the last request started on it must settle within this
    # The lease this one replaces, shrunk first in the same transaction (its free part counts
    # towards the new one): its final `LeaseReturnRequest`'s fields.
    replaces: LeaseReturnRequest | None = None


class LeaseGrant(BaseModel):
    lease_id: str
    amount_micro: int


class LeaseReturnRequest(BaseModel):
    """The holder will never consume more of the lease than `keep_micro` in all (what its finished
    requests cost, rounded up, plus the worst case of those still in flight). `requests`: how many
    requests were covered by the lease, each of which ends in one usage event; given with `final`
    (nothing more will start on it), billing releases the rest once that many events are settled."""

    lease_id: str
    keep_micro: int = Field(ge=0)
    requests: int = Field(default=0, ge=0)
    final: bool = False


class LeaseReturnReply(BaseModel):
    released_micro: int


class LeaseRecall(BaseModel):
    """Another replica could not get credit on this account: give back what you do not need."""

    account_id: str
    key_id: str | None = None
    holder: str  # the replica that was refused (it returns its own lease with its request)


class GrantRequest(BaseModel):
    account_id: str
    amount_micro: int = Field(gt=0)
    idempotency_key: str
    actor: str
    reason: str
    kind: Literal["adjustment", "topup"] = "adjustment"  # topup: paid for (e.g. a Stripe event)


class AdminGrantRequest(BaseModel):
    """A grant on an administrator's behalf, with the credential they called with (exactly one):
    billing verifies it with auth and records the admin as the grant's actor."""

    grant: GrantRequest
    session_token: str | None = None
    api_key: str | None = None


class BalanceRequest(BaseModel):
    account_id: str


class Balance(BaseModel):
    account_id: str
    balance_micro: int
    held_micro: int
    carry_pico: int  # exact cost consumed but below one micro-USD, deducted with the next charge

    @property
    def available_micro(self) -> int:
        return self.balance_micro - self.held_micro

    @property
    def exact_balance_pico(self) -> int:
        return self.balance_micro * 1_000_000 - self.carry_pico


# ---- router -----------------------------------------------------------------------------------
ImageMediaType = Literal["image/png", "image/jpeg", "image/gif", "image/webp"]


class ImageInput(BaseModel):
    """An image in a chat turn, checked at the gateway (lexora_gateway.chat.image_inputs): its format is
    the one its own bytes show, and it is within the configured size."""

    media_type: ImageMediaType
    data: str  # the image file, base64 (standard alphabet, padded)
    detail: Literal["auto", "low", "high"] = "auto"  # OpenAI's hint to the model; "auto" when not given
    offset: int = Field(default=0, ge=0)  # where in the turn's text it stands (a character index)

    def data_uri(self) -> str:
        return f"data:{self.media_type};base64,{self.data}"


class ChatTurn(BaseModel):
    role: str
    content: str
    # Images in the turn, in order (vision models only; the gateway refuses them for other models).
    images: list[ImageInput] | None = None

    def engine_message(self) -> dict[str, Any]:
        """The turn as the engine reads it in the chat JSON: {"role", "content": text}; with images,
        content is a list of OpenAI-style parts (text and image_url data URIs) in their order."""
        if not self.images:
            return {"role": self.role, "content": self.content}
        parts: list[dict[str, Any]] = []
        at = 0
        for image in self.images:
            cut = min(max(image.offset, at), len(self.content))
            if cut > at:
                parts.append({"type": "text", "text": self.content[at:cut]})
            at = cut
            parts.append({"type": "image_url", "image_url": {"url": image.data_uri(), "detail": image.detail}})
        if at < len(self.content):
            parts.append({"type": "text", "text": self.content[at:]})
        return {"role": self.role, "content": parts}


class JobHeader(BaseModel):
    """What every job sent to a router carries besides its own inputs: who pays, at what price,
    how much credit is held for it, and until when it may run."""

    request_id: str
    account_id: str
    key_id: str
    model: str
    deadline: float  # unix seconds; the router gives up (504, not charged) after it
    pricing: Pricing  # the price the gateway reserved with; settled at this price
    reserved_micro: int
    received_at: float
    endpoint: str
    stream: bool = False
    lease_id: str | None = None  # the credit lease covering it (None: a reservation of its own)


class GenerationRequest(JobHeader):
    """Generate text for a chat (or, with `raw_prompt`, a legacy completion); the text comes back
    in `delta` chunks when `stream`, else whole in the final chunk."""

    messages: list[ChatTurn]
    raw_prompt: str | None = None  # legacy completions: the prompt as is, no chat template
    max_tokens: int
    temperature: float
    top_p: float
    top_k: int | None = None
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    seed: int | None = None
    stop: list[str] = Field(default_factory=list)
    # Guided decoding as TensorRT-LLM names it: ("json" | "json_schema" | "ebnf_grammar", guide text).
    guide_type: str | None = None
    guide: str | None = None
    # Reasoning, set only for models with the "reasoning" capability (docs/architecture.md):
    # `reasoning` true: the model thinks (in <think> tags) before answering; the router records
    # the job as thinking_used. `reasoning_budget`: the most tokens to spend thinking, sent to
    # Triton as the optional INT32 input `reasoning_budget`; 0 turns thinking off; None: the
    # model's default (no input sent).
    reasoning: bool = False
    reasoning_budget: int | None = Field(default=None, ge=0)
    stream: bool
    endpoint: str = "/v1/chat/completions"  # the API route, recorded with the usage


class EmbeddingJob(JobHeader):
    """Embed each text; the vectors come back as float32 little-endian bytes in `data` parts."""

    inputs: list[str] = Field(min_length=1)
    endpoint: str = "/v1/embeddings"


class ImageJob(JobHeader):
    """Generate one image; the PNG comes back in `data` parts."""

    prompt: str
    width: int
    height: int
    num_inference_steps: int
    guidance_scale: float
    seed: int | None = None
    endpoint: str = "/v1/images/generations"


class GenerationChunk(BaseModel):
    """One message on the caller's inbox: a text delta (or a slice of a binary result), the final
    counts, or an error. ("accepted" was sent first by routers before 0.2; gateways skip it.)

    A job whose client does not stream gets no deltas: its whole answer is the final chunk's `text`."""

    kind: Literal["accepted", "delta", "done", "error"]
    text: str = ""
    data: str = ""  # base64 slice of a binary result (embedding vectors, a PNG), in order
    images: int = 0  # images produced (on "done")
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    stop_sequence: str | None = None  # the caller's stop sequence that ended generation
    cost_pico: int = 0
    error: ErrorInfo | None = None
    # The max_tokens the job runs with when the engine clamped the requested one to what fits in
    # the context after the prompt (on every delta and on "done"); None: not clamped.
    max_tokens: int | None = None


class CancelGeneration(BaseModel):
    request_id: str


class CountTokensRequest(BaseModel):
    model: str
    messages: list[ChatTurn]
    # As in GenerationRequest: a reasoning model's prompt includes the prefill that opens its
    # thinking block when it thinks, so the count says whether it will (0: it will not).
    reasoning_budget: int | None = Field(default=None, ge=0)


class CountTokensReply(BaseModel):
    input_tokens: int


# ---- usage ------------------------------------------------------------------------------------
class UsageEvent(BaseModel):
    """The outcome of one request, published once to JetStream with Nats-Msg-Id = request_id.

    Billing settles the reservation from it; usage stores it. Both consume idempotently.
    """

    request_id: str
    account_id: str
    key_id: str
    model: str
    endpoint: str = "/v1/chat/completions"
    status_code: int
    error_type: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_pico: int = 0
    reserved_micro: int = 0
    lease_id: str | None = None  # the lease its credit was covered by; None: its own reservation
    finish_reason: str | None = None
    stream: bool = False
    thinking_used: bool = False  # the model reasoned (reasoning tokens are billed as output)
    received_at: float
    latency_ms: int


class HealthProbe(BaseModel):
    pass


class HealthReply(BaseModel):
    service: str
    status: Literal["ok", "degraded", "down"]
    checks: dict[str, str] = Field(default_factory=dict)


class ModelDemand(BaseModel):
    """A router's demand for a model (`router.v1.model.demanded`): the requests it holds waiting for
    a replica (`waiting`, > 0 wakes a deployment that scales from zero) and those running on one."""

    model_id: str
    waiting: int = Field(ge=0)
    running: int = Field(ge=0)
    at: float  # unix time
    observer: str = ""  # the router that sent it
