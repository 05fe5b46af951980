"""Train the demo model on generated shapes: ``python -m camserve_server.demo.train``.

Deterministic (fixed seeds, one thread count), a few minutes on a CPU. Writes
``weights.pt`` (a state dict), ``labels.txt`` and one sample image per class.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from . import LABELS_PATH, SAMPLES_DIR, WEIGHTS_PATH, preprocess
from .data import CLASS_NAMES, Sample, make_dataset, make_sample
from .model import build_demo_model

TRAIN_SEED, TEST_SEED, SAMPLE_SEED = 1, 2, 3


def _tensors(samples: list[Sample]) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.stack([preprocess(s.image) for s in samples])
    y = torch.tensor([s.label for s in samples])
    return x, y


def accuracy(model: torch.nn.Module, samples: list[Sample]) -> float:
    """Share of ``samples`` the model classifies correctly."""
    x, y = _tensors(samples)
    with torch.inference_mode():
        predicted = model(x).argmax(dim=1)
    return float((predicted == y).float().mean())


def train(n_train: int, epochs: int, batch_size: int) -> torch.nn.Module:
    torch.manual_seed(0)
    torch.set_num_threads(2)
    model = build_demo_model(len(CLASS_NAMES))
    x, y = _tensors(make_dataset(n_train, TRAIN_SEED))
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    steps = epochs * ((len(x) + batch_size - 1) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=3e-3, total_steps=steps)
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
            loss = F.cross_entropy(model(batch), y[index])
            optimiser.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
            schedule.step()
            total += float(loss.detach()) * len(index)
        print(f"epoch {epoch + 1}/{epochs}: loss {total / len(x):.4f}", flush=True)
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description="Train the demo model.")
    parser.add_argument("--train", type=int, default=6000, help="training images")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    started = time.perf_counter()
    model = train(args.train, args.epochs, args.batch_size)
    held_out = make_dataset(1200, TEST_SEED)
    print(f"held-out accuracy: {accuracy(model, held_out):.4f}")
    torch.save(model.state_dict(), WEIGHTS_PATH)
    LABELS_PATH.write_text("\n".join(CLASS_NAMES) + "\n")
    SAMPLES_DIR.mkdir(exist_ok=True)
    rng = np.random.default_rng(SAMPLE_SEED)
    for label, name in enumerate(CLASS_NAMES):
        sample = make_sample(rng, label)
        Image.fromarray(sample.image).save(SAMPLES_DIR / f"{label:02d}_{name}.png")
    print(f"wrote {WEIGHTS_PATH.name} in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
