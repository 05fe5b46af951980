"""Bad input gets a clear status and message, and the server stays up."""

from __future__ import annotations

import io

import grpc
import numpy as np
import pytest
from PIL import Image
from rpc_helpers import random_image, request, stub, tensor_input

from camserve import tensors
from camserve.v1 import explain_pb2 as pb
from server_harness import ServerThread

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def _tiff() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buffer, format="TIFF")
    return buffer.getvalue()


def _nan_tensor() -> pb.ImageInput:
    array = np.zeros((3, 32, 32), dtype=np.float32)
    array[0, 0, 0] = np.nan
    return pb.ImageInput(tensor=tensors.to_proto(array))


def _tensor(shape: tuple[int, ...], dtype: type = np.float32) -> pb.ImageInput:
    return pb.ImageInput(tensor=tensors.to_proto(np.zeros(shape, dtype=dtype)))


CASES = [
    ("garbage bytes", request("r18", "gradcam", b"not an image at all"), INVALID, "decode"),
    ("truncated png", request("r18", "gradcam", random_image(1)[:60]), INVALID, "decode"),
    ("tiff", request("r18", "gradcam", _tiff()), INVALID, "JPEG"),
    ("nan tensor", request("r18", "gradcam", _nan_tensor()), INVALID, "NaN"),
    ("wrong shape", request("r18", "gradcam", _tensor((4, 32, 32))), INVALID, "shape"),
    ("wrong dtype", request("r18", "gradcam", _tensor((3, 32, 32), np.uint8)), INVALID, "float32"),
    ("no input", pb.ExplainRequest(model="r18", method="gradcam"), INVALID, "image"),
    ("unknown method", request("r18", "magic", tensor_input(1)), INVALID, "gradcam"),
    (
        "unknown layer",
        pb.ExplainRequest(model="r18", method="gradcam", layer="layer9", input=tensor_input(1)),
        INVALID,
        "layer4",
    ),
    (
        "target out of range",
        request("r18", "gradcam", tensor_input(1), classes=(10,)),
        INVALID,
        "10 classes",
    ),
    (
        "unknown option",
        request("r18", "occlusion", tensor_input(1), options={"size": 3}),
        INVALID,
        "window",
    ),
    (
        "bad option",
        request("r18", "occlusion", tensor_input(1), options={"window": -2}),
        INVALID,
        "window",
    ),
    ("method not for model", request("mnv3", "cam", tensor_input(1)), INVALID, "gradcam"),
    (
        "unknown model",
        request("nope", "gradcam", tensor_input(1)),
        grpc.StatusCode.NOT_FOUND,
        "demo",
    ),
]


@pytest.mark.parametrize(("name", "message", "code", "hint"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_a_clear_status(
    server: ServerThread, name: str, message: pb.ExplainRequest, code: grpc.StatusCode, hint: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub(server.address).Explain(message)
    error = caught.value
    assert error.code() == code, error.details()
    assert hint in error.details()
    assert "Traceback" not in error.details()


def test_decompression_bomb_is_refused_before_decoding(server: ServerThread) -> None:
    buffer = io.BytesIO()
    Image.new("L", (8000, 8000)).save(buffer, format="PNG")  # 64 Mpx, tiny file
    with pytest.raises(grpc.RpcError) as caught:
        stub(server.address).Explain(request("r18", "gradcam", buffer.getvalue()))
    assert caught.value.code() == INVALID and "pixels" in caught.value.details()


def test_server_keeps_serving_after_bad_requests(server: ServerThread) -> None:
    client = stub(server.address)
    for _, message, _, _ in CASES:
        with pytest.raises(grpc.RpcError):
            client.Explain(message)
    reply = client.Explain(request("r18", "gradcam", tensor_input(5)))
    assert len(reply.heatmaps) == 1
