"""Optimisation-based visualisations run as stepped jobs (activation maximisation,
DeepDream, feature inversion, adversarial and fooling images, texture synthesis and
style transfer): ``base`` is the contract, ``registry`` the list of methods."""

from .base import (
    Job,
    JobMethod,
    JobOutcome,
    JobRequest,
    Normalisation,
    StepEvent,
)
from .registry import JOB_METHODS, get_job_method

__all__ = [
    "JOB_METHODS",
    "Job",
    "JobMethod",
    "JobOutcome",
    "JobRequest",
    "Normalisation",
    "StepEvent",
    "get_job_method",
]
