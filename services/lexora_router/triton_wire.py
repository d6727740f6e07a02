"""Triton's gRPC messages (the KServe v2 protocol) built and read directly. Pure: no I/O.

The hot path builds one `ModelInferRequest` per job with its tensors as raw little-endian bytes,
and reads only the first element of each output, which is all a text generation response carries;
tritonclient's per-tensor objects and numpy round trips cost more than the request itself.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

import numpy as np
from tritonclient.grpc import service_pb2

# (name, Triton datatype, value): the tensors of one request, without the batch dimension.
Tensors = list[tuple[str, str, np.ndarray]]

# Set on every request: Triton then marks the last response of each request (even an empty one),
# so a stream carrying many requests knows when one is over, whatever the model sends last.
FINAL_FLAG_REQUEST = "triton_enable_empty_final_response"
FINAL_FLAG_RESPONSE = "triton_final_response"

_FIXED = {
    "BOOL": "?",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}


def serialize(datatype: str, value: np.ndarray) -> bytes:
    """A tensor's raw contents: BYTES elements each prefixed by their 4-byte little-endian length,
    anything else as packed little-endian values."""
    if datatype == "BYTES":
        return b"".join(_length_prefixed(element) for element in value.reshape(-1))
    return np.ascontiguousarray(value, dtype=_FIXED[datatype]).tobytes()


def _length_prefixed(element: object) -> bytes:
    data = element if isinstance(element, bytes) else str(element).encode()
    return struct.pack("<I", len(data)) + data


def infer_request(
    model: str, tensors: Tensors, batched: bool, request_id: str, outputs: Iterable[str]
) -> service_pb2.ModelInferRequest:
    """One request; a model with max_batch_size > 0 (TensorRT-LLM's) gets a leading batch dimension."""
    request = service_pb2.ModelInferRequest(model_name=model, id=request_id)
    request.parameters[FINAL_FLAG_REQUEST].bool_param = True
    for name, datatype, value in tensors:
        tensor = request.inputs.add(name=name, datatype=datatype)
        tensor.shape.extend(((1,) if batched else ()) + value.shape)
        request.raw_input_contents.append(serialize(datatype, value))
    for name in outputs:
        request.outputs.add(name=name)
    return request


def first_values(response: service_pb2.ModelInferResponse) -> dict[str, object]:
    """Each output's first element: bytes for BYTES, a Python number otherwise (absent: empty)."""
    values: dict[str, object] = {}
    for tensor, raw in zip(response.outputs, response.raw_output_contents, strict=False):
        values[tensor.name] = _first(tensor.datatype, raw)
    return values


def _first(datatype: str, raw: bytes) -> object:
    if datatype == "BYTES":
        if len(raw) < 4:
            return None
        (length,) = struct.unpack_from("<I", raw)
        return raw[4 : 4 + length]
    values = np.frombuffer(raw, dtype=_FIXED[datatype], count=1 if raw else 0)
    return values[0].item() if values.size else None


def is_final(response: service_pb2.ModelInferResponse) -> bool:
    flag = response.parameters.get(FINAL_FLAG_RESPONSE)
    return bool(flag is not None and flag.bool_param)
