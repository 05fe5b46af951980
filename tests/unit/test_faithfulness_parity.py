"""Parity of the faithfulness scores with their references, on the same model, inputs,
classes and maps (Grad-CAM's maps of held-out demo images, and random maps), to 1e-4:

- deletion, insertion: torchcam 0.5's ``DeletionInsertionMetric`` with a softmax, given
  the very maps through a CAM extractor that returns them;
- drop_in_confidence, increase_in_confidence: pytorch-grad-cam's ``DropInConfidence`` and
  ``IncreaseInConfidence`` with ``ClassifierOutputSoftmaxTarget``;
- road_morf, road_lerf: pytorch-grad-cam's ``ROADMostRelevantFirst(p)`` and
  ``ROADLeastRelevantFirst(p)``, their imputation noise matched by seeding the global
  generator they draw from as the server seeds its own for every map; the imputation
  itself is also compared with the noise off.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch
from faithfulness_rows import demo_images, demo_model, gradcam_maps, random_maps
from pytorch_grad_cam.metrics.cam_mult_image import DropInConfidence, IncreaseInConfidence
from pytorch_grad_cam.metrics.perturbation_confidence import (
    RemoveLeastRelevantFirst,
    RemoveMostRelevantFirst,
)
from pytorch_grad_cam.metrics.road import (
    NoisyLinearImputer,
    ROADLeastRelevantFirst,
    ROADMostRelevantFirst,
)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
from torch import nn

from camserve_server.faithfulness import Faithfulness, score_maps
from camserve_server.faithfulness.imputation import noisy_linear_imputation
from camserve_server.faithfulness.road import SEED, kept_pixels

torchcam_metrics = pytest.importorskip("torchcam.metrics")

TOLERANCE = 1e-4
RecordProperty = Callable[[str, object], None]
Rows = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@pytest.fixture(scope="module")
def rows() -> Rows:
    """Four demo images twice, with their classes: Grad-CAM's maps, then random maps."""
    x, classes = demo_images(4)
    maps = torch.cat([gradcam_maps(x, classes), random_maps(4)])
    return torch.cat([x, x]), torch.cat([classes, classes]), maps


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


def _torchcam(steps: int, rows: Rows) -> dict[str, list[float]]:
    """torchcam's deletion and insertion areas, one sample at a time."""
    x, classes, maps = rows
    found: dict[str, list[float]] = {"deletion": [], "insertion": []}
    for i in range(x.shape[0]):
        extractor = GivenMaps(demo_model().module, maps[i : i + 1])
        softmax = functools.partial(torch.softmax, dim=-1)
        metric = torchcam_metrics.DeletionInsertionMetric(extractor, softmax, steps=steps)
        metric.update(x[i : i + 1], class_idx=[int(classes[i])])
        found["deletion"].append(metric.deletion)
        found["insertion"].append(metric.insertion)
    return found


def _assert_close(
    actual: torch.Tensor, expected: list[float], record_property: RecordProperty, name: str
) -> None:
    difference = float((actual.double() - torch.tensor(expected, dtype=torch.float64)).abs().max())
    record_property(f"{name}_max_abs_diff", difference)
    assert difference <= TOLERANCE, (name, actual.tolist(), expected)


@pytest.mark.parametrize("steps", [20, 7])
def test_deletion_and_insertion_match_torchcam(
    rows: Rows, steps: int, record_property: RecordProperty
) -> None:
    x, classes, maps = rows
    request = Faithfulness(("deletion", "insertion"), steps=steps)
    ours = score_maps(request, demo_model(), x, classes, maps)
    reference = _torchcam(steps, rows)
    for name in ("deletion", "insertion"):
        _assert_close(ours[name], reference[name], record_property, name)
    assert len(set(np.round(reference["deletion"], 4))) > 1, "the curves differ per map"


def _softmax_targets(classes: torch.Tensor) -> list[ClassifierOutputSoftmaxTarget]:
    return [ClassifierOutputSoftmaxTarget(int(c)) for c in classes]


def test_confidence_change_matches_pytorch_grad_cam(
    rows: Rows, record_property: RecordProperty
) -> None:
    x, classes, maps = rows
    request = Faithfulness(("drop_in_confidence", "increase_in_confidence"))
    ours = score_maps(request, demo_model(), x, classes, maps)
    cams, targets, module = maps.numpy(), _softmax_targets(classes), demo_model().module
    drop = DropInConfidence()(x, cams, targets, module)
    increase = IncreaseInConfidence()(x, cams, targets, module)
    _assert_close(ours["drop_in_confidence"], drop.tolist(), record_property, "drop")
    assert ours["increase_in_confidence"].tolist() == increase.tolist()
    assert float(drop.max()) > 0


@pytest.mark.parametrize("percentile", [80, 35])
def test_road_matches_pytorch_grad_cam_with_its_noise_seeded(
    rows: Rows, percentile: int, record_property: RecordProperty
) -> None:
    x, classes, maps = rows
    request = Faithfulness(("road_morf", "road_lerf"), percentile=percentile)
    ours = score_maps(request, demo_model(), x, classes, maps)
    references = {"road_morf": ROADMostRelevantFirst, "road_lerf": ROADLeastRelevantFirst}
    for name, reference in references.items():
        expected = []
        for i in range(x.shape[0]):
            torch.manual_seed(SEED)  # the reference draws its noise from the global generator
            metric = reference(percentile=percentile)
            target = _softmax_targets(classes[i : i + 1])
            expected.append(float(metric(x[i : i + 1], maps[i : i + 1].numpy(), target,
                                         demo_model().module)[0]))  # fmt: skip
        _assert_close(ours[name], expected, record_property, name)
        assert max(abs(v) for v in expected) > 1e-3, "the imputation changed the prediction"


@pytest.mark.parametrize("most_relevant", [True, False])
def test_the_imputation_matches_pytorch_grad_cam_without_noise(most_relevant: bool) -> None:
    x, classes = demo_images(2)
    maps = torch.cat([gradcam_maps(x, classes)[:1], random_maps(1)])
    for image, heatmap in zip(x, maps, strict=True):
        keep = kept_pixels(heatmap.numpy(), 80, most_relevant=most_relevant)
        reference = NoisyLinearImputer(noise=0.0)(image, torch.from_numpy(keep.astype(np.float32)))
        ours = noisy_linear_imputation(image, keep, None, noise=0.0)
        assert 0 < int((~keep).sum()) < keep.size
        assert float((ours - reference).abs().max()) <= 1e-5
        assert torch.equal(ours[:, torch.from_numpy(keep)], image[:, torch.from_numpy(keep)])


def test_the_kept_pixels_are_the_references() -> None:
    heatmap = random_maps(1, seed=3)[0]
    for percentile in (1, 20, 80, 99):
        for most_relevant, reference in (
            (True, RemoveMostRelevantFirst),
            (False, RemoveLeastRelevantFirst),
        ):
            masks: list[torch.Tensor] = []

            def capture(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
                masks.append(mask)  # noqa: B023 (called at once, in this iteration)
                return image

            reference(percentile, capture)(torch.zeros(3, *heatmap.shape), heatmap)
            ours = kept_pixels(heatmap.numpy(), percentile, most_relevant=most_relevant)
            assert np.array_equal(ours, masks[0].numpy() > 0.5)
            assert abs(float((~ours).mean()) - (100 - percentile) / 100) < 1e-3
