"""The one registry of optimisation jobs. Adding a method: one class, one line below."""

from __future__ import annotations

from ..errors import InvalidArgument, choices
from .activation_maximization import ActivationMaximization
from .adversarial import Adversarial, Fooling
from .base import JobMethod
from .deepdream import DeepDream
from .inversion import FeatureInversion
from .style import StyleTransfer, TextureSynthesis

JOB_METHODS: dict[str, JobMethod] = {
    method.id: method
    for method in (
        ActivationMaximization(),
        DeepDream(),
        FeatureInversion(),
        Adversarial(),
        Fooling(),
        TextureSynthesis(),
        StyleTransfer(),
    )
}


def get_job_method(method_id: str) -> JobMethod:
    """The registered job method ``method_id``, or ``InvalidArgument`` naming the valid ids."""
    try:
        return JOB_METHODS[method_id]
    except KeyError:
        raise InvalidArgument(
            f"unknown visualisation method {method_id!r}; valid methods: {choices(JOB_METHODS)}"
        ) from None
