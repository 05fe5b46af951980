"""The one registry of optimisation jobs. Adding a method: one class, one line below."""

from __future__ import annotations

from ..registry import Registry
from .activation_maximization import ActivationMaximization
from .adversarial import Adversarial, Fooling
from .base import JobMethod
from .deepdream import DeepDream
from .inversion import FeatureInversion
from .style import StyleTransfer, TextureSynthesis

JOB_METHODS: Registry[JobMethod] = Registry(
    "visualisation method",
    (
        ActivationMaximization(),
        DeepDream(),
        FeatureInversion(),
        Adversarial(),
        Fooling(),
        TextureSynthesis(),
        StyleTransfer(),
    ),
    plural="methods",
)


def get_job_method(method_id: str) -> JobMethod:
    """The registered job method ``method_id``, or ``InvalidArgument`` naming the valid ids."""
    return JOB_METHODS.lookup(method_id)
