"""Baselines measured in the same run, on the same device and model.

1. the model's own throughput: batched forward under ``inference_mode``, and
   forward + input backward (the physical limit for this runtime);
2. pytorch-grad-cam, one request at a time, as a simple Python service uses it;
3. Captum ``Occlusion`` (``perturbations_per_eval=1``) and ``IntegratedGradients``
   with their defaults.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch
from torch import nn

from camserve_server.models.imaging import Preprocess, decode_image


def device_of(model: nn.Module) -> torch.device:
    """The device of the model's parameters, where every baseline runs."""
    return next(model.parameters()).device


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(run: Callable[[], None], items: int, repeats: int, device: torch.device) -> float:
    run()  # warm-up
    _synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        run()
    _synchronize(device)
    return items * repeats / (time.perf_counter() - started)


def forward_throughput(model: nn.Module, batch: int, size: int, repeats: int = 3) -> float:
    """Images per second of a batched forward pass in ``inference_mode``."""
    device = device_of(model)
    x = torch.randn(batch, 3, size, size, device=device)

    def run() -> None:
        with torch.inference_mode():
            model(x)

    return _rate(run, batch, repeats, device)


def forward_backward_throughput(model: nn.Module, batch: int, size: int, repeats: int = 3) -> float:
    """Images per second of forward + backward to the input (no parameter gradients)."""
    device = device_of(model)
    x = torch.randn(batch, 3, size, size, device=device)

    def run() -> None:
        leaf = x.clone().requires_grad_(True)
        model(leaf).max(dim=1).values.sum().backward()

    return _rate(run, batch, repeats, device)


def pytorch_grad_cam_rate(
    model: nn.Module, layer: nn.Module, images: Sequence[bytes], preprocess: Preprocess
) -> float:
    """Requests per second of pytorch-grad-cam, one decoded image at a time."""
    from pytorch_grad_cam import GradCAM

    cam = GradCAM(model=model, target_layers=[layer])
    device = device_of(model)

    def one(data: bytes) -> None:
        x, _ = preprocess(decode_image(data))
        cam(input_tensor=x[None].to(device), targets=None)  # returns numpy: synchronised

    one(images[0])
    started = time.perf_counter()
    for data in images:
        one(data)
    return len(images) / (time.perf_counter() - started)


def captum_occlusion_seconds(
    model: nn.Module, inputs: Sequence[torch.Tensor], window: int, stride: int
) -> float:
    """Seconds per image of Captum ``Occlusion`` with one perturbation per pass."""
    from captum.attr import Occlusion

    occlusion = Occlusion(model)

    def attribute(x: torch.Tensor, target: int) -> None:
        occlusion.attribute(
            x,
            sliding_window_shapes=(3, window, window),
            strides=(3, stride, stride),
            baselines=0.0,
            target=target,
            perturbations_per_eval=1,
        )

    return _seconds_per_image(model, inputs, attribute)


def captum_integrated_gradients_seconds(model: nn.Module, inputs: Sequence[torch.Tensor]) -> float:
    """Seconds per image of Captum ``IntegratedGradients`` with its defaults."""
    from captum.attr import IntegratedGradients

    ig = IntegratedGradients(model)
    return _seconds_per_image(model, inputs, lambda x, target: ig.attribute(x, target=target))


def _seconds_per_image(
    model: nn.Module,
    inputs: Sequence[torch.Tensor],
    attribute: Callable[[torch.Tensor, int], object],
) -> float:
    """Seconds per image of ``attribute(x, target)``, one image ``(1, 3, H, W)`` at a time
    on the model's device, for the class the model predicts (its forward counted too)."""
    device = device_of(model)
    inputs = [x.to(device) for x in inputs]
    _synchronize(device)
    started = time.perf_counter()
    for x in inputs:
        with torch.no_grad():
            target = int(model(x[None]).argmax())
        attribute(x[None], target)
    _synchronize(device)
    return (time.perf_counter() - started) / len(inputs)
