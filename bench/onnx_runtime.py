"""onnxruntime baselines: the model exported at bench time, run on the CPU provider.

Forward throughput against eager torch, and occlusion (Zeiler & Fergus 2014:
``attr(p) = mean over windows W covering p of y_c(x) - y_c(x with W filled)``)
run by a loop equivalent to the engine's (``methods/occlusion.py``): the same
window positions, the occluded copies in chunks of the engine's size, the same
heatmap (``signed_heatmaps``). Served occlusion on an ONNX model is measured
through the server only once the server loads ONNX models.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from camserve_server.methods.heatmap import signed_heatmaps
from camserve_server.methods.occlusion import window_starts


def export(model: nn.Module, size: int, folder: Path) -> Path:
    """Export ``model`` to ``folder/model.onnx`` with a dynamic batch dimension."""
    path = folder / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            model,
            (torch.randn(1, 3, size, size),),
            str(path),
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            dynamo=False,
        )
    return path


def session(path: Path, threads: int) -> ort.InferenceSession:
    """A CPU-provider session using ``threads`` intra-op threads, like torch here."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _logits(sess: ort.InferenceSession, x: np.ndarray) -> np.ndarray:
    out: np.ndarray = sess.run(["logits"], {"input": x})[0]
    return out


def forward_throughput(
    sess: ort.InferenceSession, batch: int, size: int, repeats: int = 3
) -> float:
    """Images per second of a batched forward pass."""
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size), dtype=np.float32)
    _logits(sess, x)  # warm-up
    started = time.perf_counter()
    for _ in range(repeats):
        _logits(sess, x)
    return batch * repeats / (time.perf_counter() - started)


def occlusion_heatmap(
    sess: ort.InferenceSession, x: np.ndarray, window: int, stride: int, chunk: int
) -> np.ndarray:
    """Occlusion heatmap ``(H, W)`` in [0, 1] of one image ``(3, H, W)`` for its top class,
    the fill 0 (the engine's default), ``chunk`` occluded copies per forward."""
    _, height, width = x.shape
    windows = [
        (top, left)
        for top in window_starts(height, window, stride)
        for left in window_starts(width, window, stride)
    ]
    logits = _logits(sess, x[None])[0]
    target = int(logits.argmax())
    scores = np.empty(len(windows), dtype=np.float32)
    for start in range(0, len(windows), chunk):
        part = windows[start : start + chunk]
        inputs = np.repeat(x[None], len(part), axis=0)
        for row, (top, left) in enumerate(part):
            inputs[row, :, top : top + window, left : left + window] = 0.0
        scores[start : start + len(part)] = _logits(sess, inputs)[:, target]
    drops = logits[target] - scores
    total = np.zeros((height, width), dtype=np.float32)
    coverage = np.zeros((height, width), dtype=np.float32)
    for drop, (top, left) in zip(drops, windows, strict=True):
        total[top : top + window, left : left + window] += drop
        coverage[top : top + window, left : left + window] += 1
    mean_drop = np.where(coverage > 0, total / np.maximum(coverage, 1), 0.0).astype(np.float32)
    attribution = torch.from_numpy(mean_drop)[None, None].expand(1, 3, -1, -1)
    heat: np.ndarray = signed_heatmaps(attribution)[0][0].numpy()
    return heat


def occlusion_seconds(
    sess: ort.InferenceSession,
    inputs: Sequence[torch.Tensor],
    window: int,
    stride: int,
    chunk: int,
) -> tuple[float, list[np.ndarray]]:
    """Seconds per image of ``occlusion_heatmap`` and the heatmaps, for a parity check."""
    heatmaps = []
    started = time.perf_counter()
    for x in inputs:
        heatmaps.append(occlusion_heatmap(sess, x.numpy(), window, stride, chunk))
    return (time.perf_counter() - started) / len(inputs), heatmaps
