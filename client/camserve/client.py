"""``ExplainClient``: the blocking client of a camserve server.

Every method raises a ``CamserveError`` subclass on failure (see ``camserve.errors``).
Calls take the client's ``timeout`` as their deadline unless given their own.
The client is thread-safe: one instance may serve many threads.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
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
    open_channel,
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


class ExplainClient:
    """A blocking client; use it as a context manager, or call ``close``.

    ``address`` is ``host:port``. ``timeout`` is the default deadline of each
    call in seconds (None: no deadline). ``tls=True`` (implied by any
    certificate) opens a TLS channel, verified against ``root_certificates``
    (PEM bytes or a file path; default: the system's roots);
    ``certificate_chain`` and ``private_key`` present a client certificate
    (mTLS). ``token`` is sent as ``authorization: Bearer <token>``. Calls that
    fail with UNAVAILABLE are retried by gRPC, up to ``max_attempts`` attempts
    in all, with exponential backoff.
    """

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
        self._channel = open_channel(self.config)
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

    def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _call(
        self, rpc: Callable[..., Reply], request: Request, timeout: float | None = None
    ) -> Reply:
        try:
            return rpc(
                request, timeout=self.config.resolve_timeout(timeout), metadata=self._metadata
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    def explain(
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
        """Explain one image (``image``: path, bytes, PIL image or uint8 ``(H, W, 3)`` array)
        or preprocessed ``tensor`` (float32 ``(3, H, W)``).

        ``targets`` (class indices) or ``top_k`` pick the classes (default: the top-1
        class); ``layer`` defaults to the model's; ``options`` are the method's options
        (see ``methods()``). ``size=(height, width)`` sets the heatmaps' size (default:
        the image's); ``dtype`` their wire type ("float32", "float16" or "uint8": the
        result is float32 in [0, 1] either way); ``return_raw`` adds ``Explanation.raw``.
        """
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
        request = _inputs.with_input(template, image, tensor, request_id)
        return results.explanation(self._call(self._stub.Explain, request, timeout))

    @overload
    def explain_many(
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
    def explain_many(
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

    def explain_many(
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
        """Explain many images over one ``ExplainStream``, at most ``concurrency`` in flight.

        Results come back in input order. Each item is an image as for ``explain``, or a
        floating-point array, taken as a preprocessed tensor. ``kwargs`` are ``explain``'s
        (``targets``, ``top_k``, ``layer``, ``options``, ``size``, ``dtype``, ``return_raw``).

        ``raise_errors=True`` (default): the first failure cancels the stream and is
        raised, its ``index`` set to the item's position. ``raise_errors=False``: a failed
        item's slot holds its ``CamserveError`` and the others go on. ``progress(done,
        total)`` is called after each item. The stream's deadline is ``timeout`` (default:
        the client's timeout for each wave of ``concurrency`` items).
        """
        template = _inputs.explain_template(model=model, method=method, **kwargs)
        run = ManyRun(
            images,
            template,
            concurrency=concurrency,
            raise_errors=raise_errors,
            progress=progress,
        )
        outbox: queue.SimpleQueue[pb.ExplainRequest | None] = queue.SimpleQueue()

        def send() -> None:
            for request in run.next_requests():
                outbox.put(request)
            if run.exhausted:
                outbox.put(None)

        send()
        if run.outstanding == 0:
            return run.finish(None)
        deadline = timeout if timeout is not None else run.deadline(self.config.timeout)
        call = self._stub.ExplainStream(
            iter(outbox.get, None),
            timeout=self.config.resolve_timeout(deadline),
            metadata=self._metadata,
        )
        stream_error: CamserveError | None = None
        try:
            try:
                for reply in call:
                    run.on_reply(reply)
                    if not run.exhausted:
                        send()
            except grpc.RpcError as exc:
                stream_error = from_rpc_error(exc)
        finally:
            outbox.put(None)  # lets gRPC's request-reading thread finish
            call.cancel()
        return run.finish(stream_error)

    def embed(
        self,
        image: ImageInput | None = None,
        *,
        model: str,
        tensor: npt.ArrayLike | None = None,
        layer: str | None = None,
        normalize: bool = False,
        timeout: float | None = None,
    ) -> results.FloatArray:
        """One image's representation, float32 ``(dim,)``: by default the input of the
        model's final linear layer; ``normalize`` scales it to unit L2 norm."""
        request = _inputs.embed_request(
            image, tensor, model=model, layer=layer, normalize=normalize
        )
        return results.embedding(self._call(self._stub.Embed, request, timeout))

    def activations(
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
        """A layer's feature maps for one image (the ``top_k`` most active channels, or all),
        or with ``profile_only`` just every channel's mean activation."""
        request = _inputs.activations_request(
            image, tensor, model=model, layer=layer, top_k=top_k, profile_only=profile_only
        )
        return results.activations(self._call(self._stub.Activations, request, timeout))

    def filters(
        self, model: str, layer: str | None = None, *, timeout: float | None = None
    ) -> Filters:
        """A convolution's weights (default: the model's first convolution)."""
        request = _inputs.filters_request(model, layer)
        return results.filters(self._call(self._stub.Filters, request, timeout))

    def models(self, *, timeout: float | None = None) -> list[ModelInfo]:
        """The models the server serves, in its order."""
        reply = self._call(self._stub.ListModels, pb.ListModelsRequest(), timeout)
        return [results.model_info(m) for m in reply.models]

    def methods(self, *, timeout: float | None = None) -> list[MethodInfo]:
        """The explanation methods the server implements, with their options' defaults."""
        reply = self._call(self._stub.ListMethods, pb.ListMethodsRequest(), timeout)
        return [results.method_info(m) for m in reply.methods]

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """The server's health status: "SERVING", "NOT_SERVING", "UNKNOWN" or
        "SERVICE_UNKNOWN" ("" asks about the whole server)."""
        status: str = self._call(self._health_check, service, timeout)
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
    ) -> Generator[VisualizationEvent, None, None]:
        """Run an optimisation job; yields ``VisualizationProgress`` per step, then the
        ``VisualizationResult``. Leaving the loop early cancels the job. Arguments as
        ``visualize``."""
        request = _visualize.visualize_request(
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
        call = self._job_stub.Visualize(
            request, timeout=self.config.resolve_timeout(timeout), metadata=self._metadata
        )
        return _visualize.iterate(call)

    def visualize(
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
        """Run an optimisation job (see ``job_methods()``) to its end.

        ``image`` (path, bytes, PIL image or uint8 array) or ``tensor`` (float32
        ``(3, H, W)``, normalised) is the starting or source image, when the method takes
        one; ``target`` a class, ``layer`` and ``channel`` a unit to visualise; ``options``
        the method's options (e.g. ``steps``, ``lr``, ``epsilon``); ``style`` the style
        image of style transfer. The same arguments and ``seed`` give the same picture.
        ``on_progress`` is called with each ``VisualizationProgress`` (with a preview
        every ``preview_every`` steps). The deadline is ``timeout`` (default: the
        client's); when it passes, the server stops the job.
        """
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
        return _visualize.collect(events, on_progress)

    def job_methods(self, *, timeout: float | None = None) -> list[JobMethodInfo]:
        """The optimisation job methods the server implements, with options and ranges."""
        reply = self._call(self._job_stub.ListJobMethods, jpb.ListJobMethodsRequest(), timeout)
        return _visualize.job_method_infos(reply)

    # -- image sets (see camserve.sets) ------------------------------------------------

    def index(
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
        """Index ``images`` into the named set, created for ``model`` and ``layers`` when new.

        ``images`` is a mapping id -> image (path, bytes, PIL image or uint8 array) or a
        list of images (a path is named by its file name, anything else by its content
        hash). Images already in the set are skipped; an image that cannot be read or
        decoded fails alone (see ``IndexResult.failures``). ``layers`` default to the
        model's default layer, ``embedding_layer`` to the penultimate representation.
        ``progress``: True draws a bar on a terminal; a callable gets ``(done, total)``.
        The call's deadline is ``timeout``, default the client's plus a second per image.

        A stream that ends with UNAVAILABLE (the server's maximum connection age, a
        restart, a dropped connection) is resumed: a new stream sends again only the
        images the server had not answered, after a short backoff, at most 5 times in a
        row without an answered image and within the deadline (``IndexResult.resumed``
        counts them). An image written just before a cut, its answer lost, comes back
        ``skipped`` with ``existing_id`` its own id.
        """
        run = _sets.IndexRun(
            set,
            images,
            model=model,
            layers=layers,
            embedding_layer=embedding_layer,
            progress=progress,
        )
        while True:
            left = run.time_left(timeout, self.config.timeout)  # of the whole call
            try:
                replies = self._set_stub.IndexImages(
                    run.requests(),
                    timeout=self.config.resolve_timeout(left),
                    metadata=self._metadata,
                )
                for reply in replies:
                    run.on_reply(reply)
                return run.finish()
            except grpc.RpcError as exc:
                time.sleep(run.resume_or_raise(exc))

    def top_activating(
        self, set: str, layer: str | None, channel: int, k: int = 9, *, timeout: float | None = None
    ) -> list[ActivatingPatch]:
        """The ``k`` members that most activate ``channel`` of ``layer`` (None: the set's
        first layer), highest first, each with the patch its maximal unit sees."""
        request = _sets.top_request(set, layer, channel, k)
        return _sets.top_items(self._call(self._set_stub.TopActivating, request, timeout))

    def neighbours(
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
        """The ``k`` members nearest ``image`` or the member ``id`` (left out of its own
        neighbours), nearest first: 1 - cosine of embeddings (``space="features"``) or
        pixel distance (``"pixels"``). ``thumbnail_size`` > 0 adds each one's thumbnail."""
        request = _sets.neighbours_request(set, image, id, k, space, thumbnail_size)
        reply = self._call(self._set_stub.NearestNeighbours, request, timeout)
        return _sets.neighbour_items(reply)

    def embedding_map(
        self,
        set: str,
        method: str = "tsne",
        *,
        seed: int = 0,
        max_points: int = 0,
        thumbnail_size: int = 0,
        timeout: float | None = None,
    ) -> EmbeddingMap:
        """The set's embeddings projected to 2-D ("pca" or "tsne") on the server, each point
        with its predicted class; ``max_points`` > 0 returns a seeded sample of the points."""
        request = _sets.map_request(set, method, seed, max_points, thumbnail_size)
        return _sets.embedding_map(self._call(self._set_stub.EmbeddingMap, request, timeout))

    def sets(self, *, timeout: float | None = None) -> list[ImageSet]:
        """Every image set on the server."""
        reply = self._call(self._set_stub.ListSets, set_pb.ListSetsRequest(), timeout)
        return _sets.image_sets(reply)

    def describe_set(self, name: str, *, timeout: float | None = None) -> ImageSet:
        """One set's description: model, layers, size, bytes used and limits."""
        request = _sets.describe_request(name)
        return _sets.image_set(self._call(self._set_stub.DescribeSet, request, timeout))

    def delete_set(self, name: str, *, timeout: float | None = None) -> int:
        """Delete a set and its records; the bytes freed on the server."""
        request = _sets.delete_request(name)
        return _sets.bytes_freed(self._call(self._set_stub.DeleteSet, request, timeout))


__all__ = ["ExplainClient"]
