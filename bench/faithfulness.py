"""``python -m bench.faithfulness``: deletion and insertion, camserve against torchcam.

The same model, images, classes and maps (Grad-CAM's, from the engine) go to camserve's
faithfulness step (``faithfulness.score_maps``: every image's perturbed inputs in one
stream, chunks sized to the memory budget, one all-baseline input for the whole batch)
and to torchcam 0.5's ``DeletionInsertionMetric`` with a softmax (its default chunks of
32 inputs), given the very maps through a CAM extractor that returns them. Both compute
deletion and insertion with ``--steps`` steps. Reported: images per second of each,
camserve / torchcam, the forward passes each ran, and the largest difference of the
per-image areas (a check that both computed the same thing).

Default: torchvision ResNet-18 at 224 (seeded random weights, 10 classes), 16 images, on
CUDA when present. ``--quick`` runs the demo model at 64x64 on 4 images with 8 steps
(the test suite uses it to check the harness runs; its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torchvision
from torch import nn

from camserve_server.demo import INPUT_SIZE, load_demo_model, preprocess
from camserve_server.demo.data import make_dataset
from camserve_server.faithfulness import Faithfulness, score_maps
from camserve_server.methods import explain
from camserve_server.methods.chunking import memory_budget
from camserve_server.models import ExplainableModel

NAMES = ("deletion", "insertion")


class GivenMaps:
    """A torchcam CAM extractor whose maps are given in advance (one per sample)."""

    def __init__(self, model: nn.Module, maps: torch.Tensor) -> None:
        self.model = model
        self.maps = maps

    def __call__(self, *args: Any, **kwargs: Any) -> list[torch.Tensor]:
        return [self.maps]

    def fuse_cams(self, cams: list[torch.Tensor]) -> torch.Tensor:
        return cams[0]

    @contextlib.contextmanager
    def _hooks_off(self) -> Iterator[None]:
        yield


def _model(quick: bool, device: torch.device) -> ExplainableModel:
    """The demo model, or ResNet-18 at 224 with seeded random weights."""
    budget = memory_budget(0, device)
    if quick:
        module: nn.Module = load_demo_model()
        size = INPUT_SIZE
    else:
        torch.manual_seed(0)
        module = torchvision.models.resnet18(weights=None, num_classes=10).eval()
        size = (224, 224)
    return ExplainableModel(
        module.to(device), input_size=size, name="bench", memory_budget_bytes=budget
    )


def _inputs(quick: bool, count: int, size: tuple[int, int]) -> torch.Tensor:
    """Held-out demo images, or seeded random inputs of ``size``."""
    if quick:
        return torch.stack([preprocess(sample.image) for sample in make_dataset(count, 4242)])
    generator = torch.Generator().manual_seed(1)
    return torch.randn(count, 3, *size, generator=generator)


def _counted(module: nn.Module) -> tuple[list[int], Callable[[], None]]:
    """Inputs through ``module`` per call, and the function that removes the hook."""
    sizes: list[int] = []
    handle = module.register_forward_pre_hook(lambda _m, a: sizes.append(int(a[0].shape[0])))
    return sizes, handle.remove


def _timed(run: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    result = run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return result, time.perf_counter() - started


def _torchcam(
    model: ExplainableModel, x: torch.Tensor, classes: torch.Tensor, maps: torch.Tensor, steps: int
) -> tuple[float, float]:
    """torchcam's summed deletion and insertion areas over the batch, in one update."""
    from torchcam.metrics import DeletionInsertionMetric

    softmax = functools.partial(torch.softmax, dim=-1)
    metric = DeletionInsertionMetric(GivenMaps(model.module, maps), softmax, steps=steps)
    metric.update(x, class_idx=[int(c) for c in classes])
    return float(metric.deletion), float(metric.insertion)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    model = _model(args.quick, device)
    x = _inputs(args.quick, args.images, model.input_size).to(device)
    result = explain(model, "gradcam", x)
    classes = torch.cat([sample.targets for sample in result.samples])
    maps = torch.cat([s.heatmaps for s in result.samples if s.heatmaps is not None])
    request = Faithfulness(NAMES, steps=args.steps)
    score_maps(request, model, x[:1], classes[:1], maps[:1])  # warm-up
    ours_passes, unhook = _counted(model.module)
    ours, ours_s = _timed(lambda: score_maps(request, model, x, classes, maps), device)
    unhook()
    theirs_passes, unhook = _counted(model.module)
    theirs, theirs_s = _timed(lambda: _torchcam(model, x, classes, maps, args.steps), device)
    unhook()
    per_image = [_torchcam(model, x[i : i + 1], classes[i : i + 1], maps[i : i + 1], args.steps)
                 for i in range(min(4, args.images))]  # fmt: skip
    differences = [
        abs(float(ours[name][i]) - reference[k])
        for i, reference in enumerate(per_image)
        for k, name in enumerate(NAMES)
    ]
    differences += [abs(float(ours[name].sum()) - theirs[k]) for k, name in enumerate(NAMES)]
    images = args.images
    return {
        "model": {"arch": "demo" if args.quick else "resnet18", "input": list(x.shape[-2:])},
        "device": str(device),
        "images": images,
        "steps": args.steps,
        "camserve": {"images_per_s": images / ours_s, "forward_inputs": sum(ours_passes)},
        "torchcam": {"images_per_s": images / theirs_s, "forward_inputs": sum(theirs_passes)},
        "ratio": theirs_s / ours_s,
        "mean": {name: float(ours[name].mean()) for name in NAMES},
        "max_abs_diff": max(differences),
    }


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--device", default="cuda:0" if torch.cuda.is_available() else "cpu", help="cpu, cuda:0"
    )
    parser.add_argument("--images", type=int, default=16, help="images, timed")
    parser.add_argument("--steps", type=int, default=20, help="steps of each curve")
    parser.add_argument("--quick", action="store_true", help="the demo model: checks the harness")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.steps, args.device = min(args.images, 4), 8, "cpu"
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    results = measure(args)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(
            f"Deletion and insertion ({results['model']['arch']} at {results['model']['input']}, "
            f"{results['device']}, {results['images']} images, {results['steps']} steps)\n"
            f"  camserve  {results['camserve']['images_per_s']:8.2f} images/s, "
            f"{results['camserve']['forward_inputs']} inputs\n"
            f"  torchcam  {results['torchcam']['images_per_s']:8.2f} images/s, "
            f"{results['torchcam']['forward_inputs']} inputs\n"
            f"  ratio {results['ratio']:.2f}; max abs difference {results['max_abs_diff']:.2g}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
