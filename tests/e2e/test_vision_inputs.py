"""Image inputs through the real OpenAI and Anthropic SDKs against the whole platform.

No vision model is served locally (none is obtainable offline), so what is asserted is the edge's
behaviour, all of it before dispatch: images to the local text model are refused with the right
envelope and field, malformed images are named, and nothing is charged. The SSRF rules are
checked end to end on a registry record that declares "vision" but has no engine behind it (its
only endpoint is a closed port): every request to it here is refused at the gateway before a
router could be asked, which is the point; no test presents a model that ignores images as one
that sees them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import anthropic
import openai
import pytest

from lexora_dev import stack
from lexora_dev.catalog import LOCAL_CHAT_MODEL
from support.https_server import HttpsServer, https_server
from support.images import GIF, JPEG, b64, data_uri, png
from support.stack import Account, RunningStack

VISION_UNSERVED = "test/vision-unserved"
CREDIT = 5_000_000
PNG = png()


def sdk(lexora: RunningStack, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=lexora.base_url, api_key=api_key, max_retries=0, timeout=120)


def claude(lexora: RunningStack, api_key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=lexora.base_url.removesuffix("/v1"), api_key=api_key, max_retries=0)


def ask(model: str, *parts: dict) -> dict:
    return {
        "model": model,
        "max_tokens": 8,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "What is in this image?"}, *parts]}],
    }


def image_url(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


def refused_by_openai(lexora: RunningStack, account: Account, request: dict) -> dict:
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(lexora, account.api_key).chat.completions.create(**request)
    assert caught.value.status_code == 400
    body = caught.value.body
    assert isinstance(body, dict)
    assert (body["type"], body["code"]) == ("invalid_request_error", "invalid_request")
    assert set(body) == {"message", "type", "param", "code"}
    return body


def assert_not_charged(lexora: RunningStack, account: Account, refusals: int) -> None:
    balance = lexora.settled_balance(account.account_id)
    assert (balance.balance_micro, balance.held_micro) == (CREDIT, 0)
    rows = lexora.wait_for_usage_rows(account.account_id, refusals)
    assert [(r["status_code"], r["error_type"], r["cost_pico"]) for r in rows] == [
        (400, "invalid_request_error", 0)
    ] * refusals, "each refusal is on record, at cost 0"
    assert lexora.ledger_charges(account.account_id) == []
    lexora.assert_ledger_consistent(account.account_id)


@pytest.fixture(scope="module")
def server() -> Iterator[HttpsServer]:
    with https_server() as running:
        yield running


@pytest.fixture(scope="module")
def vision_unserved(lexora: RunningStack) -> str:
    """A model that declares vision, for requests refused before dispatch. Its endpoint is the local
    SmolLM2, which reads no images: a request that reached it would show it. (An unreachable
    endpoint would not do: the routers' probes find it, and the model is answered 503, degraded.)"""
    record = lexora.registry_record(LOCAL_CHAT_MODEL).model_copy(
        update={"id": VISION_UNSERVED, "aliases": [], "capabilities": ["chat", "vision"]}
    )
    stack.publish_catalog(lexora.nats_url, [record])
    client = sdk(lexora, lexora.create_account().api_key)
    deadline = time.monotonic() + 10
    while VISION_UNSERVED not in {m.id for m in client.models.list()}:
        assert time.monotonic() < deadline, "the gateway never saw the record"
        time.sleep(0.1)
    return VISION_UNSERVED


# ---- a model without vision ------------------------------------------------------------------------
def test_an_image_to_a_text_model_is_refused_and_not_charged(lexora: RunningStack) -> None:
    account = lexora.create_account(CREDIT)
    body = refused_by_openai(lexora, account, ask(LOCAL_CHAT_MODEL, image_url(data_uri(PNG))))
    assert body["param"] == "messages[0].content[1].image_url.url"
    assert f"'{LOCAL_CHAT_MODEL}' does not accept image input" in body["message"]
    assert_not_charged(lexora, account, 1)


def test_an_image_block_to_a_text_model_is_refused_in_anthropic_s_envelope(lexora: RunningStack) -> None:
    account = lexora.create_account(CREDIT)
    block = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64(PNG)}}
    with pytest.raises(anthropic.BadRequestError) as caught:
        claude(lexora, account.api_key).messages.create(
            model=LOCAL_CHAT_MODEL,
            max_tokens=8,
            messages=[{"role": "user", "content": [block, {"type": "text", "text": "What is this?"}]}],
        )
    assert caught.value.status_code == 400
    assert caught.value.body["type"] == "error"
    error = caught.value.body["error"]
    assert error["type"] == "invalid_request_error" and "does not accept image input" in error["message"]
    with pytest.raises(anthropic.BadRequestError) as counted:
        claude(lexora, account.api_key).messages.count_tokens(
            model=LOCAL_CHAT_MODEL, messages=[{"role": "user", "content": [block]}]
        )
    assert "does not accept image input" in counted.value.body["error"]["message"]
    assert_not_charged(lexora, account, 1)  # count_tokens is never billed nor recorded


