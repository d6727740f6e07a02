"""Image inputs of chat requests, before dispatch. Pure: no I/O.

Both protocols' image content (OpenAI `image_url` parts, Anthropic `image` blocks; read by each
protocol's translation) becomes a `PendingImage`: where it stands (the turn, a character offset in
the turn's text, the request field that holds it) and what the client gave (base64 data with a
declared media type, or an https URL).
`check` validates everything that needs no network: the count, the URL's form, and inline data
(strict base64, the decoded size, the format by its magic bytes, agreement with the declared type).
`require_vision` refuses images for a model without the "vision" capability. URLs are fetched
afterwards by the I/O side (lexora_gateway.chat.vision, lexora_gateway.chat.safe_fetch) and checked
by the same `validated_type`; `attach` then puts the images on their turns, where they travel to
the engine.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from dataclasses import dataclass

from lexora_contracts.errors import InvalidRequest
from lexora_contracts.messages import ChatTurn, ImageInput
from lexora_contracts.registry import ModelRecord

VISION = "vision"  # the ModelRecord capability that admits image input
DEFAULT_MAX_BYTES = 20 * 1024 * 1024  # 20 MiB decoded, per image
DEFAULT_MAX_IMAGES = 8  # per request
# What one image may add to the prompt, for the credit hold (an upper bound, never billed): the most
# a common open vision model spends on one image at its default settings, Qwen2-VL / Qwen2.5-VL's
# 12,845,056 max pixels / (28 x 28) = 16,384 tokens. Llama 3.2 Vision spends at most 4 tiles x
# 1,601 = 6,404, Claude about 1,600. The engine's own count is what is billed.
IMAGE_PROMPT_TOKENS = 16_384

FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/gif": "GIF", "image/webp": "WebP"}
_TYPE_ALIASES = {"image/jpg": "image/jpeg"}
SNIFF_BYTES = 12  # enough of the start of a file to tell the four formats apart
_DETAILS = ("auto", "low", "high")
_WHITESPACE = re.compile(rb"\s+")
_SUPPORTED = "PNG, JPEG, GIF or WebP"


def sniff(data: bytes) -> str | None:
    """The image format the bytes start with (PNG, JPEG, GIF, WebP), as a media type; else None."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = DEFAULT_MAX_BYTES  # decoded size of one image
    max_images: int = DEFAULT_MAX_IMAGES  # images in one request


@dataclass
class PendingImage:
    """One image of a request, from the client's reference to the checked image. A request's images
    are listed in the order the engine reads them (turn by turn)."""

    param: str  # the field holding the data or URL, e.g. messages[0].content[1].image_url.url
    offset: int  # where in its turn's text the image stands (a character index)
    detail: str = "auto"
    url: str | None = None  # an https URL, fetched only once the model is known to take images
    data: str | None = None  # base64, as sent
    declared_type: str | None = None  # the media type the client declared, if any
    type_param: str | None = None  # the field holding the declared media type (Anthropic's source.media_type)
    detail_param: str | None = None
    turn: ChatTurn | None = None  # the turn it belongs to, set when the turn is made
    image: ImageInput | None = None  # the checked image, once known
    problem: str | None = None  # why it cannot be used, found while reading it (said by check())

    def size_hint(self) -> int:
        """Base64 characters this image adds to the job sent over NATS."""
        return len(self.image.data) if self.image else len(self.data or "")


def bind(found: list[PendingImage], turn: ChatTurn, into: list[PendingImage]) -> ChatTurn:
    """The images of one turn, found while reading its content: tie them to the turn, in order."""
    for image in found:
        image.turn = turn
    into.extend(found)
    return turn


# ---- checks ----------------------------------------------------------------------------------
def check(images: list[PendingImage], limits: ImageLimits) -> None:
    """Everything that needs no network, image by image: the count, URLs' form, inline data."""
    if len(images) > limits.max_images:
        raise InvalidRequest(
            f"This request has {len(images)} images; at most {limits.max_images} are accepted per request",
            param=images[limits.max_images].param,
        )
    for image in images:
        if image.detail not in _DETAILS:
            raise InvalidRequest(
                f"Invalid image detail {image.detail!r}: use 'auto', 'low' or 'high'",
                param=image.detail_param or image.param,
            )
        if image.problem:
            raise InvalidRequest(image.problem, param=image.param)
        if image.url is not None:
            _check_url(image)
        else:
            _check_declared_type(image)
            data, canonical = decode_base64(image.data or "", image.param, limits.max_bytes)
            media_type = validated_type(data, image.declared_type, image.param, image.type_param)
            image.image = ImageInput(media_type=media_type, data=canonical, detail=image.detail)


