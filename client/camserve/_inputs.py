"""Caller arguments to request messages, checked before anything is sent.

Whatever the SDK can reject locally raises ``InvalidArgumentError`` here: a
missing or doubled image, an unreadable file, a bad array, targets given twice,
an unknown heatmap dtype, an option value of an unsupported type.
"""

from __future__ import annotations

import io
import math
import os
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeAlias

import numpy as np
import numpy.typing as npt

from camserve import tensors
from camserve.errors import InvalidArgumentError
from camserve.v1 import explain_pb2 as pb

if TYPE_CHECKING:
    from PIL import Image as PILImage

ImageInput: TypeAlias = (
    "str | os.PathLike[str] | bytes | bytearray | memoryview | PILImage.Image | npt.NDArray[Any]"
)
"""A file path, encoded bytes, a PIL image, or a uint8 ``(H, W, 3)`` array."""
OptionValue: TypeAlias = (
    "bool | int | float | str | Sequence[float] | np.generic | npt.NDArray[Any]"
)
"""A method option's value: a flag, a number, a string, or a list of numbers."""
OptionDefault: TypeAlias = "bool | int | float | str | list[int | float]"
"""An option's default as the server lists it (whole numbers as ``int``)."""

HEATMAP_DTYPES: Final[dict[str, pb.DType.ValueType]] = {
    "float32": pb.DTYPE_FLOAT32,
    "float16": pb.DTYPE_FLOAT16,
    "uint8": pb.DTYPE_UINT8,
}
MAX_OUTPUT_SIDE: Final = 8192
_PNG_MODES: Final = ("1", "L", "LA", "I", "I;16", "P", "RGB", "RGBA")


def _pil_image_class() -> type | None:
    """``PIL.Image.Image`` if Pillow is already imported: else nothing can be a PIL image."""
    module = sys.modules.get("PIL.Image")
    image_class = getattr(module, "Image", None)
    return image_class if isinstance(image_class, type) else None


