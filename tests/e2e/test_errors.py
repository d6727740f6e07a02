"""Every error on the serving path, as the OpenAI SDK and a raw HTTP client see it."""

from __future__ import annotations

import httpx
import openai
import pytest

from lexora_dev.catalog import LOCAL_CHAT_MODEL
from support.stack import LONG_JOB, RunningStack, stream_long_job

HELLO = [{"role": "user", "content": "Hello"}]


def sdk(lexora: RunningStack, api_key: str, base_url: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url or lexora.base_url, api_key=api_key, max_retries=0)


def post(lexora: RunningStack, body: object, **headers: str) -> httpx.Response:
    return httpx.post(f"{lexora.base_url}/chat/completions", json=body, headers=headers, timeout=60)


def assert_envelope(response: httpx.Response, status: int, error_type: str, code: str) -> dict:
    assert response.status_code == status
    error = response.json()["error"]
    assert error["type"] == error_type and error["code"] == code
    assert error["message"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def test_missing_key_is_401(lexora: RunningStack) -> None:
    response = post(lexora, {"model": LOCAL_CHAT_MODEL, "messages": HELLO})
    error = assert_envelope(response, 401, "authentication_error", "unauthorized")
    assert "Authorization: Bearer" in error["message"]


def test_bad_key_is_401_through_the_sdk(lexora: RunningStack) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        sdk(lexora, "sk-lexora-not-a-real-key").chat.completions.create(model=LOCAL_CHAT_MODEL, messages=HELLO)
    assert caught.value.status_code == 401
    assert caught.value.body["code"] == "unauthorized"


def test_no_credit_is_402_and_nothing_is_charged(lexora: RunningStack) -> None:
    account = lexora.create_account(credits_micro=0)
    with pytest.raises(openai.APIStatusError) as caught:
        sdk(lexora, account.api_key).chat.completions.create(model=LOCAL_CHAT_MODEL, messages=HELLO)
    assert caught.value.status_code == 402
    assert caught.value.body["type"] == "insufficient_credits"
    assert "Add credits" in caught.value.body["message"]
    assert lexora.balance(account.account_id).balance_micro == 0
    [row] = lexora.wait_for_usage_rows(account.account_id, 1)
    assert (row["status_code"], row["error_type"], row["cost_pico"]) == (402, "insufficient_credits", 0)


def test_unknown_model_is_404_naming_the_param(lexora: RunningStack) -> None:
    account = lexora.create_account()
    with pytest.raises(openai.NotFoundError) as caught:
        sdk(lexora, account.api_key).chat.completions.create(model="no/such-model", messages=HELLO)
    assert caught.value.body["code"] == "model_not_found"
    assert caught.value.body["param"] == "model"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": LOCAL_CHAT_MODEL}, "messages"),
        ({"model": LOCAL_CHAT_MODEL, "messages": []}, "messages"),
        ({"model": LOCAL_CHAT_MODEL, "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"model": LOCAL_CHAT_MODEL, "messages": HELLO, "temperature": 3}, "temperature"),
        ({"model": LOCAL_CHAT_MODEL, "messages": HELLO, "max_tokens": 0}, "max_tokens"),
        # Past the context is clamped (test_context_limits.py); past the API's ceiling is refused.
        ({"model": LOCAL_CHAT_MODEL, "messages": HELLO, "max_tokens": 40000}, "max_tokens"),
        ({"model": LOCAL_CHAT_MODEL, "messages": HELLO, "n": 2}, "n"),
    ],
)
def test_malformed_body_is_400_naming_the_field(lexora: RunningStack, body: dict, param: str) -> None:
    account = lexora.create_account()
    error = assert_envelope(
        post(lexora, body, authorization=f"Bearer {account.api_key}"), 400, "invalid_request_error", "invalid_request"
    )
    assert error["param"] == param


def test_body_that_is_not_json_is_400(lexora: RunningStack) -> None:
    account = lexora.create_account()
    response = httpx.post(
        f"{lexora.base_url}/chat/completions",
        content=b"{not json",
        headers={"authorization": f"Bearer {account.api_key}", "content-type": "application/json"},
    )
    error = assert_envelope(response, 400, "invalid_request_error", "invalid_request")
    assert "not valid JSON" in error["message"]


def test_model_without_ready_instance_is_503_with_retry_after(lexora: RunningStack) -> None:
    account = lexora.create_account()
    with pytest.raises(openai.InternalServerError) as caught:
        sdk(lexora, account.api_key).chat.completions.create(model="meta-llama/Llama-3.2-3B-Instruct", messages=HELLO)
    assert caught.value.status_code == 503
    assert caught.value.response.headers["retry-after"] == "30"
    assert caught.value.body["type"] == "model_unavailable"
    assert lexora.settled_balance(account.account_id).balance_micro == 5_000_000


def test_unknown_route_is_404_in_the_envelope(lexora: RunningStack) -> None:
    response = httpx.get(f"{lexora.base_url}/no-such-thing")
    assert_envelope(response, 404, "invalid_request_error", "not_found")


@pytest.fixture(scope="module")
def impatient_gateway(lexora: RunningStack) -> str:
    """A second gateway on the same platform whose jobs time out after five seconds: time enough
    for the first tokens on a busy machine, far too little for the long answers asked for here."""
    return lexora.start_gateway(job_timeout_s=5.0)


def test_job_over_the_time_limit_is_504_and_not_charged(lexora: RunningStack, impatient_gateway: str) -> None:
    account = lexora.create_account()
    with pytest.raises(openai.APIStatusError) as caught:
        sdk(lexora, account.api_key, impatient_gateway).chat.completions.create(
            model=LOCAL_CHAT_MODEL, messages=LONG_JOB, max_tokens=2000, temperature=0
        )
    assert caught.value.status_code == 504
    assert caught.value.body["type"] == "timeout"
    balance = lexora.settled_balance(account.account_id)
    assert balance.held_micro == 0 and balance.exact_balance_pico == 5_000_000 * 10**6
    [row] = lexora.wait_for_usage_rows(account.account_id, 1)
    assert row["status_code"] == 504 and row["cost_pico"] == 0


def test_error_after_streaming_began_arrives_as_final_sse_event(lexora: RunningStack, impatient_gateway: str) -> None:
    account = lexora.create_account()
    with stream_long_job(impatient_gateway, account.api_key, max_tokens=2000) as response:
        assert response.status_code == 200
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert len(events) > 2, "tokens were streamed before the time limit"
    assert '"content"' in events[1]
    assert events[-1].startswith('data: {"error"') and '"code": "timeout"' in events[-1]
    assert "[DONE]" not in events[-1]
    # The SDK surfaces the same event as an error.
    with pytest.raises(openai.APIError):
        for _ in sdk(lexora, account.api_key, impatient_gateway).chat.completions.create(
            model=LOCAL_CHAT_MODEL, messages=LONG_JOB, max_tokens=2000, stream=True, temperature=0
        ):
            pass
    balance = lexora.settled_balance(account.account_id)
    assert balance.exact_balance_pico == 5_000_000 * 10**6, "a timed-out job is a failed job: not charged"


def test_a_body_larger_than_a_job_can_be_is_413_before_any_credit_is_held(lexora: RunningStack) -> None:
    """A 60 MB chat body once got a 500 (NATS refused the job) with its hold left to the sweeper."""
    account = lexora.create_account()
    before = lexora.balance(account.account_id)
    huge = {"model": LOCAL_CHAT_MODEL, "messages": [{"role": "user", "content": "x" * 60_000_000}]}
    response = post(lexora, huge, Authorization=f"Bearer {account.api_key}")
    error = assert_envelope(response, 413, "invalid_request_error", "request_too_large")
    assert "bytes this gateway accepts" in error["message"]
    anthropic = httpx.post(
        f"{lexora.base_url}/messages",
        content=b"{" + b" " * 60_000_000 + b"}",
        headers={"x-api-key": account.api_key, "content-type": "application/json"},
        timeout=60,
    )
    assert anthropic.status_code == 413 and anthropic.json()["error"]["type"] == "request_too_large"
    after = lexora.balance(account.account_id)
    assert (after.balance_micro, after.held_micro) == (before.balance_micro, 0)


def test_headers_over_the_limit_are_431_and_too_many_messages_400(lexora: RunningStack) -> None:
    """The gateway reads at most 32 KiB of request line and headers, and 10,000 messages."""
    account = lexora.create_account()
    body = {"model": LOCAL_CHAT_MODEL, "messages": HELLO, "max_tokens": 1}
    padded = post(lexora, body, Authorization=f"Bearer {account.api_key}", **{"X-Padding": "a" * 40_000})
    error = assert_envelope(padded, 431, "invalid_request_error", "request_header_fields_too_large")
    assert "32,768 bytes" in error["message"]
    many = {**body, "messages": HELLO * 10_001}
    error = assert_envelope(
        post(lexora, many, Authorization=f"Bearer {account.api_key}"), 400, "invalid_request_error", "invalid_request"
    )
    assert error["param"] == "messages"
    assert lexora.balance(account.account_id).held_micro == 0


def test_metrics_label_requests_by_route_not_by_url(lexora: RunningStack) -> None:
    """Unknown model ids and unknown paths must not mint a Prometheus series each."""
    account = lexora.create_account()
    headers = {"Authorization": f"Bearer {account.api_key}"}
    for n in range(3):
        httpx.get(f"{lexora.base_url}/models/no-such-model-{n}", headers=headers)
        httpx.get(f"{lexora.base_url}/no-such-route-{n}", headers=headers)
    metrics = httpx.get(lexora.base_url.removesuffix("/v1") + "/metrics").text
    assert "no-such-model" not in metrics and "no-such-route" not in metrics
    assert 'operation="/v1/models/{model_id:path}"' in metrics and 'operation="unmatched"' in metrics
