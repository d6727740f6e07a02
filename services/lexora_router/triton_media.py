"""Embedding and image models on Triton: one request, one response.

`all-minilm-l6-v2`-style embedding models take `text_input` (one string per item) and answer
`embedding` [N, D] float32 plus `num_input_tokens` [N]; FLUX-style image models take `prompt`,
`width`, `height`, `num_inference_steps`, `guidance_scale` and optionally `seed`, and answer `image`,
the PNG file.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lexora_contracts.messages import ImageJob
from lexora_router.triton_engine import EngineRejected, Tensors, TritonEngine

EMBEDDING_OUTPUTS = ("embedding", "num_input_tokens")
IMAGE_OUTPUTS = ("image",)


@dataclass
class Embeddings:
    vectors: np.ndarray  # float32 [N, D]
    tokens: int  # all inputs together, as the model counted them


def embedding_inputs(texts: list[str]) -> Tensors:
    return [("text_input", "BYTES", np.array([t.encode() for t in texts], dtype=np.object_))]


def image_inputs(job: ImageJob) -> Tensors:
    return image_tensors(job.prompt, job.width, job.height, job.num_inference_steps, job.guidance_scale, job.seed)


def image_tensors(
    prompt: str, width: int, height: int, steps: int, guidance_scale: float, seed: int | None = None
) -> Tensors:
    tensors: Tensors = [
        ("prompt", "BYTES", np.array([prompt.encode()], dtype=np.object_)),
        ("width", "INT32", np.array([width], dtype=np.int32)),
        ("height", "INT32", np.array([height], dtype=np.int32)),
        ("num_inference_steps", "INT32", np.array([steps], dtype=np.int32)),
        ("guidance_scale", "FP32", np.array([guidance_scale], dtype=np.float32)),
    ]
    if seed is not None:
        tensors.append(("seed", "INT64", np.array([seed], dtype=np.int64)))
    return tensors


async def embed(engine: TritonEngine, address: str, model: str, texts: list[str]) -> Embeddings:
    result = await engine.infer(address, model, embedding_inputs(texts), EMBEDDING_OUTPUTS)
    vectors = result.as_numpy("embedding")  # type: ignore[attr-defined]
    counts = result.as_numpy("num_input_tokens")  # type: ignore[attr-defined]
    if vectors is None or counts is None or vectors.ndim != 2 or vectors.shape[0] != len(texts):
        raise EngineRejected(f"the embedding model answered {len(texts)} inputs with an unexpected shape")
    return Embeddings(vectors=vectors.astype("<f4", copy=False), tokens=int(counts.sum()))


async def paint(engine: TritonEngine, address: str, model: str, job: ImageJob) -> bytes:
    result = await engine.infer(address, model, image_inputs(job), IMAGE_OUTPUTS)
    image = result.as_numpy("image")  # type: ignore[attr-defined]
    if image is None or image.size != 1:
        raise EngineRejected("the image model returned no image")
    png = image.reshape(-1)[0]
    return bytes(png)


def slices(data: bytes, size: int) -> list[bytes]:
    """`data` in order, in pieces of at most `size` bytes (at least one piece, maybe empty)."""
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]
