"""Image inputs, pure side: parsing both protocols' image content, checking inline data, gating on
the model's vision capability, the credit-hold estimate, and what reaches the engine."""

from __future__ import annotations

import base64
import json

import pytest

from lexora_contracts.errors import InvalidRequest
from lexora_contracts.messages import Identity
from lexora_contracts.registry import Endpoint, ModelRecord, Pricing
from lexora_gateway.admission.admit import JobSpec, job_header
from lexora_gateway.anthropic import translation as anthropic_translation
from lexora_gateway.anthropic.schemas import MessagesRequest
from lexora_gateway.chat import image_inputs, jobs, vision
from lexora_gateway.chat.image_inputs import ImageLimits
from lexora_gateway.chat.safe_fetch import FetchedImage, FetchRefused, FetchTimeout
from lexora_gateway.openai import translation as openai_translation
from lexora_gateway.openai.schemas import ChatCompletionRequest
from lexora_gateway.settings import GatewaySettings
from lexora_router.triton_engine import build_inputs
from support.images import GIF, JPEG, WEBP, b64, data_uri, png

PNG = png()
TEXT_MODEL = ModelRecord(
    id="text-only",
    triton_model="t",
    context_length=4096,
    pricing=Pricing(input_micro_per_mtok=40_000, output_micro_per_mtok=40_000),
    capabilities=["chat", "tools"],
    endpoints=[Endpoint(name="a", grpc_address="127.0.0.1:1")],
)
VISION_MODEL = TEXT_MODEL.model_copy(update={"id": "sees", "capabilities": ["chat", "vision"]})
LIMITS = ImageLimits()


def openai_job(*parts: dict, role: str = "user", **extra: object) -> jobs.ChatJob:
    content = [{"type": "text", "text": "What is this?"}, *parts]
    body = {"model": "m", "messages": [{"role": role, "content": content}], **extra}
    return openai_translation.to_job(ChatCompletionRequest.model_validate(body))


def image_part(url: str, **image_url: object) -> dict:
    return {"type": "image_url", "image_url": {"url": url, **image_url}}


def anthropic_job(*blocks: dict) -> jobs.ChatJob:
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": list(blocks)}]}
    return anthropic_translation.to_job(MessagesRequest.model_validate(body))


def image_block(data: bytes | str, media_type: str = "image/png") -> dict:
    encoded = data if isinstance(data, str) else b64(data)
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": encoded}}


def refusal(job: jobs.ChatJob, limits: ImageLimits = LIMITS) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        image_inputs.check(job.images, limits)
    return caught.value


# ---- formats ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "media_type"),
    [(PNG, "image/png"), (JPEG, "image/jpeg"), (GIF, "image/gif"), (WEBP, "image/webp"), (b"<svg/>", None)],
)
def test_formats_are_told_by_their_magic_bytes(data: bytes, media_type: str | None) -> None:
    assert image_inputs.sniff(data) == media_type


def test_riff_files_other_than_webp_are_not_images() -> None:
    assert image_inputs.sniff(b"RIFF\x00\x00\x00\x00WAVEfmt ") is None


# ---- OpenAI image_url parts -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("data", "media_type"), [(PNG, "image/png"), (JPEG, "image/jpeg"), (GIF, "image/gif"), (WEBP, "image/webp")]
)
def test_a_data_uri_of_each_format_is_accepted(data: bytes, media_type: str) -> None:
    job = openai_job(image_part(data_uri(data, media_type), detail="low"))
    image_inputs.check(job.images, LIMITS)
    [image] = job.images
    assert image.image is not None
    assert (image.image.media_type, image.image.detail) == (media_type, "low")
    assert base64.b64decode(image.image.data) == data