def test_an_image_url_to_a_text_model_is_refused_before_anything_is_fetched(
    lexora: RunningStack, server: HttpsServer
) -> None:
    account = lexora.create_account(CREDIT)
    before = server.seen.connections
    body = refused_by_openai(lexora, account, ask(LOCAL_CHAT_MODEL, image_url(server.url("/png", "127.0.0.1"))))
    assert "does not accept image input" in body["message"]
    assert server.seen.connections == before
    assert_not_charged(lexora, account, 1)


# ---- malformed images, named whatever the model ------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("data:image/png;base64,this is not base64!", "not valid base64"),
        (data_uri(JPEG, "image/png"), "declared as image/png, but its bytes are a JPEG image"),
        (data_uri(b"%PDF-1.7 definitely not a picture"), "not a PNG, JPEG, GIF or WebP image"),
        ("data:image/svg+xml;base64," + b64(b"<svg/>"), "Unsupported image type 'image/svg+xml'"),
        ("http://images.example/cat.png", "must use https"),
    ],
)
def test_malformed_images_are_400s_naming_the_field(lexora: RunningStack, url: str, words: str) -> None:
    account = lexora.create_account(CREDIT)
    body = refused_by_openai(lexora, account, ask(LOCAL_CHAT_MODEL, image_url(url)))
    assert body["param"] == "messages[0].content[1].image_url.url"
    assert words in body["message"]
    assert_not_charged(lexora, account, 1)


def test_an_image_over_20_mib_is_refused(lexora: RunningStack) -> None:
    account = lexora.create_account(CREDIT)
    big = data_uri(png(pad_to=20 * 1024 * 1024 + 1))
    body = refused_by_openai(lexora, account, ask(LOCAL_CHAT_MODEL, image_url(big)))
    assert body["param"] == "messages[0].content[1].image_url.url"
    assert "the limit is 20.00 MiB" in body["message"]
    assert_not_charged(lexora, account, 1)


def test_an_anthropic_media_type_mismatch_names_the_block(lexora: RunningStack) -> None:
    account = lexora.create_account(CREDIT)
    block = {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": b64(GIF)}}
    with pytest.raises(anthropic.BadRequestError) as caught:
        claude(lexora, account.api_key).messages.create(
            model=LOCAL_CHAT_MODEL, max_tokens=8, messages=[{"role": "user", "content": [block]}]
        )
    assert "declared as image/jpeg, but its bytes are a GIF image" in caught.value.body["error"]["message"]
    assert_not_charged(lexora, account, 1)


# ---- URL rules, on a record that declares vision ------------------------------------------------------
def test_a_loopback_url_is_refused_by_the_ssrf_policy_without_a_connection(
    lexora: RunningStack, server: HttpsServer, vision_unserved: str
) -> None:
    account = lexora.create_account(CREDIT)
    before = server.seen.connections
    for host in ("127.0.0.1", "localhost", "[::ffff:127.0.0.1]"):
        body = refused_by_openai(lexora, account, ask(vision_unserved, image_url(server.url("/png", host))))
        assert body["param"] == "messages[0].content[1].image_url.url"
        assert body["message"].startswith("Could not fetch the image URL:")
        assert "only public" in body["message"]
    assert server.seen.connections == before, "the gateway never connected"
    assert_not_charged(lexora, account, 3)


def test_a_metadata_url_in_an_anthropic_url_source_is_refused(lexora: RunningStack, vision_unserved: str) -> None:
    account = lexora.create_account(CREDIT)
    block = {"type": "image", "source": {"type": "url", "url": "https://169.254.169.254/latest/meta-data/"}}
    with pytest.raises(anthropic.BadRequestError) as caught:
        claude(lexora, account.api_key).messages.create(
            model=vision_unserved, max_tokens=8, messages=[{"role": "user", "content": [block]}]
        )
    assert "cloud metadata address" in caught.value.body["error"]["message"]
    assert_not_charged(lexora, account, 1)


def test_more_images_than_the_limit_are_refused(lexora: RunningStack, vision_unserved: str) -> None:
    account = lexora.create_account(CREDIT)
    parts = [image_url(data_uri(PNG)) for _ in range(9)]
    body = refused_by_openai(lexora, account, ask(vision_unserved, *parts))
    assert body["param"] == "messages[0].content[9].image_url.url"
    assert "at most 8" in body["message"]
    assert_not_charged(lexora, account, 1)


def test_images_that_cannot_fit_one_nats_message_are_refused(lexora: RunningStack, vision_unserved: str) -> None:
    # The local nats-server keeps the default max_payload of 1 MiB (the chart sets 8 MiB).
    account = lexora.create_account(CREDIT)
    body = refused_by_openai(lexora, account, ask(vision_unserved, image_url(data_uri(png(pad_to=1024 * 1024)))))
    assert "max_payload" in body["message"]
    assert_not_charged(lexora, account, 1)
