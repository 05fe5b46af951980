"""``AsyncExplainClient``: ``ExplainClient`` for asyncio callers, over ``grpc.aio``.

Same methods, arguments, results and errors as ``ExplainClient``, as coroutines.
Create it inside the event loop that uses it. Reading files and encoding images
happen in a worker thread, off the event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, Self, TypeVar, overload

import grpc
import numpy.typing as npt

from camserve import _health, _inputs, results
from camserve._channel import (
    DEFAULT_MAX_MESSAGE_BYTES,
    MAX_ATTEMPTS_LIMIT,
    ChannelConfig,
    PemSource,
    open_aio_channel,
)
from camserve._inputs import ImageInput, OptionValue
from camserve._many import ManyRun, Outcome, Progress
from camserve.errors import CamserveError, from_rpc_error
from camserve.results import Activations, Explanation, Filters, MethodInfo, ModelInfo
from camserve.v1 import explain_pb2 as pb
from camserve.v1 import explain_pb2_grpc

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


__all__ = ["AsyncExplainClient"]
