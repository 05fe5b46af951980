"""The demo model and job requests shared by the optimisation job tests (``test_jobs_*.py``)."""

from __future__ import annotations

import functools
from typing import Any

from camserve_server.demo import INPUT_SIZE, MEAN, STD, load_demo_model
from camserve_server.jobs import Job, JobRequest, Normalisation, get_job_method
from camserve_server.models import ExplainableModel

NORMALISATION = Normalisation.from_values(MEAN, STD)


@functools.cache
def demo() -> ExplainableModel:
    return ExplainableModel(load_demo_model(), input_size=INPUT_SIZE, name="demo")


def job_request(method: str, **fields: Any) -> JobRequest:
    """A request for ``method`` with the demo's normalisation; ``fields`` are the
    request's (``image``, ``target``, ``layer``, ``channel``, ``options``, ``seed``, ``style``)."""
    return JobRequest(
        method=method,
        image=fields.pop("image", None),
        target=fields.pop("target", None),
        layer=fields.pop("layer", None),
        channel=fields.pop("channel", None),
        options=fields.pop("options", {}),
        seed=fields.pop("seed", 0),
        style=fields.pop("style", None),
        normalisation=NORMALISATION,
    )


def start_job(request: JobRequest) -> tuple[Job, JobRequest]:
    """The request validated on the demo model, and the job created from it."""
    job_method = get_job_method(request.method)
    checked = job_method.validate(demo(), request)
    return job_method.create(demo(), checked), checked
