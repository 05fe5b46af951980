"""The ``ExplainService`` methods and the health check, for both clients (see ``_calls``)."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, overload

import numpy.typing as npt

from camserve import _inputs, results
from camserve._calls import ExplainMany, Unary
from camserve._inputs import ImageInput, OptionValue
from camserve._many import ManyRun, Outcome, Progress
from camserve.results import Activations, Explanation, Filters, MethodInfo, ModelInfo
from camserve.v1 import explain_pb2 as pb


def explain(
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
    faithfulness: Sequence[str] = (),
    faithfulness_steps: int = 0,
    faithfulness_percentile: int = 0,
    request_id: str = "",
    timeout: float | None = None,
) -> Unary[Explanation]:
    """Explain one image (``image``: path, bytes, PIL image or uint8 ``(H, W, 3)`` array)
    or preprocessed ``tensor`` (float32 ``(3, H, W)``).

    ``targets`` (class indices) or ``top_k`` pick the classes (default: the top-1
    class); ``layer`` defaults to the model's; ``options`` are the method's options
    (see ``methods()``). ``size=(height, width)`` sets the heatmaps' size (default:
    the image's); ``dtype`` their wire type ("float32", "float16" or "uint8": the
    result is float32 in [0, 1] either way); ``return_raw`` adds ``Explanation.raw``.

    ``faithfulness`` names scores to compute with each map ("deletion", "insertion",
    "drop_in_confidence", "increase_in_confidence", "road_morf", "road_lerf"); they come
    back in ``Explanation.metrics`` under their names ("<name>/<class>" with several
    targets). ``faithfulness_steps`` (deletion and insertion, [2, 256]) and
    ``faithfulness_percentile`` (ROAD, [1, 99]) default to the server's 20 and 80 at 0.
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
    _ask_faithfulness(template, faithfulness, faithfulness_steps, faithfulness_percentile)
    build = functools.partial(_inputs.with_input, template, image, tensor, request_id)
    return Unary(
        lambda s: s.explain.Explain, build, results.explanation, timeout, reads_images=True
    )


@overload
def explain_many(
    images: Iterable[ImageInput | npt.NDArray[Any]],
    *,
    model: str,
    method: str = ...,
    concurrency: int = ...,
    raise_errors: Literal[True] = ...,
    progress: Progress | None = ...,
    timeout: float | None = ...,
    **kwargs: Any,
) -> ExplainMany[list[Explanation]]: ...


@overload
def explain_many(
    images: Iterable[ImageInput | npt.NDArray[Any]],
    *,
    model: str,
    method: str = ...,
    concurrency: int = ...,
    raise_errors: Literal[False],
    progress: Progress | None = ...,
    timeout: float | None = ...,
    **kwargs: Any,
) -> ExplainMany[list[Outcome]]: ...


def explain_many(
    images: Iterable[ImageInput | npt.NDArray[Any]],
    *,
    model: str,
    method: str = "gradcam",
    concurrency: int = 16,
    raise_errors: bool = True,
    progress: Progress | None = None,
    timeout: float | None = None,
    **kwargs: Any,
) -> ExplainMany[list[Explanation]] | ExplainMany[list[Outcome]]:
    """Explain many images over one ``ExplainStream``, at most ``concurrency`` in flight.

    Results come back in input order. Each item is an image as for ``explain``, or a
    floating-point array, taken as a preprocessed tensor. ``kwargs`` are ``explain``'s
    (``targets``, ``top_k``, ``layer``, ``options``, ``size``, ``dtype``, ``return_raw``,
    ``faithfulness``, ``faithfulness_steps``, ``faithfulness_percentile``).

    ``raise_errors=True`` (default): the first failure cancels the stream and is
    raised, its ``index`` set to the item's position. ``raise_errors=False``: a failed
    item's slot holds its ``CamserveError`` and the others go on. ``progress(done,
    total)`` is called after each item. The stream's deadline is ``timeout`` (default:
    the client's timeout for each wave of ``concurrency`` items).
    """
    scores = [kwargs.pop(name, default) for name, default in _FAITHFULNESS_DEFAULTS.items()]
    template = _inputs.explain_template(model=model, method=method, **kwargs)
    _ask_faithfulness(template, *scores)
    run = ManyRun(
        images, template, concurrency=concurrency, raise_errors=raise_errors, progress=progress
    )
    return ExplainMany(run, timeout)


