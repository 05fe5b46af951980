"""``AsyncExplainClient``: ``ExplainClient`` for asyncio callers, over ``grpc.aio``.

Same methods, arguments, results and errors as ``ExplainClient``, as coroutines.
Create it inside the event loop that uses it. Reading files and encoding images
happen in a worker thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from types import TracebackType
from typing import Any, Literal, Self, TypeVar, overload

import grpc
import numpy.typing as npt

from camserve import _health, _inputs, _sets, _visualize, results
from camserve._channel import (
    DEFAULT_MAX_MESSAGE_BYTES,
    MAX_ATTEMPTS_LIMIT,
    ChannelConfig,
    PemSource,
    open_aio_channel,
)
from camserve._inputs import ImageInput, OptionValue
from camserve._many import ManyRun, Outcome, Progress
from camserve._visualize import ProgressCallback
from camserve.errors import CamserveError, from_rpc_error
from camserve.jobs import JobMethodInfo, VisualizationEvent, VisualizationResult
from camserve.results import Activations, Explanation, Filters, MethodInfo, ModelInfo
from camserve.sets import ActivatingPatch, EmbeddingMap, ImageSet, IndexResult, Neighbour
from camserve.v1 import explain_pb2 as pb
from camserve.v1 import explain_pb2_grpc, imagesets_pb2_grpc, jobs_pb2_grpc
from camserve.v1 import imagesets_pb2 as set_pb
from camserve.v1 import jobs_pb2 as jpb

Request = TypeVar("Request")
Reply = TypeVar("Reply")


class AsyncExplainClient:
    """An asyncio client; ``async with`` it, or ``await close()``. Options as ``ExplainClient``."""

    def __init__(
        self,
        address: str = "localhost:50051",
        *,
        timeout: float | None = 30.0,
        tls: bool = False,
        root_certificates: PemSource | None = None,
        certificate_chain: PemSource | None = None,
        private_key: PemSource | None = None,
        token: str | None = None,
        server_name: str | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        keepalive_s: float | None = 60.0,
        max_attempts: int = MAX_ATTEMPTS_LIMIT,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self.config = ChannelConfig(
            address=address,
            timeout=timeout,
            tls=tls,
            root_certificates=root_certificates,
            certificate_chain=certificate_chain,
            private_key=private_key,
            token=token,
            server_name=server_name,
            max_message_bytes=max_message_bytes,
            keepalive_s=keepalive_s,
            max_attempts=max_attempts,
            extra_options=tuple(options),
        )
        self._metadata = self.config.metadata()
        self._channel = open_aio_channel(self.config)
        self._stub = explain_pb2_grpc.ExplainServiceStub(self._channel)
        self._job_stub = jobs_pb2_grpc.VisualizeServiceStub(self._channel)
        self._set_stub = imagesets_pb2_grpc.ImageSetServiceStub(self._channel)
        self._health_check = self._channel.unary_unary(
            _health.CHECK_METHOD,
            request_serializer=_health.encode_request,
            response_deserializer=_health.decode_response,
        )

    @property
    def address(self) -> str:
        """The server's address."""
        return self.config.address

    async def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def _call(
        self,
        rpc: Callable[..., Awaitable[Reply]],
        request: Request,
        timeout: float | None = None,
    ) -> Reply:
        try:
            return await rpc(
                request, timeout=self.config.resolve_timeout(timeout), metadata=self._metadata
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    async def explain(
        self,
        image: ImageInput | None = None,
        *,
        model: str,
        tensor: npt.ArrayLike | None = None,
        method: str = "gradcam",
        targets: int | Sequence[int] | None = None,
        top_k: int | None = None,
        layer: str | None = None,
        options: Mapping[str, OptionValue] | None = None,
        size: tuple[int, int] | None = None,
        dtype: str = "float32",
        return_raw: bool = False,
        request_id: str = "",
        timeout: float | None = None,
    ) -> Explanation:
        """Explain one image or tensor; see ``ExplainClient.explain``."""
        template = _inputs.explain_template(
            model=model,
            method=method,
            targets=targets,
            top_k=top_k,
            layer=layer,
            options=options,
            size=size,
            dtype=dtype,
            return_raw=return_raw,
        )
        request = await asyncio.to_thread(_inputs.with_input, template, image, tensor, request_id)
        return results.explanation(await self._call(self._stub.Explain, request, timeout))

    @overload
    async def explain_many(
        self,
        images: Iterable[ImageInput | npt.NDArray[Any]],
        *,
        model: str,
        method: str = ...,
        concurrency: int = ...,
        raise_errors: Literal[True] = ...,
        progress: Progress | None = ...,
        timeout: float | None = ...,
        **kwargs: Any,
    ) -> list[Explanation]: ...

    @overload
    async def explain_many(
        self,
        images: Iterable[ImageInput | npt.NDArray[Any]],
        *,
        model: str,
        method: str = ...,
        concurrency: int = ...,
        raise_errors: Literal[False],
        progress: Progress | None = ...,
        timeout: float | None = ...,
        **kwargs: Any,
    ) -> list[Outcome]: ...

    async def explain_many(
        self,
        images: Iterable[ImageInput | npt.NDArray[Any]],
        *,
        model: str,
        method: str = "gradcam",
        concurrency: int = 16,
        raise_errors: bool = True,
        progress: Progress | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> list[Explanation] | list[Outcome]:
        """Explain many images over one ``ExplainStream``; see ``ExplainClient.explain_many``."""
        template = _inputs.explain_template(model=model, method=method, **kwargs)
        run = ManyRun(
            images,
            template,
            concurrency=concurrency,
            raise_errors=raise_errors,
            progress=progress,
        )
        outbox: asyncio.Queue[pb.ExplainRequest | None] = asyncio.Queue()

        async def send() -> None:
            for request in await asyncio.to_thread(run.next_requests):
                outbox.put_nowait(request)
            if run.exhausted:
                outbox.put_nowait(None)

        async def requests() -> AsyncIterator[pb.ExplainRequest]:
            while (request := await outbox.get()) is not None:
                yield request

        await send()
        if run.outstanding == 0:
            return run.finish(None)
        deadline = timeout if timeout is not None else run.deadline(self.config.timeout)
        call = self._stub.ExplainStream(
            requests(), timeout=self.config.resolve_timeout(deadline), metadata=self._metadata
        )
        stream_error: CamserveError | None = None
        try:
            try:
                async for reply in call:
                    run.on_reply(reply)
                    if not run.exhausted:
                        await send()
            except grpc.RpcError as exc:
                stream_error = from_rpc_error(exc)
        finally:
            outbox.put_nowait(None)
            call.cancel()
        return run.finish(stream_error)

    async def embed(
        self,
        image: ImageInput | None = None,
        *,
        model: str,
        tensor: npt.ArrayLike | None = None,
        layer: str | None = None,
        normalize: bool = False,
        timeout: float | None = None,
    ) -> results.FloatArray:
        """One image's representation; see ``ExplainClient.embed``."""
        request = await asyncio.to_thread(
            _inputs.embed_request, image, tensor, model=model, layer=layer, normalize=normalize
        )
        return results.embedding(await self._call(self._stub.Embed, request, timeout))

    async def activations(
        self,
        image: ImageInput | None = None,
        *,
        model: str,
        tensor: npt.ArrayLike | None = None,
        layer: str | None = None,
        top_k: int = 0,
        profile_only: bool = False,
        timeout: float | None = None,
    ) -> Activations:
        """A layer's feature maps or channel profile; see ``ExplainClient.activations``."""
        request = await asyncio.to_thread(
            _inputs.activations_request,
            image,
            tensor,
            model=model,
            layer=layer,
            top_k=top_k,
            profile_only=profile_only,
        )
        return results.activations(await self._call(self._stub.Activations, request, timeout))

    async def filters(
        self, model: str, layer: str | None = None, *, timeout: float | None = None
    ) -> Filters:
        """A convolution's weights; see ``ExplainClient.filters``."""
        request = _inputs.filters_request(model, layer)
        return results.filters(await self._call(self._stub.Filters, request, timeout))

    async def models(self, *, timeout: float | None = None) -> list[ModelInfo]:
        """The models the server serves."""
        reply = await self._call(self._stub.ListModels, pb.ListModelsRequest(), timeout)
        return [results.model_info(m) for m in reply.models]

    async def methods(self, *, timeout: float | None = None) -> list[MethodInfo]:
        """The explanation methods the server implements."""
        reply = await self._call(self._stub.ListMethods, pb.ListMethodsRequest(), timeout)
        return [results.method_info(m) for m in reply.methods]

    async def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """The server's health status; see ``ExplainClient.health``."""
        status: str = await self._call(self._health_check, service, timeout)
        return status

    # -- optimisation jobs (see camserve.jobs) -----------------------------------------

    def visualize_events(
        self,
        *,
        method: str,
        model: str,
        image: ImageInput | None = None,
        tensor: npt.ArrayLike | None = None,
        target: int | None = None,
        layer: str | None = None,
        channel: int | None = None,
        options: Mapping[str, OptionValue] | None = None,
        style: ImageInput | None = None,
        seed: int = 0,
        preview_every: int = 0,
        top_k: int = 0,
        timeout: float | None = None,
    ) -> AsyncGenerator[VisualizationEvent, None]:
        """Run an optimisation job: ``async for`` its progress events, then its result;
        leaving the loop early cancels the job. See ``ExplainClient.visualize_events``."""
        build = functools.partial(
            _visualize.visualize_request,
            method=method,
            model=model,
            image=image,
            tensor=tensor,
            target=target,
            layer=layer,
            channel=channel,
            options=options,
            style=style,
            seed=seed,
            preview_every=preview_every,
            top_k=top_k,
        )

        def start(request: jpb.VisualizeRequest) -> Any:
            return self._job_stub.Visualize(
                request, timeout=self.config.resolve_timeout(timeout), metadata=self._metadata
            )

        return _visualize.astream(build, start)

    async def visualize(
        self,
        *,
        method: str,
        model: str,
        image: ImageInput | None = None,
        tensor: npt.ArrayLike | None = None,
        target: int | None = None,
        layer: str | None = None,
        channel: int | None = None,
        options: Mapping[str, OptionValue] | None = None,
        on_progress: ProgressCallback | None = None,
        style: ImageInput | None = None,
        seed: int = 0,
        preview_every: int = 0,
        top_k: int = 0,
        timeout: float | None = None,
    ) -> VisualizationResult:
        """Run an optimisation job to its end; see ``ExplainClient.visualize``.
        ``on_progress`` may be a plain function or a coroutine function."""
        events = self.visualize_events(
            method=method,
            model=model,
            image=image,
            tensor=tensor,
            target=target,
            layer=layer,
            channel=channel,
            options=options,
            style=style,
            seed=seed,
            preview_every=preview_every,
            top_k=top_k,
            timeout=timeout,
        )
        return await _visualize.acollect(events, on_progress)

    async def job_methods(self, *, timeout: float | None = None) -> list[JobMethodInfo]:
        """The optimisation job methods the server implements, with options and ranges."""
        reply = await self._call(
            self._job_stub.ListJobMethods, jpb.ListJobMethodsRequest(), timeout
        )
        return _visualize.job_method_infos(reply)

    # -- image sets (see camserve.sets) ------------------------------------------------

    async def index(
        self,
        set: str,
        images: Mapping[str, ImageInput] | Iterable[ImageInput],
        model: str | None = None,
        layers: Sequence[str] | None = None,
        *,
        embedding_layer: str | None = None,
        progress: bool | _sets.Progress | None = True,
        timeout: float | None = None,
    ) -> IndexResult:
        """Index images into a set; see ``ExplainClient.index`` (a stream cut with
        UNAVAILABLE is resumed the same way). Files are read and images encoded in a
        worker thread, off the event loop."""
        run = _sets.IndexRun(
            set,
            images,
            model=model,
            layers=layers,
            embedding_layer=embedding_layer,
            progress=progress,
        )

        async def requests(
            messages: Iterator[set_pb.IndexImagesRequest],
        ) -> AsyncIterator[set_pb.IndexImagesRequest]:
            while (message := await asyncio.to_thread(next, messages, None)) is not None:
                yield message

        while True:  # a stream cut with UNAVAILABLE is resumed, as in ExplainClient.index
            left = run.time_left(timeout, self.config.timeout)  # of the whole call
            try:
                call = self._set_stub.IndexImages(
                    requests(run.requests()),
                    timeout=self.config.resolve_timeout(left),
                    metadata=self._metadata,
                )
                async for reply in call:
                    run.on_reply(reply)
                return run.finish()
            except grpc.RpcError as exc:
                await asyncio.sleep(run.resume_or_raise(exc))

    async def top_activating(
        self, set: str, layer: str | None, channel: int, k: int = 9, *, timeout: float | None = None
    ) -> list[ActivatingPatch]:
        """The members that most activate a channel; see ``ExplainClient.top_activating``."""
        request = _sets.top_request(set, layer, channel, k)
        return _sets.top_items(await self._call(self._set_stub.TopActivating, request, timeout))

    async def neighbours(
        self,
        set: str,
        image: ImageInput | None = None,
        id: str | None = None,
        k: int = 10,
        space: str = "features",
        *,
        thumbnail_size: int = 0,
        timeout: float | None = None,
    ) -> list[Neighbour]:
        """The members nearest an image or member; see ``ExplainClient.neighbours``."""
        request = await asyncio.to_thread(
            _sets.neighbours_request, set, image, id, k, space, thumbnail_size
        )
        reply = await self._call(self._set_stub.NearestNeighbours, request, timeout)
        return _sets.neighbour_items(reply)

    async def embedding_map(
        self,
        set: str,
        method: str = "tsne",
        *,
        seed: int = 0,
        max_points: int = 0,
        thumbnail_size: int = 0,
        timeout: float | None = None,
    ) -> EmbeddingMap:
        """A 2-D map of the set; see ``ExplainClient.embedding_map``."""
        request = _sets.map_request(set, method, seed, max_points, thumbnail_size)
        reply = await self._call(self._set_stub.EmbeddingMap, request, timeout)
        return _sets.embedding_map(reply)

    async def sets(self, *, timeout: float | None = None) -> list[ImageSet]:
        """Every image set on the server."""
        reply = await self._call(self._set_stub.ListSets, set_pb.ListSetsRequest(), timeout)
        return _sets.image_sets(reply)

    async def describe_set(self, name: str, *, timeout: float | None = None) -> ImageSet:
        """One set's description."""
        request = _sets.describe_request(name)
        return _sets.image_set(await self._call(self._set_stub.DescribeSet, request, timeout))

    async def delete_set(self, name: str, *, timeout: float | None = None) -> int:
        """Delete a set; the bytes freed on the server."""
        request = _sets.delete_request(name)
        return _sets.bytes_freed(await self._call(self._set_stub.DeleteSet, request, timeout))


__all__ = ["AsyncExplainClient"]
