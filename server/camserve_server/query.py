"""A request as the domain sees it, free of protobuf: where the image is and what is asked.

``servicer.py`` builds these from protobuf; ``plan.py`` resolves and checks them once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .errors import InvalidArgument
from .models.imaging import Placement, decode_image, image_size, validate_tensor
from .models.loading import LoadedModel
from .runtime.cache import image_key

NO_IMAGE = "the request carries no image: give encoded bytes or a tensor"


@dataclass
class ImageSource:
    """Encoded image bytes, or a preprocessed float32 tensor ``(3, H, W)``."""

    encoded: bytes | None = None
    tensor: np.ndarray | None = None

    def content_key(self, loaded: LoadedModel, missing: str = NO_IMAGE) -> tuple[str, str]:
        """``(preprocessing, sha256)`` naming what the model sees: the preprocessing digest
        and a hash of the bytes, or ``"tensor"`` and a hash of the tensor and its shape."""
        if self.encoded is not None:
            return loaded.preprocess.digest(), image_key(self.encoded)
        if self.tensor is not None:
            array = np.ascontiguousarray(self.tensor)
            shape = str((array.dtype.str, array.shape)).encode()
            # The bytes as a flat uint8 view: memoryview.cast refuses a shape with a zero,
            # and an empty tensor must reach the shape check (INVALID_ARGUMENT).
            return "tensor", image_key(array.reshape(-1).view(np.uint8).data, shape)
        raise InvalidArgument(missing)

    def model_input(
        self, loaded: LoadedModel, max_pixels: int, missing: str = NO_IMAGE
    ) -> tuple[torch.Tensor, Placement | None]:
        """The model's input ``(3, H, W)``: decoded and preprocessed (with where it sits on
        the picture), or the caller's tensor, validated."""
        if self.encoded is not None:
            return loaded.preprocess(decode_image(self.encoded, max_pixels=max_pixels))
        if self.tensor is not None:
            return validate_tensor(self.tensor), None
        raise InvalidArgument(missing)

    def picture_size(self, max_pixels: int) -> tuple[int, int] | None:
        """``(height, width)`` without decoding: an encoded image's header, a tensor's last
        two sides; None for a tensor of fewer than two dimensions (its check refuses it)."""
        if self.encoded is not None:
            return image_size(self.encoded, max_pixels=max_pixels)
        if self.tensor is not None and self.tensor.ndim >= 2:
            return int(self.tensor.shape[-2]), int(self.tensor.shape[-1])
        if self.tensor is None:
            raise InvalidArgument(NO_IMAGE)
        return None


@dataclass
class ExplainQuery:
    """One request for a method's answer (Explain, Embed and Activations all make one)."""

    model: str
    method: str
    source: ImageSource
    classes: tuple[int, ...] = ()
    top_k: int = 0
    layer: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    out_size: tuple[int, int] | None = None
    dtype: str = "float32"
    return_raw: bool = False
    deadline: float | None = None
    faithfulness: tuple[str, ...] = ()
    faithfulness_steps: int = 0  # 0: the default
    faithfulness_percentile: int = 0  # 0: the default
