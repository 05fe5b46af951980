"""Test models written as a ``torch.export`` program and as an ONNX graph, both with a
dynamic batch, and the methods a served ONNX graph offers."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

# Forward-only: an ONNX graph has outputs to read, no module to differentiate.
ONNX_METHODS = (
    "scorecam",
    "ablationcam",
    "eigencam",
    "occlusion",
    "feature_maps",
    "channel_profile",
    "embedding",
)


def export_program(module: torch.nn.Module, x: torch.Tensor, path: Path) -> Path:
    """``module`` traced on ``x`` with a dynamic batch, saved as a ``.pt2`` at ``path``."""
    batch = {"x": {0: torch.export.Dim("batch")}}
    torch.export.save(torch.export.export(module, (x,), dynamic_shapes=batch), path)
    return path


def export_onnx(module: torch.nn.Module, x: torch.Tensor, path: Path) -> Path:
    """``module`` traced on ``x`` as an ONNX graph (input ``x``, output ``logits``, both
    with a dynamic batch) at ``path``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (x,),
            str(path),
            dynamo=False,
            input_names=["x"],
            output_names=["logits"],
            dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
        )
    return path
