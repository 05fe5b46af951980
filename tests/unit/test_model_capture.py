"""One forward pass that records layers: jobs and image-set indexing share it."""

from __future__ import annotations

import torch
import torchvision

from camserve_server.models import ExplainableModel
from camserve_server.models.capture import forward_capture


def test_a_capture_keeps_values_an_in_place_relu_would_overwrite() -> None:
    """vgg11_bn's ``features.1`` (batch norm) feeds an in-place ReLU: the captured output
    stays the batch norm's, negative values included; ``:input`` reads a module's input."""
    torch.manual_seed(0)
    model = ExplainableModel(
        torchvision.models.vgg11_bn(weights=None, num_classes=10), input_size=(32, 32)
    )
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        captured = forward_capture(model, x, ["features.1", "classifier.6:input"])
        conv, norm = model.submodule("features.0"), model.submodule("features.1")
        expected = norm(conv(x))
        logits = model.module(x)
    assert (captured.layers["features.1"] < 0).any()
    torch.testing.assert_close(captured.layers["features.1"], expected)
    assert captured.logits is not None
    torch.testing.assert_close(captured.logits, logits)
    head = model.submodule("classifier.6")
    torch.testing.assert_close(head(captured.layers["classifier.6:input"]), logits)
