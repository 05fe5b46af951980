"""``ExplainService`` RPCs: protobuf to domain objects and back, nothing else."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import grpc
import numpy as np
from google.protobuf.message import Message
from grpc import aio

from camserve import tensors
from camserve.v1 import explain_pb2 as pb
from camserve.v1 import explain_pb2_grpc

from .answers import ActivationsAnswer, EmbedAnswer, ExplainAnswer
from .errors import InvalidArgument
from .methods import METHODS
from .query import ExplainQuery
from .reply_size import check_reply_fits
from .rpc.interceptors import monotonic_deadline, status_of
from .rpc.messages import class_scores, image_source, option_value, option_values
from .runtime.metrics import Metrics
from .service import ExplainService

T = TypeVar("T")
R = TypeVar("R", bound=Message)
A = TypeVar("A", ExplainAnswer, EmbedAnswer, ActivationsAnswer)
Answer = ExplainAnswer | EmbedAnswer | ActivationsAnswer

_DTYPES = {
    pb.DTYPE_UNSPECIFIED: "float32",
    pb.DTYPE_FLOAT32: "float32",
    pb.DTYPE_FLOAT16: "float16",
    pb.DTYPE_UINT8: "uint8",
}


def to_query(request: pb.ExplainRequest, deadline: float | None) -> ExplainQuery:
    """An ``ExplainRequest`` as a domain query."""
    out = request.output
    if out.height < 0 or out.width < 0 or (out.height == 0) != (out.width == 0):
        raise InvalidArgument("output height and width must both be set (> 0) or both be 0")
    if out.height > 8192 or out.width > 8192:
        raise InvalidArgument("output height and width must be at most 8192")
    if request.targets.top_k < 0:
        raise InvalidArgument("top_k must not be negative")
    if out.dtype not in _DTYPES:
        raise InvalidArgument(f"unknown heatmap dtype {out.dtype}")
    return ExplainQuery(
        model=request.model,
        method=request.method or "gradcam",
        source=image_source(request.input),
        classes=tuple(request.targets.classes),
        top_k=request.targets.top_k,
        layer=request.layer or None,
        options=option_values(request.options),
        out_size=(out.height, out.width) if out.height else None,
        dtype=_DTYPES[out.dtype],
        return_raw=out.return_raw,
        deadline=deadline,
        faithfulness=tuple(request.faithfulness),
        faithfulness_steps=request.faithfulness_options.steps,
        faithfulness_percentile=request.faithfulness_options.percentile,
    )


def to_response(request_id: str, answer: ExplainAnswer) -> pb.ExplainResponse:
    """A domain answer as an ``ExplainResponse``."""
    heatmaps = []
    for i, target in enumerate(answer.targets):
        heatmap = pb.Heatmap(
            target=target,
            label=answer.labels[i],
            map=tensors.to_proto(answer.heatmaps[i]),
            empty=answer.empty[i],
        )
        if answer.raw is not None:
            heatmap.raw.CopyFrom(tensors.to_proto(answer.raw[i].astype(np.float32)))
        heatmaps.append(heatmap)
    return pb.ExplainResponse(
        request_id=request_id,
        model=answer.model,
        method=answer.method,
        variant=answer.variant,
        layer=answer.layer,
        heatmaps=heatmaps,
        top_classes=class_scores(answer.top_classes),
        cache_hit=answer.cache_hit,
        timings=pb.Timings(**answer.timings),
        metrics=answer.metrics,
        image_height=answer.image_size[0],
        image_width=answer.image_size[1],
    )


def embed_response(answer: EmbedAnswer) -> pb.EmbedResponse:
    """An embedding answer as an ``EmbedResponse``."""
    vector = answer.vector
    return pb.EmbedResponse(
        vector=tensors.to_proto(vector), layer=answer.layer, dim=int(vector.size)
    )


def activations_response(answer: ActivationsAnswer) -> pb.ActivationsResponse:
    """A feature-map or channel-profile answer as an ``ActivationsResponse``."""
    reply = pb.ActivationsResponse(layer=answer.layer)
    if answer.maps is not None:
        reply.maps.CopyFrom(tensors.to_proto(answer.maps))
        reply.channels.extend(answer.channels)
    reply.profile.CopyFrom(tensors.to_proto(answer.profile))
    return reply


def within_limit(
    reply: R, answer: ExplainAnswer | EmbedAnswer | ActivationsAnswer, limit: int
) -> R:
    """``reply``, or INVALID_ARGUMENT (``check_reply_fits``) when it is over ``limit`` bytes.

    grpc would fail such a call only after the handler returned: the caller would get
    RESOURCE_EXHAUSTED (read as "retry later") while the metrics said OK, and on a stream
    every other answer would be lost with it. The exact size is a full encode (upb), so
    it is computed only when the arrays come near the limit; the rest of a reply is a few
    kilobytes.
    """
    if answer.array_bytes() * 2 >= limit:
        check_reply_fits(reply.ByteSize(), limit)
    return reply


def methods_reply() -> pb.ListMethodsResponse:
    """Every registered method with its options, as ``ListMethods`` answers."""
    return pb.ListMethodsResponse(
        methods=[
            pb.MethodInfo(
                id=method.id,
                family=method.family,
                uses_layer=method.uses_layer,
                uses_targets=method.uses_targets,
                description=method.description,
                reference=method.reference,
                options=[
                    pb.OptionInfo(
                        name=option.name,
                        default=option_value(option.default),
                        description=option.description,
                    )
                    for option in method.options
                ],
            )
            for method in METHODS.values()
        ]
    )


def _passed(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


class ExplainServicer(explain_pb2_grpc.ExplainServiceServicer):  # type: ignore[misc,unused-ignore]
    """The RPC surface of ``ExplainService``."""

    def __init__(self, service: ExplainService, metrics: Metrics) -> None:
        self.service = service
        self.metrics = metrics
        self._methods = methods_reply()  # the registry is fixed: built once, sent as is

    async def _timed(
        self, model: str, method: str, deadline: float | None, work: Awaitable[T]
    ) -> T:
        """Await ``work``, recording its latency under the status the caller gets: the
        error's, DEADLINE_EXCEEDED or CANCELLED when grpc cancelled the handler because the
        call ended, and DEADLINE_EXCEEDED for a reply made too late, which grpc drops."""
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        self.metrics.inflight.inc()
        try:
            reply = await work
            if _passed(deadline):
                code = grpc.StatusCode.DEADLINE_EXCEEDED
            return reply
        except asyncio.CancelledError:
            passed = _passed(deadline)
            code = grpc.StatusCode.DEADLINE_EXCEEDED if passed else grpc.StatusCode.CANCELLED
            raise
        except Exception as exc:
            code = status_of(exc)[0]
            raise
        finally:
            self.metrics.inflight.dec()
            self.metrics.observe_request(model, method, code.name, time.perf_counter() - started)

    async def _reply(self, answering: Awaitable[A], build: Callable[[A], R]) -> R:
        """The reply ``build`` makes of the answer, refused when too large to send."""
        answer = await answering
        return within_limit(build(answer), answer, self.service.settings.max_message_bytes)

    async def Explain(
        self, request: pb.ExplainRequest, context: aio.ServicerContext
    ) -> pb.ExplainResponse:
        query = to_query(request, monotonic_deadline(context))
        build = functools.partial(to_response, request.request_id)
        reply = self._reply(self.service.explain(query), build)
        return await self._timed(request.model, query.method, query.deadline, reply)

    async def ExplainStream(
        self, requests: AsyncIterator[pb.ExplainRequest], context: aio.ServicerContext
    ) -> AsyncIterator[pb.ExplainStreamResponse]:
        deadline = monotonic_deadline(context)
        replies: asyncio.Queue[pb.ExplainStreamResponse | None] = asyncio.Queue()
        pending: set[asyncio.Task[None]] = set()

        def in_stream(request_id: str, answer: ExplainAnswer) -> pb.ExplainStreamResponse:
            response = to_response(request_id, answer)
            return pb.ExplainStreamResponse(request_id=request_id, response=response)

        async def answer_one(request: pb.ExplainRequest) -> None:
            try:
                query = to_query(request, deadline)
                build = functools.partial(in_stream, request.request_id)
                work = self._reply(self.service.explain(query), build)
                reply = await self._timed(request.model, query.method, deadline, work)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                code, message = status_of(exc)
                reply = pb.ExplainStreamResponse(
                    request_id=request.request_id,
                    error=pb.Error(code=code.value[0], message=message),
                )
            await replies.put(reply)

        async def read_all() -> None:
            try:
                async for request in requests:
                    task = asyncio.create_task(answer_one(request))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                while pending:
                    await asyncio.gather(*list(pending), return_exceptions=True)
            finally:
                # Ends the reply loop also when reading failed (a malformed message): the
                # loop then raises the reader's error instead of waiting forever.
                replies.put_nowait(None)

        reader = asyncio.create_task(read_all())
        try:
            while (reply := await replies.get()) is not None:
                yield reply
            await reader
        finally:
            reader.cancel()
            for task in list(pending):
                task.cancel()

    async def Embed(
        self, request: pb.EmbedRequest, context: aio.ServicerContext
    ) -> pb.EmbedResponse:
        query = ExplainQuery(
            model=request.model,
            method="embedding",
            source=image_source(request.input),
            layer=request.layer or None,
            options={"normalize": request.normalize},
            deadline=monotonic_deadline(context),
        )
        reply = self._reply(self.service.embed(query), embed_response)
        return await self._timed(request.model, "embedding", query.deadline, reply)

    async def Activations(
        self, request: pb.ActivationsRequest, context: aio.ServicerContext
    ) -> pb.ActivationsResponse:
        profile_only = request.mode == pb.ACTIVATIONS_MODE_CHANNEL_PROFILE
        method = "channel_profile" if profile_only else "feature_maps"
        query = ExplainQuery(
            model=request.model,
            method=method,
            source=image_source(request.input),
            layer=request.layer or None,
            options={} if profile_only else {"top_k": request.top_k},
            deadline=monotonic_deadline(context),
        )
        answering = self.service.activations(query, profile_only=profile_only)
        reply = self._reply(answering, activations_response)
        return await self._timed(request.model, method, query.deadline, reply)

    async def Filters(
        self, request: pb.FiltersRequest, context: aio.ServicerContext
    ) -> pb.FiltersResponse:
        layer, weights = self.service.filters(request.model, request.layer or None)
        return pb.FiltersResponse(weights=tensors.to_proto(weights), layer=layer)

    async def ListModels(
        self, request: pb.ListModelsRequest, context: aio.ServicerContext
    ) -> pb.ListModelsResponse:
        infos = []
        for loaded in self.service.models.values():
            model = loaded.primary
            infos.append(
                pb.ModelInfo(
                    name=loaded.name,
                    layers=model.structure.spatial_layers(),
                    default_layer=model.default_layer,
                    input_height=model.input_size[0],
                    input_width=model.input_size[1],
                    num_classes=model.num_classes,
                    has_labels=loaded.labels is not None,
                    labels=loaded.labels or [],
                    methods=list(loaded.methods),
                    format=loaded.format,
                    weights_digest=loaded.weights_digest,
                    weights_source=loaded.weights_source,
                )
            )
        return pb.ListModelsResponse(models=infos)

    async def ListMethods(
        self, request: pb.ListMethodsRequest, context: aio.ServicerContext
    ) -> pb.ListMethodsResponse:
        return self._methods


__all__ = ["ExplainServicer", "grpc"]
