"""The ModelDeployment spec as pydantic models, and the checks the CRD's OpenAPI schema cannot express.

The CRD refuses most bad specs at `kubectl apply` time; what is left (cross-field rules on clusters
without CEL validation, names that do not fit a Service, a model id that is not a registry key)
is caught here and turned into one readable message for the `Ready` condition.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.alias_generators import to_camel

from lexora_contracts.money import usd_per_mtok_to_micro, usd_to_micro
from lexora_contracts.registry import ModelKind, Pricing, registry_key

GROUP = "serving.lexora.network"
# The Triton model the router calls in a tensorrtllm deployment (model-repo/lexora-trtllm-chat).
TRTLLM_CHAT_MODEL = "lexora-trtllm-chat"
VERSION = "v1alpha1"
PLURAL = "modeldeployments"
KIND = "ModelDeployment"

Backend = Literal["tensorrtllm", "python"]

# Built by images/model-fetcher/Dockerfile (skaffold module "runtimes"), tagged with the chart's appVersion.
DEFAULT_FETCHER_IMAGE = "ghcr.io/lexora/model-fetcher:0.1.0"
# Requests of the Triton container for what spec.resources leaves out, so Triton is never BestEffort
# (the first pods evicted under node pressure). No default limits: a model's memory need varies by
# orders of magnitude, and a limit below it would OOM-kill the load.
DEFAULT_TRITON_REQUESTS = {"cpu": "1", "memory": "2Gi"}
# What the HPA reads (served by prometheus-adapter with the chart's rules, see docs/operator.md):
# the router's requests per ModelDeployment (External) and TensorRT-LLM's waiting queue per pod (Pods).
ROUTER_PENDING_METRIC = "lexora_pending_requests"
TRTLLM_WAITING_METRIC = "nv_trt_llm_waiting_requests"
# The CRD's former default of pendingRequestsMetric, stored in every ModelDeployment created before
# it went: Triton's queue, near zero under in-flight batching and served by no shipped adapter rule.
LEGACY_PENDING_METRIC = "nv_inference_pending_request_count"
GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
USD = r"^[0-9]+(\.[0-9]+)?$"
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS_1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_TRITON_MODEL_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")


class SpecModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


class PricingSpec(SpecModel):
    input_per_m_tok: str = Field(default="0", pattern=USD)
    output_per_m_tok: str = Field(default="0", pattern=USD)
    per_image: str = Field(default="0", pattern=USD)

    def to_pricing(self) -> Pricing:
        return Pricing(
            input_micro_per_mtok=usd_per_mtok_to_micro(self.input_per_m_tok),
            output_micro_per_mtok=usd_per_mtok_to_micro(self.output_per_m_tok),
            image_micro=usd_to_micro(self.per_image),
        )


class ModelSpec(SpecModel):
    id: str = Field(min_length=1, max_length=256)
    kind: ModelKind = "chat"
    owned_by: str | None = None
    context_length: int | None = Field(default=None, gt=0)
    capabilities: list[str] = Field(default_factory=list)
    template_overhead_tokens: int = Field(default=64, ge=0)
    pricing: PricingSpec = Field(default_factory=PricingSpec)


class SecretKeyRef(SpecModel):
    name: str = Field(min_length=1)
    key: str = Field(min_length=1)


class PvcSource(SpecModel):
    claim_name: str = Field(min_length=1)
    sub_path: str = ""


class ObjectStoreSource(SpecModel):
    uri: str = Field(pattern=r"^(s3|gs|https?)://.+")
    endpoint_url: str | None = Field(default=None, alias="endpointURL")
    # A Secret whose keys become the fetcher's environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...).
    credentials_secret: str | None = None


class HuggingFaceSource(SpecModel):
    repo: str = Field(pattern=r"^[A-Za-z0-9][-\w.]*/[-\w.]+$")
    revision: str = "main"
    token_secret: SecretKeyRef | None = None


class ImageSource(SpecModel):
    # The model's files are baked into the Triton image at this directory: nothing is fetched.
    path: str = Field(pattern=r"^/.+")


SourceKind = Literal["pvc", "objectStore", "huggingFace", "image"]
_SOURCE_KINDS: tuple[SourceKind, ...] = ("pvc", "objectStore", "huggingFace", "image")


class SourceSpec(SpecModel):
    pvc: PvcSource | None = None
    object_store: ObjectStoreSource | None = None
    hugging_face: HuggingFaceSource | None = None
    image: ImageSource | None = None
    fetcher_image: str = DEFAULT_FETCHER_IMAGE

    @model_validator(mode="after")
    def _exactly_one(self) -> SourceSpec:
        given = [name for name in _SOURCE_KINDS if getattr(self, _snake(name)) is not None]
        if len(given) != 1:
            choices = ", ".join(_SOURCE_KINDS)
            raise ValueError(f"set exactly one of {choices} (got {', '.join(given) or 'none'})")
        return self

    @property
    def kind(self) -> SourceKind:
        return next(name for name in _SOURCE_KINDS if getattr(self, _snake(name)) is not None)

    def secret_refs(self) -> list[tuple[str, str | None]]:
        """(Secret name, key) the fetcher reads its credentials from; key None: the whole Secret."""
        refs: list[tuple[str, str | None]] = []
        if self.hugging_face is not None and self.hugging_face.token_secret is not None:
            refs.append((self.hugging_face.token_secret.name, self.hugging_face.token_secret.key))
        if self.object_store is not None and self.object_store.credentials_secret:
            refs.append((self.object_store.credentials_secret, None))
        return refs


class CacheSpec(SpecModel):
    """The model cache: a ReadWriteMany PVC filled once by a Job, mounted read-only by every pod.

    Without a storage class (here or the operator's LEXORA_CACHE_STORAGE_CLASS) or with `enabled:
    false`, every pod fetches the model into an emptyDir of `sizeLimit` instead."""

    enabled: bool = True
    storage_class_name: str | None = Field(default=None, pattern=_DNS_1123_SUBDOMAIN)
    # The PVC's size with the cache; the emptyDir's sizeLimit (and ephemeral-storage request) without.
    size_limit: str | int = "100Gi"


EngineMode = Literal["build", "prebuilt"]


class EngineSpec(SpecModel):
    """tensorrtllm: where the TensorRT-LLM engine comes from.

    build: the operator builds it from the source's Hugging Face checkpoint with the TensorRT-LLM LLM
    API, once per (model, GPU product, tensor-parallel size, TensorRT-LLM version), into the model
    cache (or, without a cache, in each pod before Triton starts). prebuilt: the source holds
    `engine/` (trtllm-build output) and `tokenizer/`."""

    mode: EngineMode = "build"
    # Unset: gpu.count. One engine spans every GPU of a replica, so it must equal gpu.count.
    tensor_parallel_size: int | None = Field(default=None, ge=1)
    # Part of the engine's cache key; the build checks it against the image's tensorrt_llm.__version__.
    # Unset: the builder image's reference stands for the version.
    trtllm_version: str | None = Field(default=None, pattern=r"^[0-9A-Za-z][0-9A-Za-z.+_-]*$")
    # Unset: triton.image (NVIDIA's TensorRT-LLM Triton image carries tensorrt_llm).
    builder_image: str | None = None
    dtype: Literal["auto", "float16", "bfloat16"] = "auto"
    # Unset: model.contextLength.
    max_seq_len: int | None = Field(default=None, ge=1)
    max_num_tokens: int | None = Field(default=None, ge=1)
    build_timeout_seconds: int = Field(default=7200, ge=300)


class GpuSpec(SpecModel):
    count: int = Field(default=1, ge=0)
    product: str | None = None  # value of the nvidia.com/gpu.product node label (GPU feature discovery)
    resource_name: str = "nvidia.com/gpu"


class AutoscalingSpec(SpecModel):
    # hpa: a HorizontalPodAutoscaler on the Deployment, through prometheus-adapter; keda: a KEDA
    # ScaledObject on the ModelDeployment's scale subresource, querying Prometheus itself.
    provider: Literal["hpa", "keda"] = "hpa"
    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(ge=1)
    # Requests the router holds for the model (running on its engines) per replica.
    target_pending_requests: int = Field(default=8, ge=1)
    # A Pods metric of the engine's own queue; unset: nv_trt_llm_waiting_requests for tensorrtllm,
    # none for python (its requests are all the router's).
    pending_requests_metric: str | None = Field(default=None, min_length=1)
    # Requests waiting in the engine's queue per replica (tensorrtllm: not yet scheduled in a batch).
    target_waiting_requests: int = Field(default=1, ge=1)
    scale_down_stabilization_seconds: int = Field(default=300, ge=0)
    # With min_replicas 0: idle this long (no request waiting or running for the model id) before the
    # operator scales the ModelDeployment to zero. The CRD asks for at least 30; the operator takes 1.
    scale_to_zero_after_seconds: int = Field(default=300, ge=1)

    @property
    def scales_from_zero(self) -> bool:
        return self.min_replicas == 0

    @field_validator("pending_requests_metric")
    @classmethod
    def _former_default_is_unset(cls, metric: str | None) -> str | None:
        return None if metric == LEGACY_PENDING_METRIC else metric

    @model_validator(mode="after")
    def _min_not_above_max(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"minReplicas ({self.min_replicas}) is above maxReplicas ({self.max_replicas})")
        return self


class TrafficSpec(SpecModel):
    # Relative share of the model id's traffic among its ModelDeployments with a ready replica.
    weight: int = Field(default=100, ge=0)


class TritonSpec(SpecModel):
    image: str = Field(min_length=1)
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    model_name: str | None = Field(default=None, pattern=_TRITON_MODEL_NAME.pattern)
    # Unset: 64 for tensorrtllm (in-flight batching); 0 for python (the model batches itself, if at all).
    max_batch_size: int | None = Field(default=None, ge=0)
    kv_cache_free_gpu_mem_fraction: float = Field(default=0.9, gt=0, le=1)
    # Unset: true for chat models (tokens stream as they are produced), false for embedding and image.
    decoupled: bool | None = None
    max_queue_delay_microseconds: int = Field(default=0, ge=0)
    instance_count: int = Field(default=1, ge=1)
    startup_timeout_seconds: int = Field(default=1200, ge=30)
    read_only_root_filesystem: bool = True
    shm_size: str | int = "2Gi"
    # python backend: the model's version directory (holding model.py) inside the Triton image.
    # Unset: the model source carries it as 1/model.py.
    model_code_dir: str | None = Field(default=None, pattern=r"^/.+")
    parameters: dict[str, str] = Field(default_factory=dict)
    extra_args: list[str] = Field(default_factory=list)


class ModelDeploymentSpec(SpecModel):
    model: ModelSpec
    # Other names clients may send for the model (published as ModelRecord.aliases).
    aliases: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(default_factory=list, max_length=32)
    backend: Backend
    triton: TritonSpec
    source: SourceSpec
    cache: CacheSpec = Field(default_factory=CacheSpec)
    engine: EngineSpec = Field(default_factory=EngineSpec)
    gpu: GpuSpec = Field(default_factory=GpuSpec)
    replicas: int = Field(default=1, ge=0)
    autoscaling: AutoscalingSpec | None = None
    traffic: TrafficSpec = Field(default_factory=TrafficSpec)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, Any]] = Field(default_factory=list)
    affinity: dict[str, Any] = Field(default_factory=dict)
    runtime_class_name: str | None = Field(default=None, pattern=_DNS_1123_SUBDOMAIN)
    priority_class_name: str | None = Field(default=None, pattern=_DNS_1123_SUBDOMAIN)
    # Triton's pods get no API token either way; the account carries workload identity (IRSA, GKE
    # Workload Identity) for the fetcher's object-store access.
    service_account_name: str | None = Field(default=None, pattern=_DNS_1123_SUBDOMAIN)
    # CPU and memory of the Triton container; unset requests get DEFAULT_TRITON_REQUESTS.
    resources: dict[str, dict[str, str | int]] = Field(default_factory=dict)
    image_pull_secrets: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _coherent(self) -> ModelDeploymentSpec:
        if self.backend == "tensorrtllm":
            if self.model.kind != "chat":
                raise ValueError(f"backend tensorrtllm serves chat models only, not kind {self.model.kind}")
            if self.gpu.count < 1:
                raise ValueError("backend tensorrtllm needs gpu.count of at least 1")
            if self.triton.max_batch_size == 0:
                raise ValueError("backend tensorrtllm needs triton.maxBatchSize of at least 1")
            if self.source.image is not None:
                raise ValueError("backend tensorrtllm cannot take source.image: the fetcher checks the engine files")
            tp = self.engine.tensor_parallel_size
            if tp is not None and tp != self.gpu.count:
                raise ValueError(
                    f"engine.tensorParallelSize ({tp}) must equal gpu.count ({self.gpu.count}): "
                    "one engine spans every GPU of a replica"
                )
            if self.engine.mode == "build" and not self.gpu.product:
                raise ValueError(
                    "engine.mode build needs gpu.product: an engine is built for one GPU model "
                    "(or set engine.mode prebuilt)"
                )
        if self.model.kind != "image" and self.model.context_length is None:
            raise ValueError(f"model.contextLength is required for {self.model.kind} models")
        registry_key(self.model.id)  # raises ValueError with the reason
        return self

    @property
    def triton_model_name(self) -> str:
        if self.triton.model_name:
            return self.triton.model_name
        if self.backend == "tensorrtllm":
            # Our BLS model in front of preprocessing -> tensorrt_llm -> postprocessing (model_repository.py).
            return TRTLLM_CHAT_MODEL
        return re.sub(r"[^a-z0-9_-]+", "-", self.model.id.rsplit("/", 1)[-1].lower()).strip("-")

    @property
    def scales_from_zero(self) -> bool:
        """Autoscaled with minReplicas 0: scaled to zero when idle, woken by a held request."""
        return self.autoscaling is not None and self.autoscaling.scales_from_zero

    @property
    def builds_engine(self) -> bool:
        return self.backend == "tensorrtllm" and self.engine.mode == "build"

    @property
    def tensor_parallel_size(self) -> int:
        return self.engine.tensor_parallel_size or max(self.gpu.count, 1)

    @property
    def max_batch_size(self) -> int:
        if self.triton.max_batch_size is not None:
            return self.triton.max_batch_size
        return 64 if self.backend == "tensorrtllm" else 0

    @property
    def decoupled(self) -> bool:
        return self.triton.decoupled if self.triton.decoupled is not None else self.model.kind == "chat"

    @property
    def context_length(self) -> int:
        # Image models have no token context the gateway checks; 512 is FLUX's prompt limit.
        return self.model.context_length or 512

    @property
    def owned_by(self) -> str:
        return self.model.owned_by or (self.model.id.split("/", 1)[0].lower() if "/" in self.model.id else "lexora")


class InvalidSpec(ValueError):
    """A spec that can never work as written; the message says which field and why."""


def parse_spec(name: str, spec: dict[str, Any]) -> ModelDeploymentSpec:
    """Parse and check a ModelDeployment; raise InvalidSpec with every problem on one line."""
    problems: list[str] = []
    if len(name) > 63 or not _DNS_1035.match(name):
        problems.append(
            f"metadata.name {name!r} must be a DNS-1035 label of at most 63 characters (it names the Service)"
        )
    try:
        parsed = ModelDeploymentSpec.model_validate(spec)
    except ValidationError as exc:
        problems.extend(_describe(error) for error in exc.errors())
        raise InvalidSpec("; ".join(problems)) from None
    if problems:
        raise InvalidSpec("; ".join(problems))
    return parsed


def _describe(error: Any) -> str:
    where = "spec." + ".".join(str(part) for part in error["loc"]) if error["loc"] else "spec"
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}"


def _snake(camel: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), camel)
