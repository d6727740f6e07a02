"""Image generation jobs, protocol-free: the credit hold, the router request and the response body,
as pure functions of the request and the price."""

from __future__ import annotations

import base64
from typing import Any

from lexora_contracts.messages import ImageJob
from lexora_contracts.money import ceil_micro, image_cost_pico, pico_to_usd
from lexora_contracts.registry import Pricing
from lexora_gateway.media.schemas import ImageGenerationRequest


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