def test_images_keep_their_place_among_the_text_parts() -> None:
    body = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "Describe images."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "First "},
                    image_part(data_uri(PNG)),
                    {"type": "text", "text": "then "},
                    image_part(data_uri(GIF, "image/gif")),
                ],
            },
        ],
    }
    job = openai_translation.to_job(ChatCompletionRequest.model_validate(body))
    assert [t.content for t in job.messages] == ["Describe images.", "First then "]
    assert [(i.param, i.offset) for i in job.images] == [
        ("messages[1].content[1].image_url.url", 6),
        ("messages[1].content[3].image_url.url", 11),
    ]
    image_inputs.check(job.images, LIMITS)
    image_inputs.attach(job.images)
    parts = job.messages[1].engine_message()["content"]
    assert [p["type"] for p in parts] == ["text", "image_url", "text", "image_url"]
    assert parts[0]["text"] == "First " and parts[2]["text"] == "then "
    assert parts[1]["image_url"] == {"url": data_uri(PNG), "detail": "auto"}
    assert parts[3]["image_url"]["url"].startswith("data:image/gif;base64,")
    assert job.messages[0].engine_message() == {"role": "system", "content": "Describe images."}


def test_the_declared_type_must_agree_with_the_bytes() -> None:
    error = refusal(openai_job(image_part(data_uri(JPEG, "image/png"))))
    assert error.param == "messages[0].content[1].image_url.url"
    assert "declared as image/png" in error.message and "JPEG" in error.message


def test_image_jpg_is_taken_as_jpeg() -> None:
    job = openai_job(image_part(data_uri(JPEG, "image/jpg")))
    image_inputs.check(job.images, LIMITS)
    assert job.images[0].image is not None and job.images[0].image.media_type == "image/jpeg"


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("data:image/bmp;base64," + b64(b"BM" + b"\x00" * 40), "Unsupported image type 'image/bmp'"),
        ("data:image/png;base64,***not base64***", "not valid base64"),
        ("data:image/png;base64,", "empty"),
        ("data:image/png," + "%89PNG", "must be base64-encoded"),
        ("data:image/png;base64," + b64(b"GIF89a but lying"), "declared as image/png"),
        ("data:image/png;base64," + b64(b"just some text, long enough"), "not a PNG, JPEG, GIF or WebP image"),
        ("http://images.example/cat.png", "must use https"),
        ("ftp://images.example/cat.png", "base64 data URI"),
        ("cat.png", "base64 data URI"),
    ],
)
def test_malformed_images_are_refused_naming_the_url_field(url: str, words: str) -> None:
    error = refusal(openai_job(image_part(url)))
    assert error.param == "messages[0].content[1].image_url.url"
    assert words in error.message


def test_base64_with_line_breaks_is_accepted_and_sent_on_canonical() -> None:
    wrapped = "\n".join(b64(PNG)[i : i + 76] for i in range(0, len(b64(PNG)), 76))
    job = anthropic_job(image_block(wrapped))
    image_inputs.check(job.images, LIMITS)
    assert job.images[0].image is not None and job.images[0].image.data == b64(PNG)


def test_an_unknown_detail_is_refused_naming_the_detail_field() -> None:
    error = refusal(openai_job(image_part(data_uri(PNG), detail="ultra")))
    assert error.param == "messages[0].content[1].image_url.detail"


def test_an_https_url_waits_to_be_fetched() -> None:
    job = openai_job(image_part("https://images.example/cat.png"))
    image_inputs.check(job.images, LIMITS)
    [image] = job.images
    assert image.url == "https://images.example/cat.png" and image.image is None


