"""Eigen-CAM (Muhammad & Yeasin 2020): the first principal component of the activations."""

from __future__ import annotations

import torch

from .base import BatchInput, Rows
from .cam_base import CamMethod
from .layer_pass import LayerRead


class EigenCam(CamMethod):
    """Project centred ``A`` (positions x channels) on its first right singular vector.

    The sign is fixed so the larger magnitude is positive (``abs(min) > abs(max)``
    flips it); class-agnostic, so every target of an image gets the same map.
    """

    id = "eigencam"
    needs_gradients = False
    description = "First principal component of the layer's activations (class-agnostic)."
    reference = "Muhammad & Yeasin 2020; pytorch-grad-cam EigenCAM (up to sign)"
    variant = "eigencam (sign: larger magnitude positive)"

    def cam_forward_only(self, batch: BatchInput, layer: LayerRead, rows: Rows) -> torch.Tensor:
        activation = layer.maps
        n, k, h, w = activation.shape
        positions = activation.float().nan_to_num(0.0).reshape(n, k, h * w).transpose(1, 2)
        centred = positions - positions.mean(dim=1, keepdim=True)
        _, _, vh = torch.linalg.svd(centred, full_matrices=False)
        projection = (centred @ vh[:, 0, :, None]).reshape(n, h, w)
        flat = projection.reshape(n, -1)
        flip = flat.amin(dim=1).abs() > flat.amax(dim=1).abs()
        projection = torch.where(flip[:, None, None], -projection, projection)
        return projection[rows.sample]