def _png(image: Any) -> bytes:
    if image.mode not in _PNG_MODES:
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _array_png(array: npt.NDArray[Any]) -> bytes:
    from PIL import Image

    if array.dtype != np.uint8:
        raise InvalidArgumentError(
            f"image arrays must be uint8 (H, W, 3), got {array.dtype}; "
            "pass a preprocessed float32 (3, H, W) array as tensor= instead"
        )
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (1, 3, 4))):
        raise InvalidArgumentError(
            f"image arrays must have shape (H, W, 3), (H, W, 4) or (H, W), got {array.shape}"
        )
    if array.size == 0:
        raise InvalidArgumentError(f"the image array is empty: shape {array.shape}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    return _png(Image.fromarray(np.ascontiguousarray(array)))


def encode_image(image: ImageInput) -> bytes:
    """Encoded image bytes for ``image``: file contents, bytes as given, PIL or arrays as PNG."""
    if isinstance(image, bytes | bytearray | memoryview):
        data = bytes(image)
        if not data:
            raise InvalidArgumentError("the image bytes are empty")
        return data
    if isinstance(image, str | os.PathLike):
        try:
            with open(image, "rb") as file:
                data = file.read()
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise InvalidArgumentError(
                f"cannot read image {os.fspath(image)!r}: {reason}"
            ) from None
        if not data:
            raise InvalidArgumentError(f"the image file {os.fspath(image)!r} is empty")
        return data
    if isinstance(image, np.ndarray):
        return _array_png(image)
    pil_image = _pil_image_class()
    if pil_image is not None and isinstance(image, pil_image):
        return _png(image)
    raise InvalidArgumentError(
        f"image must be a path, bytes, a PIL image or a uint8 array, got {type(image).__name__}"
    )


def tensor_proto(tensor: npt.ArrayLike) -> pb.Tensor:
    """A preprocessed ``(3, H, W)`` or ``(1, 3, H, W)`` float array as a float32 ``Tensor``."""
    array = np.asarray(tensor)
    if not np.issubdtype(array.dtype, np.floating):
        raise InvalidArgumentError(f"tensor must be a float32 array, got {array.dtype}")
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3 or array.shape[0] != 3:
        raise InvalidArgumentError(
            f"tensor must have shape (3, H, W) or (1, 3, H, W), got {np.shape(tensor)}"
        )
    return tensors.to_proto(array, dtype=np.float32)


def image_input(image: ImageInput | None, tensor: npt.ArrayLike | None) -> pb.ImageInput:
    """The ``ImageInput`` for exactly one of ``image`` and ``tensor``."""
    if (image is None) == (tensor is None):
        raise InvalidArgumentError("give exactly one of image= and tensor=")
    if tensor is not None:
        return pb.ImageInput(tensor=tensor_proto(tensor))
    assert image is not None
    return pb.ImageInput(encoded=encode_image(image))


def option_value(name: str, value: OptionValue) -> pb.OptionValue:
    """One method option as an ``OptionValue``."""
    if isinstance(value, bool | np.bool_):
        return pb.OptionValue(flag=bool(value))
    if isinstance(value, int | float | np.integer | np.floating):
        return pb.OptionValue(number=_finite(name, value))
    if isinstance(value, str):
        return pb.OptionValue(text=value)
    if isinstance(value, Sequence | np.ndarray):
        numbers = [_finite(name, v) for v in value]
        return pb.OptionValue(numbers=pb.NumberList(values=numbers))
    raise InvalidArgumentError(
        f"option {name}: expected a bool, number, string or list of numbers, "
        f"got {type(value).__name__}"
    )


def _finite(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise InvalidArgumentError(f"option {name}: expected a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise InvalidArgumentError(f"option {name}: expected a finite number, got {value!r}")
    return number


def option_from_proto(value: pb.OptionValue) -> OptionDefault | None:
    """An ``OptionValue`` as a Python value (integers as ``int``); None when unset."""
    kind = value.WhichOneof("kind")
    if kind == "number":
        return int(value.number) if value.number.is_integer() else value.number
    if kind == "text":
        return value.text
    if kind == "flag":
        return value.flag
    if kind == "numbers":
        return [int(v) if v.is_integer() else v for v in value.numbers.values]
    return None


def targets_proto(targets: int | Sequence[int] | None, top_k: int | None) -> pb.Targets | None:
    """``Targets`` for explicit classes or ``top_k`` (not both); None: the top-1 class."""
    if targets is not None and top_k is not None:
        raise InvalidArgumentError("give targets= or top_k=, not both")
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, int | np.integer) or top_k < 1:
            raise InvalidArgumentError(f"top_k must be a positive integer, got {top_k!r}")
        return pb.Targets(top_k=int(top_k))
    if targets is None:
        return None
    classes = [targets] if isinstance(targets, int | np.integer) else list(targets)
    if not classes:
        raise InvalidArgumentError("targets is empty; pass None for the top-1 class")
    for c in classes:
        if isinstance(c, bool) or not isinstance(c, int | np.integer) or c < 0:
            raise InvalidArgumentError(f"targets must be class indices >= 0, got {c!r}")
    return pb.Targets(classes=[int(c) for c in classes])


def output_proto(size: tuple[int, int] | None, dtype: str, return_raw: bool) -> pb.OutputOptions:
    """``OutputOptions``: heatmap ``size=(height, width)`` (None = image size), dtype, raw."""
    if dtype not in HEATMAP_DTYPES:
        raise InvalidArgumentError(
            f"dtype must be one of {', '.join(HEATMAP_DTYPES)}, got {dtype!r}"
        )
    height = width = 0
    if size is not None:
        try:
            height, width = (int(side) for side in size)
        except (TypeError, ValueError):
            raise InvalidArgumentError(f"size must be (height, width), got {size!r}") from None
        if not (0 < height <= MAX_OUTPUT_SIDE and 0 < width <= MAX_OUTPUT_SIDE):
            raise InvalidArgumentError(
                f"size sides must be in [1, {MAX_OUTPUT_SIDE}], got {(height, width)}"
            )
    return pb.OutputOptions(
        height=height, width=width, dtype=HEATMAP_DTYPES[dtype], return_raw=bool(return_raw)
    )


def _name(value: str | None, what: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{what} must be a string, got {type(value).__name__}")
    return value


def explain_template(
    *,
    model: str,
    method: str = "gradcam",
    targets: int | Sequence[int] | None = None,
    top_k: int | None = None,
    layer: str | None = None,
    options: Mapping[str, OptionValue] | None = None,
    size: tuple[int, int] | None = None,
    dtype: str = "float32",
    return_raw: bool = False,
) -> pb.ExplainRequest:
    """A checked ``ExplainRequest`` without its image: what every image of a batch shares."""
    if not _name(model, "model"):
        raise InvalidArgumentError("model is required")
    if not _name(method, "method"):
        raise InvalidArgumentError("method is empty")
    request = pb.ExplainRequest(
        model=model,
        method=method,
        layer=_name(layer, "layer"),
        options={name: option_value(name, v) for name, v in (options or {}).items()},
        output=output_proto(size, dtype, return_raw),
    )
    chosen = targets_proto(targets, top_k)
    if chosen is not None:
        request.targets.CopyFrom(chosen)
    return request


def with_input(
    template: pb.ExplainRequest,
    image: ImageInput | None,
    tensor: npt.ArrayLike | None = None,
    request_id: str = "",
) -> pb.ExplainRequest:
    """A copy of ``template`` with its image (read and encoded here) and ``request_id``."""
    source = image_input(image, tensor)
    request = pb.ExplainRequest()
    request.CopyFrom(template)
    request.request_id = request_id
    request.input.CopyFrom(source)
    return request


def batch_item(template: pb.ExplainRequest, item: Any, request_id: str) -> pb.ExplainRequest:
    """One ``explain_many`` item: a floating-point array is a tensor, anything else an image."""
    if isinstance(item, np.ndarray) and np.issubdtype(item.dtype, np.floating):
        return with_input(template, None, item, request_id)
    return with_input(template, item, None, request_id)


def embed_request(
    image: ImageInput | None,
    tensor: npt.ArrayLike | None,
    *,
    model: str,
    layer: str | None = None,
    normalize: bool = False,
) -> pb.EmbedRequest:
    """A checked ``EmbedRequest``."""
    if not _name(model, "model"):
        raise InvalidArgumentError("model is required")
    return pb.EmbedRequest(
        model=model,
        input=image_input(image, tensor),
        layer=_name(layer, "layer"),
        normalize=bool(normalize),
    )


def activations_request(
    image: ImageInput | None,
    tensor: npt.ArrayLike | None,
    *,
    model: str,
    layer: str | None = None,
    top_k: int = 0,
    profile_only: bool = False,
) -> pb.ActivationsRequest:
    """A checked ``ActivationsRequest``; ``top_k=0`` keeps every channel."""
    if not _name(model, "model"):
        raise InvalidArgumentError("model is required")
    if isinstance(top_k, bool) or not isinstance(top_k, int | np.integer) or top_k < 0:
        raise InvalidArgumentError(f"top_k must be an integer >= 0, got {top_k!r}")
    mode = pb.ACTIVATIONS_MODE_CHANNEL_PROFILE if profile_only else pb.ACTIVATIONS_MODE_FEATURE_MAPS
    return pb.ActivationsRequest(
        model=model,
        input=image_input(image, tensor),
        layer=_name(layer, "layer"),
        top_k=int(top_k),
        mode=mode,
    )


def filters_request(model: str, layer: str | None = None) -> pb.FiltersRequest:
    """A checked ``FiltersRequest``; no layer = the model's first convolution."""
    if not _name(model, "model"):
        raise InvalidArgumentError("model is required")
    return pb.FiltersRequest(model=model, layer=_name(layer, "layer"))


__all__ = [
    "HEATMAP_DTYPES",
    "ImageInput",
    "OptionDefault",
    "OptionValue",
    "activations_request",
    "batch_item",
    "embed_request",
    "encode_image",
    "explain_template",
    "filters_request",
    "image_input",
    "option_from_proto",
    "option_value",
    "output_proto",
    "targets_proto",
    "tensor_proto",
    "with_input",
]
