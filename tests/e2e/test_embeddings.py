"""/v1/embeddings through the OpenAI SDK: all-MiniLM-L6-v2 served by Triton, billed per input token."""

from __future__ import annotations

import httpx
import numpy as np
import openai
import pytest

from lexora_contracts.money import pico_to_usd, token_cost_pico
from lexora_dev.catalog import LOCAL_CHAT_MODEL, LOCAL_EMBEDDING_MODEL
from support.stack import RunningStack

PRICE = 10_000  # micro-USD per 1M input tokens for the local embedding model
SENTENCES = ["The cat sat on the mat.", "A kitten is resting on a rug.", "Quarterly revenue grew by four percent."]


def sdk(lexora: RunningStack, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=lexora.base_url, api_key=api_key, max_retries=0)


def vectors(response: openai.types.CreateEmbeddingResponse) -> np.ndarray:
    return np.array([item.embedding for item in sorted(response.data, key=lambda d: d.index)], dtype=np.float64)


def test_embeddings_are_normalised_meaningful_and_billed_per_token(lexora: RunningStack) -> None:
    account = lexora.create_account()
    response = sdk(lexora, account.api_key).embeddings.create(model=LOCAL_EMBEDDING_MODEL, input=SENTENCES)
    assert response.object == "list" and response.model == LOCAL_EMBEDDING_MODEL
    assert [item.index for item in response.data] == [0, 1, 2]
    found = vectors(response)
    assert found.shape == (3, 384)
    assert np.allclose(np.linalg.norm(found, axis=1), 1.0, atol=1e-5)
    similarity = found @ found.T
    assert similarity[0, 1] > similarity[0, 2] + 0.2, "a cat on a mat is closer to a kitten on a rug than to revenue"

    tokens = response.usage.prompt_tokens
    assert tokens == response.usage.total_tokens
    # Each sentence is a handful of word pieces plus [CLS] and [SEP].
    assert 3 * 2 < tokens < sum(len(s) for s in SENTENCES)
    assert response.usage.model_extra["cost"] == pytest.approx(pico_to_usd(token_cost_pico(tokens, PRICE)), rel=1e-12)
    [row] = lexora.wait_for_usage_rows(account.account_id, 1)
    assert (row["endpoint"], row["status_code"], row["prompt_tokens"]) == ("/v1/embeddings", 200, tokens)
    assert row["cost_pico"] == token_cost_pico(tokens, PRICE)
    balance = lexora.settled_balance(account.account_id)
    assert balance.held_micro == 0
    assert balance.exact_balance_pico == 5_000_000 * 10**6 - token_cost_pico(tokens, PRICE)
    lexora.assert_ledger_consistent(account.account_id)


def test_float_and_base64_encodings_agree_and_batching_changes_nothing(lexora: RunningStack) -> None:
    client = sdk(lexora, lexora.create_account().api_key)
    as_base64 = vectors(client.embeddings.create(model=LOCAL_EMBEDDING_MODEL, input=SENTENCES))  # the SDK's default
    as_float = vectors(client.embeddings.create(model=LOCAL_EMBEDDING_MODEL, input=SENTENCES, encoding_format="float"))
    assert np.array_equal(as_base64, as_float), "both encodings carry the same float32 values"
    alone = vectors(client.embeddings.create(model=LOCAL_EMBEDDING_MODEL, input=SENTENCES[2], encoding_format="float"))
    assert np.allclose(alone[0], as_float[2], atol=1e-5)


def test_alias_api_prefix_and_x_api_key_reach_the_same_model(lexora: RunningStack) -> None:
    account = lexora.create_account()
    response = httpx.post(
        lexora.base_url.replace("/v1", "/api/v1") + "/embeddings",
        json={"model": "all-minilm-l6-v2", "input": "hello"},
        headers={"x-api-key": account.api_key},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == LOCAL_EMBEDDING_MODEL
    assert len(body["data"][0]["embedding"]) == 384
    assert response.headers["x-ratelimit-limit"]


def test_the_catalog_lists_the_embedding_model_live_with_its_size(lexora: RunningStack) -> None:
    account = lexora.create_account()
    card = sdk(lexora, account.api_key).models.retrieve(LOCAL_EMBEDDING_MODEL).model_extra
    assert card["kind"] == "embedding" and card["status"] == "live"
    assert card["dimensions"] == 384 and "embedding" in card["capabilities"]
    assert card["pricing"]["input_micro_usd_per_1m_tokens"] == PRICE


@pytest.mark.parametrize(
    ("body", "status", "param", "fragment"),
    [
        ({"model": LOCAL_EMBEDDING_MODEL, "input": []}, 400, "input", "empty list"),
        ({"model": LOCAL_EMBEDDING_MODEL, "input": ["fine", ""]}, 400, "input", "input[1] is an empty string"),
        ({"model": LOCAL_EMBEDDING_MODEL, "input": [101, 2023, 102]}, 400, "input", "token-id arrays"),
        ({"model": LOCAL_EMBEDDING_MODEL, "input": "x", "dimensions": 128}, 400, "dimensions", "384-dimensional"),
        ({"model": LOCAL_EMBEDDING_MODEL, "input": "x", "encoding_format": "int8"}, 400, "encoding_format", ""),
        ({"model": LOCAL_CHAT_MODEL, "input": "x"}, 400, "model", "not an embedding model"),
        ({"model": "nobody/no-such-embedder", "input": "x"}, 404, "model", "does not exist"),
    ],
)
def test_bad_requests_are_refused_in_the_openai_envelope_and_not_charged(
    lexora: RunningStack, body: dict, status: int, param: str, fragment: str
) -> None:
    account = lexora.create_account()
    response = httpx.post(
        f"{lexora.base_url}/embeddings", json=body, headers={"authorization": f"Bearer {account.api_key}"}, timeout=60
    )
    assert response.status_code == status
    error = response.json()["error"]
    assert error["param"] == param and fragment in error["message"]
    assert lexora.settled_balance(account.account_id).exact_balance_pico == 5_000_000 * 10**6


def test_an_input_past_the_models_context_is_refused_by_the_engine_and_not_charged(lexora: RunningStack) -> None:
    account = lexora.create_account()
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(lexora, account.api_key).embeddings.create(
            model=LOCAL_EMBEDDING_MODEL, input=["short", "word " * 400], encoding_format="float"
        )
    assert "256" in caught.value.body["message"]
    [row] = lexora.wait_for_usage_rows(account.account_id, 1)
    assert (row["status_code"], row["cost_pico"]) == (400, 0)
    balance = lexora.settled_balance(account.account_id)
    assert balance.held_micro == 0 and balance.exact_balance_pico == 5_000_000 * 10**6
    lexora.assert_ledger_consistent(account.account_id)


def test_a_chat_model_refuses_to_be_embedded_and_an_embedder_refuses_to_chat(lexora: RunningStack) -> None:
    client = sdk(lexora, lexora.create_account().api_key)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=LOCAL_EMBEDDING_MODEL, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.body["param"] == "model"
    assert "is an embedding model, not a chat model" in caught.value.body["message"]


def test_no_credit_is_402_before_any_work(lexora: RunningStack) -> None:
    account = lexora.create_account(credits_micro=0)
    with pytest.raises(openai.APIStatusError) as caught:
        sdk(lexora, account.api_key).embeddings.create(model=LOCAL_EMBEDDING_MODEL, input="hello")
    assert caught.value.status_code == 402
    [row] = lexora.wait_for_usage_rows(account.account_id, 1)
    assert (row["status_code"], row["cost_pico"]) == (402, 0)