@pytest.mark.parametrize("role", ["system", "assistant"])
def test_images_are_accepted_in_user_messages_only(role: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        openai_job(image_part(data_uri(PNG)), role=role)
    assert caught.value.param == "messages[0].content[1]"


# ---- limits ----------------------------------------------------------------------------------
def test_an_image_over_the_size_limit_is_refused() -> None:
    error = refusal(openai_job(image_part(data_uri(png(pad_to=5000)))), ImageLimits(max_bytes=4096))
    assert error.param == "messages[0].content[1].image_url.url"
    assert "limit is 4096 bytes" in error.message


def test_an_image_exactly_at_the_limit_is_accepted() -> None:
    data = png(pad_to=4096)
    job = openai_job(image_part(data_uri(data)))
    image_inputs.check(job.images, ImageLimits(max_bytes=len(data)))


def test_far_too_large_data_is_refused_from_its_length_without_decoding() -> None:
    huge = "A" * (30 * 1024 * 1024)  # 22.5 MiB once decoded; not even a PNG
    error = refusal(anthropic_job(image_block(huge)))
    assert error.param == "messages[0].content[0].source.data"
    assert "limit is 20.00 MiB" in error.message


def test_too_many_images_are_refused_naming_the_first_one_past_the_limit() -> None:
    job = openai_job(*[image_part(data_uri(PNG)) for _ in range(3)])
    error = refusal(job, ImageLimits(max_images=2))
    assert error.param == "messages[0].content[3].image_url.url"
    assert "3 images" in error.message and "at most 2" in error.message


def test_images_must_fit_one_nats_message() -> None:
    job = openai_job(image_part(data_uri(png(pad_to=200_000))))
    image_inputs.check(job.images, LIMITS)
    image_inputs.payload_check(job.images, 8 * 1024 * 1024)
    with pytest.raises(InvalidRequest) as caught:
        image_inputs.payload_check(job.images, 256 * 1024)
    assert "max_payload" in caught.value.message


# ---- Anthropic image blocks -------------------------------------------------------------------
def test_anthropic_base64_and_url_sources() -> None:
    url_block = {"type": "image", "source": {"type": "url", "url": "https://images.example/a.webp"}}
    job = anthropic_job({"type": "text", "text": "Two:"}, image_block(PNG), url_block)
    image_inputs.check(job.images, LIMITS)
    assert [(i.param, i.offset) for i in job.images] == [
        ("messages[0].content[1].source.data", 4),
        ("messages[0].content[2].source.url", 4),
    ]
    assert job.images[0].image is not None and job.images[1].url == "https://images.example/a.webp"


def test_anthropic_media_type_mismatch_names_the_media_type_field() -> None:
    error = refusal(anthropic_job(image_block(GIF, "image/webp")))
    assert error.param == "messages[0].content[0].source.media_type"
    assert "declared as image/webp" in error.message and "GIF" in error.message


@pytest.mark.parametrize(
    ("source", "param"),
    [
        ({"type": "base64", "data": "AAAA"}, "messages[0].content[0].source.media_type"),
        ({"type": "base64", "media_type": "image/png"}, "messages[0].content[0].source.data"),
        ({"type": "url"}, "messages[0].content[0].source.url"),
    ],
)
def test_incomplete_anthropic_sources_are_refused(source: dict, param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        anthropic_job({"type": "image", "source": source})
    assert caught.value.param == param


def test_anthropic_unsupported_media_type() -> None:
    error = refusal(anthropic_job(image_block(PNG, "image/tiff")))
    assert error.param == "messages[0].content[0].source.media_type"


# ---- the model must see ------------------------------------------------------------------------
def test_a_model_without_vision_refuses_images_naming_the_first() -> None:
    job = openai_job(image_part("https://images.example/cat.png"), image_part(data_uri(PNG)))
    with pytest.raises(InvalidRequest) as caught:
        image_inputs.require_vision(job.images, TEXT_MODEL)
    assert caught.value.param == "messages[0].content[1].image_url.url"
    assert "does not accept image input" in caught.value.message and "'vision'" in caught.value.message
    image_inputs.require_vision(job.images, VISION_MODEL)
    image_inputs.require_vision([], TEXT_MODEL)


class RecordingFetcher:
    """Stands in for SafeFetcher in the ordering tests: records calls, answers from a table."""

    def __init__(self, answers: dict[str, bytes | Exception]):
        self.answers = answers
        self.calls: list[str] = []

    async def fetch_image(self, url: str) -> FetchedImage:
        self.calls.append(url)
        answer = self.answers[url]
        if isinstance(answer, Exception):
            raise answer
        return FetchedImage(answer, image_inputs.sniff(answer) or "", url)


SETTINGS = GatewaySettings()


async def test_nothing_is_fetched_for_a_model_that_cannot_see() -> None:
    fetcher = RecordingFetcher({"https://images.example/cat.png": PNG})
    job = openai_job(image_part("https://images.example/cat.png"))
    with pytest.raises(InvalidRequest) as caught:
        await vision.prepare(job.images, TEXT_MODEL, SETTINGS, 8 << 20, fetcher)  # type: ignore[arg-type]
    assert "does not accept image input" in caught.value.message
    assert fetcher.calls == []


async def test_malformed_inline_data_is_named_before_the_model_is_considered() -> None:
    job = openai_job(image_part("data:image/png;base64,%%%"))
    with pytest.raises(InvalidRequest) as caught:
        await vision.prepare(job.images, TEXT_MODEL, SETTINGS, 8 << 20)
    assert "not valid base64" in caught.value.message


async def test_fetched_images_are_checked_and_put_on_their_turn_in_order() -> None:
    fetcher = RecordingFetcher({"https://images.example/a.gif": GIF})
    job = openai_job(image_part("https://images.example/a.gif"), image_part(data_uri(PNG)))
    await vision.prepare(job.images, VISION_MODEL, SETTINGS, 8 << 20, fetcher)  # type: ignore[arg-type]
    assert fetcher.calls == ["https://images.example/a.gif"]
    images = job.messages[0].images or []
    assert [i.media_type for i in images] == ["image/gif", "image/png"]


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (FetchRefused("127.0.0.1, a loopback address"), "Could not fetch the image URL: 127.0.0.1, a loopback"),
        (FetchTimeout("the image URL did not deliver within 20 s"), "Timed out fetching the image URL"),
        (b"<html>not an image</html>", "not a PNG, JPEG, GIF or WebP image"),
    ],
)
async def test_fetch_failures_are_400s_naming_the_field(answer: bytes | Exception, words: str) -> None:
    fetcher = RecordingFetcher({"https://images.example/x": answer})
    job = openai_job(image_part("https://images.example/x"))
    with pytest.raises(InvalidRequest) as caught:
        await vision.prepare(job.images, VISION_MODEL, SETTINGS, 8 << 20, fetcher)  # type: ignore[arg-type]
    assert caught.value.status == 400 and caught.value.type == "invalid_request_error"
    assert caught.value.param == "messages[0].content[1].image_url.url"
    assert words in caught.value.message


