"""What a value read from the shared cache must look like: its model's class count and
its layer's activation shape, learned from each model's probe forward at load.

Redis is shared and not trusted: a well-formed value of the wrong shape (a writer's bug,
another model under the same name, a forgery) would fail the request (the head cannot
run on it) or answer with another model's classes. The Redis tier refuses it instead,
as a counted miss, and the request is computed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from .cache_format import CachedActivation, CacheKey, KeyParts
from .precision import precision_name

if TYPE_CHECKING:
    from ..models.loading import LoadedModel


class ShapeBook:
    """Expected shapes by the fields of a rendered key. Read-only once the models are in.

    A key of a model the book does not know is not checked (a server only reads keys of
    the models it serves). The spatial size is checked for the model's own preprocessing,
    which always yields its input size; a caller's tensor input may have any size, so for
    those only the channel and class counts are.
    """

    def __init__(self) -> None:
        self._classes: dict[str, int] = {}  # KeyParts.model -> class count
        self._layers: dict[tuple[str, str], tuple[int, int, int]] = {}  # (K, h, w)
        self._fixed_size: set[tuple[str, str]] = set()  # (model, preprocess)

    def add_model(
        self,
        *,
        model: str,
        weights_digest: str,
        preprocess: str,
        precision: str,
        classes: int,
        layers: Mapping[str, Sequence[int]],
    ) -> None:
        """Expect ``classes`` logits under ``model``'s keys, and at each of ``layers``
        (probe output shapes ``(1, K, h, w)`` at the input size) ``K`` channels."""

        def parts(layer: str) -> KeyParts:
            return CacheKey(model, weights_digest, preprocess, layer, "", precision).parts()

        base = parts("")
        self._classes[base.model] = int(classes)
        self._fixed_size.add((base.model, base.preprocess))
        for name, shape in layers.items():
            if len(shape) == 4 and all(int(d) > 0 for d in shape):
                _, k, h, w = (int(d) for d in shape)
                self._layers[base.model, parts(name).layer] = (k, h, w)

    def problem(self, key: str, value: CachedActivation) -> str | None:
        """Why ``value`` cannot be ``key``'s (a short reason), or ``None`` if it fits."""
        parts = KeyParts.parse(key)
        classes = None if parts is None else self._classes.get(parts.model)
        if parts is None or classes is None:
            return None
        count = int(value.logits.shape[0])
        if count != classes:
            return f"{count} logits, the model has {classes} classes"
        expected = self._layers.get((parts.model, parts.layer))
        if expected is None:
            return None
        k, h, w = (int(d) for d in value.activation.shape)
        if k != expected[0]:
            return f"{k} channels, the layer has {expected[0]}"
        if (parts.model, parts.preprocess) in self._fixed_size and (h, w) != expected[1:]:
            return f"a {h}x{w} activation, the layer's is {expected[1]}x{expected[2]}"
        return None

    def __len__(self) -> int:
        return len(self._classes)


def model_shapes(models: Iterable[LoadedModel], precision: str) -> ShapeBook:
    """The book of the server's models (``precision`` is part of their keys)."""
    book = ShapeBook()
    for loaded in models:
        model = loaded.primary
        book.add_model(
            model=loaded.name,
            weights_digest=loaded.weights_digest,
            preprocess=loaded.preprocess.digest(),
            precision=precision_name(precision),
            classes=model.num_classes,
            layers={name: info.shape for name, info in model.structure.layers.items()},
        )
    return book
