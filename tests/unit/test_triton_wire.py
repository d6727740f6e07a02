"""The gRPC messages the router builds and reads itself, checked against Triton's own encoding."""

import numpy as np
from tritonclient.grpc import service_pb2
from tritonclient.utils import deserialize_bytes_tensor, serialize_byte_tensor

from lexora_router.triton_wire import FINAL_FLAG_REQUEST, first_values, infer_request, is_final, serialize

TENSORS = [
    ("text_input", "BYTES", np.array(["héllo".encode()], dtype=np.object_)),
    ("stop_words", "BYTES", np.array([b"END", b"STOP"], dtype=np.object_)),
    ("max_tokens", "INT32", np.array([8], dtype=np.int32)),
    ("stream", "BOOL", np.array([True])),
    ("temperature", "FP32", np.array([0.5], dtype=np.float32)),
    ("seed", "UINT64", np.array([2**64 - 1], dtype=np.uint64)),
]


def test_bytes_tensors_are_length_prefixed_as_tritonclient_does() -> None:
    value = np.array([b"a", b"", "é".encode()], dtype=np.object_)
    assert serialize("BYTES", value) == serialize_byte_tensor(value).item()
    assert deserialize_bytes_tensor(serialize("BYTES", value)).tolist() == [b"a", b"", "é".encode()]


def test_fixed_size_tensors_are_packed_little_endian() -> None:
    assert serialize("INT32", np.array([1, -2], dtype=np.int32)) == b"\x01\x00\x00\x00\xfe\xff\xff\xff"
    assert serialize("BOOL", np.array([True, False])) == b"\x01\x00"
    assert np.frombuffer(serialize("FP32", np.array([0.5], dtype=np.float32)), "<f4").tolist() == [0.5]


def test_a_request_carries_every_tensor_and_asks_for_the_final_flag() -> None:
    request = infer_request("m", TENSORS, batched=False, request_id="r1", outputs=("text_output", "finish_reason"))
    assert request.model_name == "m" and request.id == "r1"
    assert request.parameters[FINAL_FLAG_REQUEST].bool_param
    assert [(t.name, t.datatype, list(t.shape)) for t in request.inputs] == [
        ("text_input", "BYTES", [1]),
        ("stop_words", "BYTES", [2]),
        ("max_tokens", "INT32", [1]),
        ("stream", "BOOL", [1]),
        ("temperature", "FP32", [1]),
        ("seed", "UINT64", [1]),
    ]
    assert len(request.raw_input_contents) == len(TENSORS)
    assert [o.name for o in request.outputs] == ["text_output", "finish_reason"]


def test_batched_models_get_a_leading_batch_dimension() -> None:
    request = infer_request("m", TENSORS, batched=True, request_id="r", outputs=())
    assert [list(t.shape) for t in request.inputs][:3] == [[1, 1], [1, 2], [1, 1]]


def _response(final: bool | None) -> service_pb2.ModelInferResponse:
    response = service_pb2.ModelInferResponse(id="r")
    for name, datatype, value in [
        ("text_output", "BYTES", np.array(["Hi é".encode()], dtype=np.object_)),
        ("num_input_tokens", "INT32", np.array([12], dtype=np.int32)),
        ("finish_reason", "BYTES", np.array([b""], dtype=np.object_)),
    ]:
        response.outputs.add(name=name, datatype=datatype, shape=list(value.shape))
        response.raw_output_contents.append(serialize(datatype, value))
    if final is not None:
        response.parameters["triton_final_response"].bool_param = final
    return response


def test_first_values_decode_each_output() -> None:
    expected = {"text_output": "Hi é".encode(), "num_input_tokens": 12, "finish_reason": b""}
    assert first_values(_response(None)) == expected


def test_the_final_flag_is_read_from_the_response_parameters() -> None:
    assert is_final(_response(True)) and not is_final(_response(False)) and not is_final(_response(None))
