"""FLUX.1 [schnell] text-to-image as a Triton Python-backend model: the real diffusers
FluxPipeline, loaded with ``FluxPipeline.from_pretrained`` from a diffusers checkpoint directory.

The weights directory is the ``weights_path`` config parameter when given, else ``model_dir`` (the
directory the operator mounts the model source at and passes in every config it generates), else
``$LEXORA_FLUX_WEIGHTS`` (the local stack's tiny pipeline, or a developer's checkout). The same file
serves locally and in the cluster.

Device: the ``device`` parameter; ``auto`` (the default) is the GPU Triton gave this instance
(``KIND_GPU``), else CUDA when torch sees a GPU, else the CPU. dtype: bfloat16 on a GPU that supports
it, float16 on an older one, float32 on the CPU (or the ``dtype`` parameter).

One request -> one PNG of exactly the requested width x height. Generation is seeded with a CPU
``torch.Generator``, so the same seed and parameters give the same PNG bytes on any device.
"""

import io
import json
import math
import os
import secrets

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402
from diffusers import FluxPipeline  # noqa: E402

WEIGHTS_ENV = "LEXORA_FLUX_WEIGHTS"
MIN_SIDE, MAX_SIDE, SIDE_MULTIPLE = 256, 2048, 16
MIN_STEPS, MAX_STEPS = 1, 50
MIN_GUIDANCE, MAX_GUIDANCE = 0.0, 20.0


class BadRequest(Exception):
    """The caller's fault: reported as INVALID_ARG, the model carries on."""


def _scalar(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return None
    values = tensor.as_numpy().reshape(-1)
    if values.size != 1:
        raise BadRequest(f"{name} must hold exactly one value, got {values.size}")
    value = values[0]
    return value.item() if isinstance(value, np.generic) else value


def _required(request, name):
    value = _scalar(request, name)
    if value is None:
        raise BadRequest(f"{name} is required")
    return value


def _side(request, name) -> int:
    value = int(_required(request, name))
    if not (MIN_SIDE <= value <= MAX_SIDE) or value % SIDE_MULTIPLE:
        raise BadRequest(f"{name} must be a multiple of {SIDE_MULTIPLE} between {MIN_SIDE} and {MAX_SIDE}, got {value}")
    return value


def _device(name: str, args: dict) -> torch.device:
    """`auto`: the GPU Triton placed this instance on, else any GPU torch sees, else the CPU."""
    if name not in ("", "auto"):
        return torch.device(name)
    if not torch.cuda.is_available():
        return torch.device("cpu")
    if str(args.get("model_instance_kind", "")).upper() == "GPU":
        return torch.device(f"cuda:{int(args.get('model_instance_device_id') or 0)}")
    return torch.device("cuda")


def _dtype(name: str, device: torch.device) -> torch.dtype:
    if name not in ("", "auto"):
        return getattr(torch, name)
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def weights_dir(params: dict) -> str:
    """weights_path, else the operator's model_dir, else $LEXORA_FLUX_WEIGHTS."""
    return params.get("weights_path") or params.get("model_dir") or os.environ.get(WEIGHTS_ENV) or ""


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        weights = weights_dir(params)
        if not weights:
            raise RuntimeError(f"no FLUX weights: set the model_dir or weights_path parameter, or {WEIGHTS_ENV}")
        threads = int(params.get("num_threads") or 2)
        self.max_sequence_length = int(params.get("max_sequence_length") or 256)
        self.device = _device(params.get("device", "auto"), args)

        torch.set_num_threads(threads)
        dtype = _dtype(params.get("dtype", "auto"), self.device)
        self.pipe = FluxPipeline.from_pretrained(weights, dtype=dtype).to(self.device)
        self.pipe.set_progress_bar_config(disable=True)
        pb_utils.Logger.log_info(f"loaded FluxPipeline from {weights} on {self.device} ({dtype}, threads={threads})")

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                responses.append(self._generate(request))
            except BadRequest as exc:
                responses.append(
                    pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG))
                )
            except Exception as exc:  # never let one request take the model down
                pb_utils.Logger.log_error(f"image generation failed: {exc!r}")
                responses.append(
                    pb_utils.InferenceResponse(
                        error=pb_utils.TritonError(f"image generation failed: {exc}", pb_utils.TritonError.INTERNAL)
                    )
                )
        return responses

    def finalize(self):
        self.pipe = None

    def _parameters(self, request) -> dict:
        raw = _required(request, "prompt")
        try:
            prompt = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
        except UnicodeDecodeError:
            raise BadRequest("prompt is not valid UTF-8") from None
        if not prompt.strip():
            raise BadRequest("prompt is empty")
        width, height = _side(request, "width"), _side(request, "height")
        steps = int(_required(request, "num_inference_steps"))
        if not (MIN_STEPS <= steps <= MAX_STEPS):
            raise BadRequest(f"num_inference_steps must be between {MIN_STEPS} and {MAX_STEPS}, got {steps}")
        guidance = float(_required(request, "guidance_scale"))
        if not (math.isfinite(guidance) and MIN_GUIDANCE <= guidance <= MAX_GUIDANCE):
            raise BadRequest(f"guidance_scale must be between {MIN_GUIDANCE:g} and {MAX_GUIDANCE:g}, got {guidance:g}")
        seed = _scalar(request, "seed")
        seed = secrets.randbits(63) if seed is None else int(seed)
        return {
            "prompt": prompt,
            "width": width,
            "height": height,
            "num_inference_steps": steps,
            "guidance_scale": guidance,
            "seed": seed,
        }

    def _generate(self, request):
        p = self._parameters(request)
        generator = torch.Generator(device="cpu").manual_seed(p.pop("seed"))
        with torch.inference_mode():
            image = self.pipe(
                **p,
                generator=generator,
                max_sequence_length=self.max_sequence_length,
                output_type="pil",
            ).images[0]
        if image.size != (p["width"], p["height"]):  # the pipeline rounds; the contract is exact
            raise RuntimeError(f"pipeline produced {image.size[0]}x{image.size[1]}, not {p['width']}x{p['height']}")
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="PNG")
        png = np.array([buffer.getvalue()], dtype=np.object_)
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("image", png)])
