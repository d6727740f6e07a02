"""Image generation jobs: an image request as a workload for lexora_gateway.admission.admit, and the
credit hold, the router request and the response body, as pure functions of the request and the
price."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from lexora_contracts import subjects
from lexora_contracts.messages import ImageJob
from lexora_contracts.money import ceil_micro, image_cost_pico, pico_to_usd
from lexora_contracts.registry import ModelKind, ModelRecord, Pricing
from lexora_gateway.media.schemas import ImageGenerationRequest

if TYPE_CHECKING:
    from lexora_gateway.state import GatewayState

ENDPOINT = "/v1/images/generations"


@dataclass(frozen=True)
class ImageGeneration:
    """POST /v1/images/generations as a job: one image, held at one image's price."""

    kind: ClassVar[ModelKind] = "image"
    subject: ClassVar[str] = subjects.ROUTER_IMAGE_CREATE
    endpoint: ClassVar[str] = ENDPOINT
    stream: ClassVar[bool] = False

    body: ImageGenerationRequest

    @property
    def model(self) -> str:
        return self.body.model

    async def fit(self, model: ModelRecord, state: GatewayState) -> ImageGeneration:
        return self

    def reservation_micro(self, model: ModelRecord, pricing: Pricing) -> int:
        return image_reservation_micro(pricing)

    def engine_request(self, model: ModelRecord, header: dict[str, Any]) -> ImageJob:
        return image_job(self.body, header)


def image_reservation_micro(pricing: Pricing) -> int:
    return 0 if pricing.is_free else ceil_micro(image_cost_pico(1, pricing.image_micro)) + 1


def image_job(body: ImageGenerationRequest, header: dict[str, Any]) -> ImageJob:
    return ImageJob(
        prompt=body.prompt,
        width=body.width,
        height=body.height,
        num_inference_steps=body.num_inference_steps,
        guidance_scale=body.guidance_scale,
        seed=body.seed,
        **header,
    )


def image_body(body: ImageGenerationRequest, png: bytes, created: int, images: int, cost_pico: int) -> dict[str, Any]:
    return {
        "created": created,
        "data": [{"b64_json": base64.b64encode(png).decode()}],
        "output_format": "png",
        "size": f"{body.width}x{body.height}",
        "usage": {"images": images, "cost": pico_to_usd(cost_pico)},
    }
