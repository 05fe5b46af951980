"""``python -m bench.vit``: Grad-CAM on a vision transformer, camserve against pytorch-grad-cam.

ViT-B/16 at 224 (torchvision, seeded random weights, its zero-initialised head drawn at
random so the maps are not empty) on the CPU, or CUDA when present. The same JPEG
images go to an in-process camserve server (batched, ``--concurrency`` callers, at the
default layer ``encoder.layers.encoder_layer_11.ln_1``), and to pytorch-grad-cam's
``GradCAM`` at that layer with its ``reshape_transform`` recipe, one image at a time as
a simple Python service calls it. Reported: images per second of each, their ratio,
camserve served one request at a time too, and the largest difference of the maps.
``--quick`` runs a tiny ViT at 32x32 (the test suite uses it to check the harness runs;
its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torchvision.models.vision_transformer import VisionTransformer

from camserve_server.config import Settings, load_config_file
from camserve_server.inprocess import ServerThread
from camserve_server.models.imaging import Preprocess, decode_image

from .inputs import jpeg_images
from .loadgen import run_load
from .run import max_diff, served_maps

MODEL = "bench"
CONFIG = """
[[models]]
name = "bench"
arch = "bench.vit:{factory}"
num_classes = 1000
input_size = [{size}, {size}]
"""
LAYER = "encoder.layers.encoder_layer_{last}.ln_1"
Reshape = Callable[[torch.Tensor], torch.Tensor]


def vit_b_16(num_classes: int = 1000) -> nn.Module:
    """torchvision ViT-B/16 at 224 with a random head (torchvision's is all zeros)."""
    return _random_head(VisionTransformer(224, 16, 12, 12, 768, 3072, num_classes=num_classes))


def tiny_vit(num_classes: int = 1000) -> nn.Module:
    """A two-block ViT at 32x32 with 8x8 patches, for ``--quick``."""
    return _random_head(VisionTransformer(32, 8, 2, 2, 32, 64, num_classes=num_classes))


def _random_head(model: nn.Module) -> nn.Module:
    head = model.get_submodule("heads.head")
    assert isinstance(head, nn.Linear)
    nn.init.normal_(head.weight, std=0.02)
    return model


FACTORIES: dict[str, Callable[..., nn.Module]] = {"vit_b_16": vit_b_16, "tiny_vit": tiny_vit}


def reshape_transform(grid: int) -> Reshape:
    """pytorch-grad-cam's ViT recipe: drop the class token, patches on the grid, channels first."""

    def transform(tensor: torch.Tensor) -> torch.Tensor:
        result = tensor[:, 1:, :].reshape(tensor.size(0), grid, grid, tensor.size(2))
        return result.transpose(2, 3).transpose(1, 2)

    return transform


def pytorch_grad_cam_maps(
    model: nn.Module,
    layer: str,
    grid: int,
    images: Sequence[bytes],
    preprocess: Preprocess,
    device: torch.device,
) -> tuple[float, list[np.ndarray]]:
    """Images per second of pytorch-grad-cam's ``GradCAM`` with the reshape recipe, one
    decoded image at a time (after one warm-up), and its maps."""
    from pytorch_grad_cam import GradCAM

    cam = GradCAM(
        model=model,
        target_layers=[model.get_submodule(layer)],
        reshape_transform=reshape_transform(grid),
    )

    def one(data: bytes) -> np.ndarray:
        x, _ = preprocess(decode_image(data))
        maps = cam(input_tensor=x[None].to(device), targets=None)  # numpy: synchronised
        return np.asarray(maps[0], dtype=np.float32)

    one(images[0])
    started = time.perf_counter()
    maps = [one(data) for data in images]
    return len(images) / (time.perf_counter() - started), maps


def start_server(factory: str, size: int, device: str, folder: Path) -> ServerThread:
    """An in-process server of ``bench.vit:<factory>`` on ``device``."""
    config = folder / "vit.toml"
    config.write_text(CONFIG.format(factory=factory, size=size))
    _, models = load_config_file(config)
    settings = replace(Settings(port=0, metrics_port=-1, devices=device), models=models)
    thread = ServerThread(settings)
    thread.start()
    return thread


def measure(args: argparse.Namespace) -> dict[str, Any]:
    factory, size, grid, blocks = (
        ("tiny_vit", 32, 4, 2) if args.quick else ("vit_b_16", 224, 14, 12)
    )
    layer = LAYER.format(last=blocks - 1)
    device = torch.device(args.device)
    images = jpeg_images(args.images + 1, size, seed=1)
    warm_up, timed = images[0], images[1:]
    preprocess = Preprocess(input_size=(size, size))
    with tempfile.TemporaryDirectory() as name:
        thread = start_server(factory, size, args.device, Path(name))
        try:
            assert thread.runtime is not None
            served_layer = thread.runtime.models[MODEL].primary.default_layer
            served_maps(thread.address, "gradcam", [warm_up], {})
            sequential_s, maps = served_maps(thread.address, "gradcam", timed, {})
            load = asyncio.run(
                run_load(
                    thread.address,
                    MODEL,
                    ["gradcam"],
                    timed,
                    concurrency=args.concurrency,
                    requests=len(timed),
                )
            )
        finally:
            thread.stop()
    torch.manual_seed(0)  # the weights the server built; trainable, as people use it
    model = FACTORIES[factory]().eval().to(device)
    reference_ips, reference_maps = pytorch_grad_cam_maps(
        model, layer, grid, timed, preprocess, device
    )
    served_ips = load.throughput
    return {
        "model": {"arch": factory, "input": size, "layer": served_layer, "device": args.device},
        "images": len(timed),
        "camserve": {**load.summary(), "images_per_s": served_ips},
        "camserve_sequential": {"images_per_s": 1.0 / sequential_s},
        "pytorch_grad_cam": {"images_per_s": reference_ips, "layer": layer},
        "ratio": served_ips / reference_ips,
        "ratio_sequential": (1.0 / sequential_s) / reference_ips,
        "max_abs_diff": max_diff(maps, reference_maps),
    }


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--device", default="cuda:0" if torch.cuda.is_available() else "cpu", help="cpu, cuda:0"
    )
    parser.add_argument("--images", type=int, default=32, help="distinct images, timed")
    parser.add_argument("--concurrency", type=int, default=16, help="callers of the server")
    parser.add_argument("--quick", action="store_true", help="a tiny ViT: checks the harness")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.concurrency = min(args.images, 6), 3
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    results = measure(args)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(
            f"ViT Grad-CAM ({results['model']['arch']} at {results['model']['input']}, "
            f"{args.device}, {results['images']} images)\n"
            f"  camserve served, batched   {results['camserve']['images_per_s']:8.2f} images/s\n"
            f"  camserve, one at a time    {results['camserve_sequential']['images_per_s']:8.2f}"
            " images/s\n"
            f"  pytorch-grad-cam + reshape {results['pytorch_grad_cam']['images_per_s']:8.2f}"
            " images/s\n"
            f"  ratio {results['ratio']:.2f} (one at a time {results['ratio_sequential']:.2f}); "
            f"max abs difference of the maps {results['max_abs_diff']:.2g}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