def embed(
    image: ImageInput | None = None,
    *,
    model: str,
    tensor: npt.ArrayLike | None = None,
    layer: str | None = None,
    normalize: bool = False,
    timeout: float | None = None,
) -> Unary[results.FloatArray]:
    """One image's representation, float32 ``(dim,)``: by default the input of the
    model's final linear layer; ``normalize`` scales it to unit L2 norm."""
    build = functools.partial(
        _inputs.embed_request, image, tensor, model=model, layer=layer, normalize=normalize
    )
    return Unary(lambda s: s.explain.Embed, build, results.embedding, timeout, reads_images=True)


def activations(
    image: ImageInput | None = None,
    *,
    model: str,
    tensor: npt.ArrayLike | None = None,
    layer: str | None = None,
    top_k: int = 0,
    profile_only: bool = False,
    timeout: float | None = None,
) -> Unary[Activations]:
    """A layer's feature maps for one image (the ``top_k`` most active channels, or all),
    or with ``profile_only`` just every channel's mean activation."""
    build = functools.partial(
        _inputs.activations_request,
        image,
        tensor,
        model=model,
        layer=layer,
        top_k=top_k,
        profile_only=profile_only,
    )
    return Unary(
        lambda s: s.explain.Activations, build, results.activations, timeout, reads_images=True
    )


def filters(
    model: str, layer: str | None = None, *, timeout: float | None = None
) -> Unary[Filters]:
    """A convolution's weights (default: the model's first convolution)."""
    build = functools.partial(_inputs.filters_request, model, layer)
    return Unary(lambda s: s.explain.Filters, build, results.filters, timeout)


def models(*, timeout: float | None = None) -> Unary[list[ModelInfo]]:
    """The models the server serves, in its order."""
    return Unary(lambda s: s.explain.ListModels, pb.ListModelsRequest, _model_infos, timeout)


def methods(*, timeout: float | None = None) -> Unary[list[MethodInfo]]:
    """The explanation methods the server implements, with their options' defaults."""
    return Unary(lambda s: s.explain.ListMethods, pb.ListMethodsRequest, _method_infos, timeout)


def health(service: str = "", *, timeout: float | None = None) -> Unary[str]:
    """The server's health status: "SERVING", "NOT_SERVING", "UNKNOWN" or
    "SERVICE_UNKNOWN" ("" asks about the whole server)."""
    return Unary(lambda s: s.health, lambda: service, str, timeout)


_FAITHFULNESS_DEFAULTS: dict[str, Any] = {
    "faithfulness": (),
    "faithfulness_steps": 0,
    "faithfulness_percentile": 0,
}


def _ask_faithfulness(
    request: pb.ExplainRequest, names: Sequence[str], steps: int, percentile: int
) -> None:
    """Add the faithfulness scores and their settings to ``request`` (the server checks
    the names and ranges)."""
    if isinstance(names, str):
        names = [names]
    request.faithfulness.extend(str(name) for name in names)
    if steps or percentile:
        request.faithfulness_options.steps = int(steps)
        request.faithfulness_options.percentile = int(percentile)


def _model_infos(reply: pb.ListModelsResponse) -> list[ModelInfo]:
    return [results.model_info(m) for m in reply.models]


def _method_infos(reply: pb.ListMethodsResponse) -> list[MethodInfo]:
    return [results.method_info(m) for m in reply.methods]


__all__ = [
    "activations",
    "embed",
    "explain",
    "explain_many",
    "filters",
    "health",
    "methods",
    "models",
]
