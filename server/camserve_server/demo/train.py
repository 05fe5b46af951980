"""Train the demo model on generated shapes: ``python -m camserve_server.demo.train``.

Deterministic (fixed seeds, deterministic algorithms, two threads), a few minutes on a
CPU. Writes ``weights.pt`` (a state dict), ``labels.txt`` and one sample image per class,
and prints the held-out accuracy and Grad-CAM pointing-game rate.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from . import LABELS_PATH, SAMPLES_DIR, WEIGHTS_PATH, preprocess
from .data import CLASS_NAMES, Sample, make_dataset, make_sample
from .model import build_demo_model

TRAIN_SEED, TEST_SEED, SAMPLE_SEED = 1, 2, 3


def _tensors(samples: list[Sample]) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.stack([preprocess(s.image) for s in samples])
    y = torch.tensor([s.label for s in samples])
    return x, y


def accuracy(model: nn.Module, samples: list[Sample]) -> float:
    """Share of ``samples`` the model classifies correctly."""
    x, y = _tensors(samples)
    with torch.inference_mode():
        predicted = model(x).argmax(dim=1)
    return float((predicted == y).float().mean())


def pointing_rate(model: nn.Module, samples: list[Sample], layer: str = "features") -> float:
    """Share of ``samples`` whose Grad-CAM peak (true class, at ``layer``) lies in the box."""
    x, y = _tensors(samples)
    stored: list[torch.Tensor] = []
    hook = model.get_submodule(layer).register_forward_hook(lambda m, i, out: stored.append(out))
    try:
        logits = model(x)
    finally:
        hook.remove()
    (activation,) = stored
    (gradients,) = torch.autograd.grad(logits.gather(1, y[:, None]).sum(), activation)
    weights = gradients.mean(dim=(2, 3), keepdim=True)
    cam = torch.relu((weights * activation).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)
    peaks = cam.flatten(1).argmax(dim=1).tolist()
    width = x.shape[-1]
    hits = 0
    for sample, peak in zip(samples, peaks, strict=True):
        py, px = divmod(int(peak), width)
        x0, y0, x1, y1 = sample.box
        hits += int(x0 <= px <= x1 and y0 <= py <= y1)
    return hits / len(samples)


def train(n_train: int, epochs: int, batch_size: int, lr: float = 3e-3) -> nn.Module:
    """A freshly trained demo model (eval mode), the same for the same arguments."""
    torch.manual_seed(0)
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    model = build_demo_model(len(CLASS_NAMES))
    x, y = _tensors(make_dataset(n_train, TRAIN_SEED))
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((len(x) + batch_size - 1) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps)
    generator = torch.Generator().manual_seed(0)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for start in range(0, len(x), batch_size):
            index = order[start : start + batch_size]
            batch = x[index]
            if torch.rand((), generator=generator) < 0.5:
                batch = batch.flip(-1)
            if torch.rand((), generator=generator) < 0.5:
                batch = batch.flip(-2)
            loss = F.cross_entropy(model(batch), y[index])
            optimiser.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
            schedule.step()
            total += float(loss.detach()) * len(index)
        print(f"epoch {epoch + 1}/{epochs}: loss {total / len(x):.4f}", flush=True)
    return model.eval()


def write_samples(model: nn.Module) -> None:
    """One held-out sample image per class, named ``00_circle.png`` and so on."""
    SAMPLES_DIR.mkdir(exist_ok=True)
    rng = np.random.default_rng(SAMPLE_SEED)
    for label, name in enumerate(CLASS_NAMES):
        sample = make_sample(rng, label)
        with torch.inference_mode():
            predicted = int(model(preprocess(sample.image)[None]).argmax())
        if predicted != label:
            print(f"warning: sample {name} is classified as {CLASS_NAMES[predicted]}")
        Image.fromarray(sample.image).save(SAMPLES_DIR / f"{label:02d}_{name}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description="Train the demo model.")
    parser.add_argument("--train", type=int, default=6000, help="training images")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    started = time.perf_counter()
    model = train(args.train, args.epochs, args.batch_size)
    trained = time.perf_counter() - started
    held_out = make_dataset(1200, TEST_SEED)
    print(f"held-out accuracy: {accuracy(model, held_out):.4f}")
    print(f"held-out Grad-CAM pointing game: {pointing_rate(model, held_out):.4f}")
    torch.save(model.state_dict(), WEIGHTS_PATH)
    LABELS_PATH.write_text("\n".join(CLASS_NAMES) + "\n")
    write_samples(model)
    size = WEIGHTS_PATH.stat().st_size / 1024
    print(f"trained in {trained:.0f} s; wrote {WEIGHTS_PATH.name} ({size:.0f} KiB)")


if __name__ == "__main__":
    main()
