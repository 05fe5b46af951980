"""``ExplainService`` RPCs: protobuf to domain objects and back, nothing else."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
import numpy as np
from google.protobuf.message import Message
from grpc import aio

from camserve import tensors
from camserve.v1 import explain_pb2 as pb
from camserve.v1 import explain_pb2_grpc

from .errors import InvalidArgument
from .methods import METHODS
from .reply_size import check_reply_fits
from .rpc.interceptors import monotonic_deadline, status_of
from .runtime.metrics import Metrics
from .service import ExplainAnswer, ExplainQuery, ExplainService, ImageSource

T = TypeVar("T")
R = TypeVar("R", bound=Message)

_DTYPES = {
    pb.DTYPE_UNSPECIFIED: "float32",
    pb.DTYPE_FLOAT32: "float32",
    pb.DTYPE_FLOAT16: "float16",
    pb.DTYPE_UINT8: "uint8",
}


def _source(message: pb.ImageInput) -> ImageSource:
    which = message.WhichOneof("source")
    if which == "encoded":
        if not message.encoded:
            raise InvalidArgument("the image bytes are empty")
        return ImageSource(encoded=message.encoded)
    if which == "tensor":
        try:
            return ImageSource(tensor=tensors.from_proto(message.tensor))
        except ValueError as exc:
            raise InvalidArgument(f"bad tensor: {exc}") from None
    raise InvalidArgument("the request carries no image: set input.encoded or input.tensor")


def _option(value: pb.OptionValue) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "number":
        number = value.number
        return int(number) if number.is_integer() else number
    if kind == "text":
        return value.text
    if kind == "flag":
        return value.flag
    if kind == "numbers":
        return [int(v) if float(v).is_integer() else v for v in value.numbers.values]
    raise InvalidArgument("an option value is empty")


def option_value(value: Any) -> pb.OptionValue:
    """A Python option default as an ``OptionValue``."""
    if isinstance(value, bool):
        return pb.OptionValue(flag=value)
    if isinstance(value, int | float):
        return pb.OptionValue(number=float(value))
    if isinstance(value, tuple | list):
        return pb.OptionValue(numbers=pb.NumberList(values=[float(v) for v in value]))
    return pb.OptionValue(text=str(value))


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
        source=_source(request.input),
        classes=tuple(request.targets.classes),
        top_k=request.targets.top_k,
        layer=request.layer or None,
        options={k: _option(v) for k, v in request.options.items()},
        out_size=(out.height, out.width) if out.height else None,
        dtype=_DTYPES[out.dtype],
        return_raw=out.return_raw,
        deadline=deadline,
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
        top_classes=[
            pb.ClassScore(index=c.index, label=c.label, probability=c.probability, logit=c.logit)
            for c in answer.top_classes
        ],
        cache_hit=answer.cache_hit,
        timings=pb.Timings(**answer.timings),
        metrics=answer.metrics,
        image_height=answer.image_size[0],
        image_width=answer.image_size[1],
    )


def embed_response(answer: ExplainAnswer) -> pb.EmbedResponse:
    """An embedding answer as an ``EmbedResponse``."""
    assert answer.values is not None
    vector = answer.values.astype(np.float32)
    return pb.EmbedResponse(
        vector=tensors.to_proto(vector), layer=answer.layer, dim=int(vector.size)
    )


def activations_response(profile_only: bool, answer: ExplainAnswer) -> pb.ActivationsResponse:
    """A feature-map or channel-profile answer as an ``ActivationsResponse``."""
    assert answer.values is not None
    reply = pb.ActivationsResponse(layer=answer.layer)
    if profile_only:
        reply.profile.CopyFrom(tensors.to_proto(answer.values.astype(np.float32)))
    else:
        maps = answer.values.astype(np.float32)
        reply.maps.CopyFrom(tensors.to_proto(maps))
        reply.channels.extend(answer.channels or [])
        reply.profile.CopyFrom(tensors.to_proto(maps.mean(axis=(1, 2)).astype(np.float32)))
    return reply


def array_bytes(answer: ExplainAnswer) -> int:
    """The bytes of an answer's arrays as they go on the wire: nearly all of its reply."""
    total = sum(int(h.nbytes) for h in answer.heatmaps)
    total += sum(int(r.size) * 4 for r in answer.raw or [])  # sent as float32
    if answer.values is not None:
        total += int(answer.values.size) * 4
    return total


def within_limit(reply: R, answer: ExplainAnswer, limit: int) -> R:
    """``reply``, or INVALID_ARGUMENT (``check_reply_fits``) when it is over ``limit`` bytes.

    grpc would fail such a call only after the handler returned: the caller would get
    RESOURCE_EXHAUSTED (read as "retry later") while the metrics said OK, and on a stream
    every other answer would be lost with it. The exact size is a full encode (upb), so
    it is computed only when the arrays come near the limit; the rest of a reply is a few
    kilobytes.
    """
    if array_bytes(answer) * 2 >= limit:
        check_reply_fits(reply.ByteSize(), limit)
    return reply


def _passed(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


class ExplainServicer(explain_pb2_grpc.ExplainServiceServicer):  # type: ignore[misc,unused-ignore]
    """The RPC surface of ``ExplainService``."""

    def __init__(self, service: ExplainService, metrics: Metrics) -> None:
        self.service = service
        self.metrics = metrics

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

    async def _answer(self, query: ExplainQuery, build: Callable[[ExplainAnswer], R]) -> R:
        """The reply ``build`` makes of the query's answer, refused when too large to send."""
        answer = await self.service.explain(query)
        return within_limit(build(answer), answer, self.service.settings.max_message_bytes)

    async def Explain(
        self, request: pb.ExplainRequest, context: aio.ServicerContext
    ) -> pb.ExplainResponse:
        query = to_query(request, monotonic_deadline(context))
        reply = self._answer(query, functools.partial(to_response, request.request_id))
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
                work = self._answer(query, functools.partial(in_stream, request.request_id))
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
            source=_source(request.input),
            layer=request.layer or None,
            options={"normalize": request.normalize},
            deadline=monotonic_deadline(context),
        )
        reply = self._answer(query, embed_response)
        return await self._timed(request.model, "embedding", query.deadline, reply)

    async def Activations(
        self, request: pb.ActivationsRequest, context: aio.ServicerContext
    ) -> pb.ActivationsResponse:
        profile_only = request.mode == pb.ACTIVATIONS_MODE_CHANNEL_PROFILE
        method = "channel_profile" if profile_only else "feature_maps"
        query = ExplainQuery(
            model=request.model,
            method=method,
            source=_source(request.input),
            layer=request.layer or None,
            options={} if profile_only else {"top_k": request.top_k},
            deadline=monotonic_deadline(context),
        )
        reply = self._answer(query, functools.partial(activations_response, profile_only))
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
                )
            )
        return pb.ListModelsResponse(models=infos)

    async def ListMethods(
        self, request: pb.ListMethodsRequest, context: aio.ServicerContext
    ) -> pb.ListMethodsResponse:
        infos = [
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
        return pb.ListMethodsResponse(methods=infos)


__all__ = ["ExplainServicer", "grpc"]
