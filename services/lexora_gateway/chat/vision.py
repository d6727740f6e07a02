"""A request's images, between translation and the credit hold: checked, gated, fetched, attached.

Order matters and is the contract (docs/architecture.md, "Image inputs"):
1. what needs no network (the count, URL form, inline data) is checked, so a malformed image is
   named whatever the model;
2. a model without the "vision" capability refuses images, before anything is fetched;
3. URLs are fetched (lexora_gateway.chat.safe_fetch), concurrently, and checked like inline data;
4. the images are put on their turns, and must fit one NATS message.
Every refusal is an InvalidRequest (400) naming the field; the caller records it at cost 0.
"""

from __future__ import annotations

import asyncio

from lexora_contracts.errors import InvalidRequest
from lexora_contracts.registry import ModelRecord
from lexora_gateway.chat import image_inputs
from lexora_gateway.chat.image_inputs import ImageLimits, PendingImage
from lexora_gateway.chat.safe_fetch import FetchRefused, FetchTimeout, SafeFetcher
from lexora_gateway.settings import GatewaySettings


def limits_of(settings: GatewaySettings) -> ImageLimits:
    return ImageLimits(max_bytes=settings.image_max_bytes, max_images=settings.images_per_request)


def fetcher_for(settings: GatewaySettings) -> SafeFetcher:
    """The production fetcher: public addresses only, the system resolver, the default TLS roots."""
    return SafeFetcher(
        max_bytes=settings.image_max_bytes,
        connect_timeout_s=settings.image_fetch_connect_timeout_s,
        total_timeout_s=settings.image_fetch_timeout_s,
    )


async def prepare(
    images: list[PendingImage],
    model: ModelRecord,
    settings: GatewaySettings,
    max_payload: int,
    fetcher: SafeFetcher | None = None,
) -> None:
    if not images:
        return
    image_inputs.check(images, limits_of(settings))
    image_inputs.require_vision(images, model)
    remote = [image for image in images if image.image is None]
    if remote:
        await _fetch_all(remote, fetcher or fetcher_for(settings))
    image_inputs.payload_check(images, max_payload)
    image_inputs.attach(images)


async def _fetch_all(images: list[PendingImage], fetcher: SafeFetcher) -> None:
    try:
        async with asyncio.TaskGroup() as group:
            for image in images:
                group.create_task(_fetch(image, fetcher))
    except* InvalidRequest as failed:
        raise failed.exceptions[0] from None


async def _fetch(image: PendingImage, fetcher: SafeFetcher) -> None:
    assert image.url is not None
    try:
        fetched = await fetcher.fetch_image(image.url)
    except FetchTimeout as exc:
        raise InvalidRequest(f"Timed out fetching the image URL: {exc}", param=image.param) from None
    except FetchRefused as exc:
        raise InvalidRequest(f"Could not fetch the image URL: {exc}", param=image.param) from None
    image_inputs.fetched(image, fetched.data)
