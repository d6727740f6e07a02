"""/v1/images/generations through the OpenAI SDK: the real diffusers FluxPipeline on Triton (a tiny
random-weight FLUX on CPU), a real PNG back, $0.002 charged per image and only on success."""

from __future__ import annotations

import base64
import io

import httpx
import openai
import pytest
from PIL import Image

from lexora_contracts.money import PICO_PER_MICRO
from lexora_dev.catalog import LOCAL_CHAT_MODEL, LOCAL_IMAGE_MODEL
from support.stack import RunningStack

IMAGE_MICRO = 2_000  # $0.002
START_PICO = 5_000_000 * PICO_PER_MICRO
FAST = {"num_inference_steps": 2}


def sdk(lexora: RunningStack, api_key: str, base_url: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url or lexora.base_url, api_key=api_key, max_retries=0, timeout=120)


def png(b64: str) -> Image.Image:
    data = base64.b64decode(b64)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def post(lexora: RunningStack, api_key: str, body: dict) -> httpx.Response:
    return httpx.post(
        f"{lexora.base_url}/images/generations",
        json=body,
        headers={"authorization": f"Bearer {api_key}"},
        timeout=120,
    )


def test_an_image_comes_back_as_a_png_of_the_size_asked_and_costs_one_image(lexora: RunningStack) -> None:
    account = lexora.create_account()
    response = sdk(lexora, account.api_key).images.generate(
        model=LOCAL_IMAGE_MODEL, prompt="a red cube on a table", size="256x256", extra_body={**FAST, "seed": 7}
    )
    [item] = response.data
    assert png(item.b64_json).size == (256, 256)
    assert response.to_dict()["usage"] == {"images": 1, "cost": 0.002}
    [row] = lexora.wait_for_usage_rows(account.account_id, 1)
    assert (row["endpoint"], row["status_code"]) == ("/v1/images/generations", 200)
    assert row["cost_pico"] == IMAGE_MICRO * PICO_PER_MICRO
    balance = lexora.settled_balance(account.account_id)
    assert balance.held_micro == 0 and balance.exact_balance_pico == START_PICO - IMAGE_MICRO * PICO_PER_MICRO
    lexora.assert_ledger_consistent(account.account_id)


def test_width_height_and_seed_are_honoured_end_to_end(lexora: RunningStack) -> None:
    account = lexora.create_account()
    body = {"model": "flux-schnell", "prompt": "a lighthouse at dusk", "width": 256, "height": 384, "seed": 42, **FAST}
    first, second = post(lexora, account.api_key, body), post(lexora, account.api_key, body)
    assert first.status_code == 200, first.text
    assert png(first.json()["data"][0]["b64_json"]).size == (256, 384)
    assert first.json()["data"] == second.json()["data"], "the same seed paints the same picture"
    other = post(lexora, account.api_key, {**body, "seed": 43})
    assert other.json()["data"] != first.json()["data"]
    balance = lexora.settled_balance(account.account_id)
    assert balance.exact_balance_pico == START_PICO - 3 * IMAGE_MICRO * PICO_PER_MICRO


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"n": 2}, "n"),
        ({"width": 100}, "width"),
        ({"height": 4096}, "height"),
        ({"width": 300}, "width"),  # not a multiple of 16
        ({"num_inference_steps": 0}, "num_inference_steps"),
        ({"num_inference_steps": 51}, "num_inference_steps"),
        ({"guidance_scale": 21}, "guidance_scale"),
        ({"response_format": "url"}, "response_format"),
        ({"prompt": ""}, "prompt"),
        ({"model": LOCAL_CHAT_MODEL}, "model"),
    ],
)
def test_bad_parameters_are_400_naming_the_field_and_not_charged(
    lexora: RunningStack, change: dict, param: str
) -> None:
    account = lexora.create_account()
    response = post(lexora, account.api_key, {"model": LOCAL_IMAGE_MODEL, "prompt": "a cube", **change})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["message"]
    assert lexora.settled_balance(account.account_id).exact_balance_pico == START_PICO


def test_a_pipeline_image_model_is_503_with_retry_after(lexora: RunningStack) -> None:
    account = lexora.create_account()
    response = post(lexora, account.api_key, {"model": "black-forest-labs/FLUX.1-dev", "prompt": "a cube"})
    assert response.status_code == 503 and response.headers["retry-after"] == "30"
    assert lexora.settled_balance(account.account_id).exact_balance_pico == START_PICO


def test_the_catalog_lists_image_models_priced_per_image(lexora: RunningStack) -> None:
    cards = {m.id: m.model_extra for m in sdk(lexora, lexora.create_account().api_key).models.list()}
    assert cards[LOCAL_IMAGE_MODEL]["status"] == "live" and cards[LOCAL_IMAGE_MODEL]["kind"] == "image"
    assert cards[LOCAL_IMAGE_MODEL]["pricing"] == {"micro_usd_per_image": IMAGE_MICRO}
    assert cards["black-forest-labs/FLUX.1-dev"]["status"] == "pipeline"
    assert cards["stabilityai/stable-diffusion-xl-base-1.0"]["status"] == "pipeline"


def test_no_credit_is_402_and_nothing_is_painted(lexora: RunningStack) -> None:
    account = lexora.create_account(credits_micro=1_000)  # half an image
    with pytest.raises(openai.APIStatusError) as caught:
        sdk(lexora, account.api_key).images.generate(model=LOCAL_IMAGE_MODEL, prompt="a cube", size="256x256")
    assert caught.value.status_code == 402
    [row] = lexora.wait_for_usage_rows(account.account_id, 1)
    assert (row["status_code"], row["cost_pico"]) == (402, 0)


@pytest.fixture(scope="module")
def impatient_gateway(lexora: RunningStack) -> str:
    return lexora.start_gateway(job_timeout_s=1.0)


def test_an_image_over_the_time_limit_is_504_and_not_charged(lexora: RunningStack, impatient_gateway: str) -> None:
    """Last in this module: the engine finishes the abandoned picture in the background."""
    account = lexora.create_account()
    with pytest.raises(openai.APIStatusError) as caught:
        sdk(lexora, account.api_key, impatient_gateway).images.generate(
            model=LOCAL_IMAGE_MODEL, prompt="a busy city", size="1024x1024", extra_body={"num_inference_steps": 12}
        )
    assert caught.value.status_code == 504
    [row] = lexora.wait_for_usage_rows(account.account_id, 1)
    assert (row["status_code"], row["cost_pico"]) == (504, 0)
    balance = lexora.settled_balance(account.account_id)
    assert balance.held_micro == 0 and balance.exact_balance_pico == START_PICO
