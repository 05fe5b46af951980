"""``VisualizeService`` RPCs: protobuf to job queries and events back, nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

from grpc import aio

from camserve import tensors
from camserve.v1 import jobs_pb2 as jpb
from camserve.v1 import jobs_pb2_grpc

from ..rpc.messages import class_scores, image_source, option_value, option_values
from .base import JobMethod
from .events import JobPicture, JobQuery, ProgressEvent, ResultEvent
from .service import JobService


def to_query(request: jpb.VisualizeRequest) -> JobQuery:
    """A ``VisualizeRequest`` as a domain query."""
    return JobQuery(
        model=request.model,
        method=request.method,
        image=image_source(request.input) if request.HasField("input") else None,
        style=image_source(request.style) if request.HasField("style") else None,
        target=request.target if request.HasField("target") else None,
        layer=request.layer or None,
        channel=request.channel if request.HasField("channel") else None,
        options=option_values(request.options),
        seed=request.seed,
        preview_every=request.preview_every,
        top_k=request.top_k,
    )


def _picture(picture: JobPicture) -> jpb.JobImage:
    message = jpb.JobImage(name=picture.name, rgb=tensors.to_proto(picture.rgb))
    if picture.tensor is not None:
        message.tensor.CopyFrom(tensors.to_proto(picture.tensor))
    return message


def to_event(event: ProgressEvent | ResultEvent) -> jpb.VisualizeEvent:
    """A domain event as a ``VisualizeEvent``."""
    if isinstance(event, ProgressEvent):
        progress = jpb.JobProgress(
            step=event.step,
            total=event.total,
            loss=event.loss,
            objective=event.objective,
            elapsed_ms=event.elapsed_s * 1e3,
        )
        if event.preview is not None:
            progress.preview.CopyFrom(_picture(event.preview))
        return jpb.VisualizeEvent(progress=progress)
    return jpb.VisualizeEvent(
        result=jpb.JobResult(
            model=event.model,
            method=event.method,
            layer=event.layer,
            image=_picture(event.image),
            images=[_picture(p) for p in event.images],
            top_classes=class_scores(event.top_classes),
            predictions=[
                jpb.JobPredictions(name=name, scores=class_scores(scores))
                for name, scores in event.predictions.items()
            ],
            trace=event.trace,
            steps=event.steps,
            cached=event.cached,
            seed=event.seed,
            total_ms=event.total_s * 1e3,
        )
    )


def method_info(method: JobMethod) -> jpb.JobMethodInfo:
    """A job method's description, options, defaults and ranges."""
    options = [
        jpb.JobOptionInfo(
            name=option.name,
            default=option_value(option.default),
            minimum=option.minimum,
            maximum=option.maximum,
            choices=option.choices,
            description=option.help,
        )
        for option in method.options
    ]
    return jpb.JobMethodInfo(
        id=method.id,
        family=method.family,
        summary=method.summary,
        needs_image=method.needs_image,
        needs_target=method.needs_target,
        uses_layer=method.uses_layer,
        options=options,
    )


class VisualizeServicer(jobs_pb2_grpc.VisualizeServiceServicer):  # type: ignore[misc,unused-ignore]
    """The RPC surface of ``JobService``: protobuf to domain objects and back, nothing else."""

    def __init__(self, service: JobService) -> None:
        self.service = service

    async def Visualize(  # noqa: N802 (the RPC's name)
        self, request: jpb.VisualizeRequest, context: aio.ServicerContext
    ) -> AsyncIterator[jpb.VisualizeEvent]:
        async with aclosing(self.service.run(to_query(request))) as events:
            async for event in events:
                yield to_event(event)

    async def ListJobMethods(  # noqa: N802 (the RPC's name)
        self, request: jpb.ListJobMethodsRequest, context: aio.ServicerContext
    ) -> jpb.ListJobMethodsResponse:
        return jpb.ListJobMethodsResponse(
            methods=[method_info(m) for m in self.service.methods()],
            max_steps=self.service.max_steps,
            max_jobs=self.service.max_jobs,
        )
