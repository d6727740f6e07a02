"""The flux-1-schnell Python-backend model: the real diffusers FluxPipeline on a tiny randomly
initialised FLUX checkpoint (lexora_dev.flux_weights), served by the real tritonserver and
called over gRPC as the router calls it."""

from __future__ import annotations

import io
import multiprocessing
import re
from pathlib import Path

import diffusers  # noqa: F401  (the model's own dependency: missing means a broken install)
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from PIL import Image
from tritonclient.utils import InferenceServerException

from lexora_dev.flux_weights import MARKER, ensure_tiny_flux, is_complete
from lexora_dev.stack import start_triton

ROOT = Path(__file__).resolve().parents[2]

MODEL = "flux-1-schnell"
MODEL_DIR = ROOT / "model-repo" / MODEL
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="session")
def triton(tmp_path_factory):
    """A real tritonserver serving only this model, started like the local stack starts it
    (which builds the tiny weights once and passes them in LEXORA_FLUX_WEIGHTS).
    Yields (grpc_url, log_path)."""
    state = tmp_path_factory.mktemp("triton-flux")
    repo = state / "models"
    repo.mkdir()
    (repo / MODEL).symlink_to(MODEL_DIR)
    process, endpoint = start_triton(state, model_repo=repo, timeout=300)
    try:
        yield endpoint.grpc_address, process.log_path
    finally:
        process.stop()


@pytest.fixture(scope="session")
def client(triton):
    with grpcclient.InferenceServerClient(triton[0]) as c:
        yield c


def _tensor(name, datatype, value):
    dtype = {"BYTES": np.object_, "INT32": np.int32, "INT64": np.int64, "FP32": np.float32}[datatype]
    arr = np.array([value], dtype=dtype)
    tensor = grpcclient.InferInput(name, [1], datatype)
    tensor.set_data_from_numpy(arr)
    return tensor


def generate(client, prompt="a red house by the sea", width=256, height=256, steps=4, guidance=0.0, seed=1234):
    """PNG bytes for one request (seed=None: the seed input is left out)."""
    inputs = [
        _tensor("prompt", "BYTES", prompt.encode()),
        _tensor("width", "INT32", width),
        _tensor("height", "INT32", height),
        _tensor("num_inference_steps", "INT32", steps),
        _tensor("guidance_scale", "FP32", guidance),
    ]
    if seed is not None:
        inputs.append(_tensor("seed", "INT64", seed))
    result = client.infer(MODEL, inputs, client_timeout=120)
    image = result.as_numpy("image")
    assert image.shape == (1,)
    return image[0]


def decode(png: bytes):
    assert png.startswith(PNG_SIGNATURE)
    image = Image.open(io.BytesIO(png))
    image.load()
    assert image.format == "PNG"
    return image


def test_the_real_flux_pipeline_is_loaded(triton):
    _, log_path = triton
    log = log_path.read_text(errors="replace")
    assert re.search(r"loaded FluxPipeline from \S+tiny-flux-v\d+", log), log[-2000:]


@pytest.mark.parametrize(("width", "height"), [(256, 256), (512, 256), (256, 384)])
def test_png_of_the_requested_size(client, width, height):
    image = decode(generate(client, width=width, height=height, steps=2))
    assert image.size == (width, height)
    assert image.mode == "RGB"
    pixels = np.asarray(image)
    assert pixels.std() > 1.0  # something was drawn, not a flat fill


def test_same_seed_gives_identical_bytes(client):
    first = generate(client, seed=42)
    assert generate(client, seed=42) == first
    assert generate(client, seed=43) != first
    assert generate(client, prompt="a green mountain at night", seed=42) != first


def test_without_a_seed_each_image_is_random(client):
    a, b = generate(client, seed=None), generate(client, seed=None)
    assert decode(a).size == (256, 256)
    assert a != b


def test_steps_and_guidance_within_bounds_are_accepted(client):
    for steps, guidance in ((1, 0.0), (8, 20.0)):
        assert decode(generate(client, steps=steps, guidance=guidance)).size == (256, 256)


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"width": 240}, "width"),
        ({"width": 2064}, "width"),
        ({"width": 264}, "width"),
        ({"height": 0}, "height"),
        ({"height": 300}, "height"),
        ({"steps": 0}, "num_inference_steps"),
        ({"steps": 51}, "num_inference_steps"),
        ({"guidance": -0.5}, "guidance_scale"),
        ({"guidance": 20.5}, "guidance_scale"),
        ({"guidance": float("nan")}, "guidance_scale"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "   "}, "prompt"),
    ],
)
def test_invalid_parameters_are_refused(client, override, field):
    with pytest.raises(InferenceServerException) as info:
        generate(client, **override)
    error = info.value
    assert error.status() == "StatusCode.INVALID_ARGUMENT", error
    assert str(error.message()).startswith(field), error
    # ...and the model is still serving.
    assert decode(generate(client, steps=1)).size == (256, 256)


def _build(path: str) -> str:
    return str(ensure_tiny_flux(path))


def test_tiny_weights_build_is_atomic_and_idempotent(tmp_path):
    target = tmp_path / "tiny-flux"
    # Two processes race to build the same directory: both succeed, one pipeline stays.
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        assert pool.map(_build, [str(target)] * 2) == [str(target.resolve())] * 2
    assert is_complete(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-flux"]  # no temporary leftovers
    stamp = (target / MARKER).stat().st_mtime_ns
    assert ensure_tiny_flux(target) == target.resolve()
    assert (target / MARKER).stat().st_mtime_ns == stamp  # nothing rebuilt