# ---- the credit hold and the engine --------------------------------------------------------------
def test_each_image_counts_as_a_fixed_conservative_number_of_prompt_tokens() -> None:
    text_only = openai_translation.to_job(
        ChatCompletionRequest.model_validate(
            {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "What is this?"}]}]}
        )
    )
    two = openai_job(image_part(data_uri(PNG)), image_part(data_uri(GIF, "image/gif")))
    extra = jobs.prompt_token_bound(two, VISION_MODEL) - jobs.prompt_token_bound(text_only, VISION_MODEL)
    assert extra == 2 * image_inputs.IMAGE_PROMPT_TOKENS
    assert jobs.reservation_micro(two, VISION_MODEL, VISION_MODEL.pricing, 16) > jobs.reservation_micro(
        text_only, VISION_MODEL, VISION_MODEL.pricing, 16
    )


def test_images_travel_to_triton_in_the_chat_json() -> None:
    job = openai_job(image_part(data_uri(PNG), detail="high"))
    image_inputs.check(job.images, LIMITS)
    image_inputs.attach(job.images)
    identity = Identity(account_id="a", key_id="k", plan="free")
    request = jobs.generation_request(
        job, VISION_MODEL, 16, job_header(JobSpec(identity, "r", 0.0, job), VISION_MODEL, VISION_MODEL.pricing, 1, 120)
    )
    carried = type(request).model_validate_json(request.model_dump_json())  # as it crosses NATS
    tensors = {name: value for name, _, value in build_inputs(carried)}
    messages = json.loads(tensors["text_input"][0].decode())
    assert tensors["apply_chat_template"].tolist() == [True]
    assert messages == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": data_uri(PNG), "detail": "high"}},
            ],
        }
    ]


def test_text_turns_reach_the_engine_exactly_as_before() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    job = openai_translation.to_job(ChatCompletionRequest.model_validate(body))
    identity = Identity(account_id="a", key_id="k", plan="free")
    request = jobs.generation_request(
        job, TEXT_MODEL, 16, job_header(JobSpec(identity, "r", 0.0, job), TEXT_MODEL, TEXT_MODEL.pricing, 1, 120)
    )
    tensors = {name: value for name, _, value in build_inputs(request)}
    assert json.loads(tensors["text_input"][0].decode()) == [{"role": "user", "content": "hi"}]
