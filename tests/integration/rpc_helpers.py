"""Small helpers of the integration tests: requests for a test server through the raw
generated stubs, test images, and waiting for what a server does in the background."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from PIL import Image

from camserve import tensors
from camserve.v1 import explain_pb2 as pb
from camserve.v1 import explain_pb2_grpc
from camserve_server.demo.data import make_dataset


def stub(address: str) -> explain_pb2_grpc.ExplainServiceStub:
    channel = grpc.insecure_channel(
        address, options=[("grpc.max_receive_message_length", 64 << 20)]
    )
    return explain_pb2_grpc.ExplainServiceStub(channel)


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def random_image(seed: int, size: tuple[int, int] = (48, 40)) -> bytes:
    rng = np.random.default_rng(seed)
    return png_bytes(rng.integers(0, 256, (*size, 3), dtype=np.uint8))


def write_demo_pngs(folder: Path, count: int, seed: int, name: str = "{i:03d}.png") -> Path:
    """``count`` demo images saved as PNG files in ``folder``; each file's ``name`` is
    formatted with the image's index ``i`` and its true class ``label``."""
    for i, sample in enumerate(make_dataset(count, seed=seed)):
        Image.fromarray(sample.image).save(folder / name.format(i=i, label=sample.label))
    return folder


def tensor_input(seed: int, size: int = 64) -> pb.ImageInput:
    rng = np.random.default_rng(seed)
    array = rng.standard_normal((3, size, size)).astype(np.float32)
    return pb.ImageInput(tensor=tensors.to_proto(array))


def request(
    model: str,
    method: str,
    image: pb.ImageInput | bytes,
    *,
    classes: tuple[int, ...] = (),
    top_k: int = 0,
    options: dict[str, Any] | None = None,
    **output: Any,
) -> pb.ExplainRequest:
    source = image if isinstance(image, pb.ImageInput) else pb.ImageInput(encoded=image)
    values = {}
    for name, value in (options or {}).items():
        if isinstance(value, bool):
            values[name] = pb.OptionValue(flag=value)
        elif isinstance(value, list | tuple):
            values[name] = pb.OptionValue(numbers=pb.NumberList(values=list(value)))
        elif isinstance(value, str):
            values[name] = pb.OptionValue(text=value)
        else:
            values[name] = pb.OptionValue(number=float(value))
    return pb.ExplainRequest(
        model=model,
        method=method,
        input=source,
        targets=pb.Targets(classes=list(classes), top_k=top_k),
        options=values,
        output=pb.OutputOptions(**output),
    )


def heatmap(message: pb.Heatmap) -> np.ndarray:
    return np.asarray(tensors.from_proto(message.map), dtype=np.float32)


def metric_value(registry: Any, name: str, labels: dict[str, str] | None = None) -> float:
    """The value of a sample from a prometheus registry (0.0 when absent)."""
    value = registry.get_sample_value(name, labels or {})
    return 0.0 if value is None else float(value)


def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    """Whether ``condition()`` holds within ``timeout_s``, asked every 20 ms."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()