def _check_url(image: PendingImage) -> None:
    url = image.url or ""
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "http":
        raise InvalidRequest("Image URLs must use https; plain http is not fetched", param=image.param)
    if scheme != "https":
        raise InvalidRequest(
            "An image must be a base64 data URI (data:image/png;base64,...) or an https URL", param=image.param
        )
    if len(url) > 8192:
        raise InvalidRequest("The image URL is longer than 8192 characters", param=image.param)


def _check_declared_type(image: PendingImage) -> None:
    declared = image.declared_type
    if declared is None:
        return
    declared = image.declared_type = _TYPE_ALIASES.get(declared, declared)
    if declared not in FORMATS:
        raise InvalidRequest(
            f"Unsupported image type {declared!r}: images must be {_SUPPORTED} "
            "(image/png, image/jpeg, image/gif, image/webp)",
            param=image.type_param or image.param,
        )


def decoded_size(text: str) -> int:
    """The size base64 text decodes to, from its length alone (exact for base64 without line breaks)."""
    return len(text.rstrip("=")) * 3 // 4


def decode_base64(text: str, param: str, max_bytes: int) -> tuple[bytes, str]:
    """Strict base64 (standard alphabet, padded; line breaks tolerated) and its canonical text.
    Data far past max_bytes is refused from its length, before anything is decoded."""
    if decoded_size(text) > max_bytes * 1.03 + 3:  # line breaks add at most 2 characters in 76
        size = decoded_size(text)
        raise InvalidRequest(
            f"The image is {size_text(size)} decoded; the limit is {size_text(max_bytes)}", param=param
        )
    raw = text.encode("ascii", "replace")
    canonical = text
    try:
        data = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        try:
            data = base64.b64decode(_WHITESPACE.sub(b"", raw), validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequest(
                "The image data is not valid base64 (standard alphabet, with padding)", param=param
            ) from None
        canonical = _b64(data)
    if not data:
        raise InvalidRequest("The image data is empty", param=param)
    if len(data) > max_bytes:
        raise InvalidRequest(
            f"The image is {size_text(len(data))} decoded; the limit is {size_text(max_bytes)}", param=param
        )
    return data, canonical


def validated_type(data: bytes, declared: str | None, param: str, type_param: str | None = None) -> str:
    """The image's media type by its magic bytes; the declared type, when given, must agree."""
    actual = sniff(data[:SNIFF_BYTES])
    if actual is None:
        raise InvalidRequest(f"The data is not a {_SUPPORTED} image (judged by its first bytes)", param=param)
    declared = _TYPE_ALIASES.get(declared, declared) if declared else None
    if declared is not None and declared != actual:
        raise InvalidRequest(
            f"The image is declared as {declared}, but its bytes are a {FORMATS[actual]} image: "
            f"declare {actual}, or send {FORMATS.get(declared, declared)} data",
            param=type_param or param,
        )
    return actual


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def require_vision(images: list[PendingImage], model: ModelRecord) -> None:
    """Refuse images for a model that cannot see them, before any fetch or credit hold."""
    if images and VISION not in model.capabilities:
        raise InvalidRequest(
            f"The model '{model.id}' does not accept image input; send text only, or use a model "
            "whose capabilities (GET /v1/models) include 'vision'",
            param=images[0].param,
        )


def fetched(image: PendingImage, data: bytes) -> None:
    """A URL image's bytes as fetched: checked like inline data (the type by its magic bytes)."""
    media_type = validated_type(data, None, image.param)
    image.image = ImageInput(media_type=media_type, data=_b64(data), detail=image.detail)


def attach(images: Iterable[PendingImage]) -> None:
    """Put the checked images on their turns, in order, so they travel with the job."""
    for image in images:
        assert image.turn is not None and image.image is not None
        checked = image.image.model_copy(update={"offset": min(image.offset, len(image.turn.content))})
        image.turn.images = [*(image.turn.images or []), checked]


def payload_check(images: list[PendingImage], max_payload: int, reserve: int = 64 * 1024) -> None:
    """The job (images as base64) must fit one NATS message; say so rather than fail at publish."""
    total = sum(image.size_hint() for image in images)
    if images and total + reserve > max_payload:
        raise InvalidRequest(
            f"The images in this request come to {size_text(total)} as base64; this installation carries at most "
            f"{size_text(max(max_payload - reserve, 0))} of images per request (its NATS max_payload)",
            param=images[-1].param,
        )


def count(turns: Iterable[ChatTurn]) -> int:
    return sum(len(turn.images or ()) for turn in turns)


def size_text(size: int) -> str:
    """A size for an error message: exact bytes, with MiB for large ones."""
    return f"{size / (1024 * 1024):.2f} MiB ({size} bytes)" if size >= 1024 * 1024 else f"{size} bytes"
