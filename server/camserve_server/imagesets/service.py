"""The image-set service's domain logic, free of protobuf: every operation, in one place.

``servicer.py`` converts protobuf to these objects and back, nothing else. The engine
(``indexer``, ``queries``, ``receptive_field``, ``projection``) does the arithmetic;
``context`` decides where work runs. An operation that is more than a store call has a
module of its own: ``index_stream`` (which ``set_management``, ``batch_indexing`` and
``incoming`` serve), ``top_query``, ``neighbour_query`` and ``map_query``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import aclosing

from ..config import Settings
from ..errors import InvalidArgument
from ..models.loading import LoadedModel
from ..runtime.metrics import Metrics
from ..runtime.workers import DeviceWorker
from .context import ImageSetContext
from .index_messages import IncomingImage, IndexChunk, IndexProgress, Outcome
from .index_stream import index_stream
from .map_query import MapAnswer, embedding_map_query
from .neighbour_query import NeighboursAnswer, neighbours_query
from .records import SetInfo
from .store import SetStore, open_set_store
from .top_query import TopActivatingAnswer, top_activating_query


class ImageSetService:
    """Named image sets over one store, indexed on the server's device workers.

    ``store`` defaults to the one ``settings`` name: Redis at ``redis_url``, else in memory.
    """

    def __init__(
        self,
        settings: Settings,
        models: dict[str, LoadedModel],
        pick_worker: Callable[[], DeviceWorker],
        metrics: Metrics,
        store: SetStore | None = None,
    ) -> None:
        if store is None:
            store = open_set_store(settings.redis_url, max_bytes=settings.max_set_bytes)
        self._context = ImageSetContext(settings, models, pick_worker, metrics, store)

    @property
    def store(self) -> SetStore:
        """The store the sets live in."""
        return self._context.store

    def close(self) -> None:
        """Stop the service's thread pool and release the store."""
        self._context.close()

    async def index(self, chunks: AsyncIterator[IndexChunk]) -> AsyncIterator[IndexProgress]:
        """Index a stream of images into the set its first chunk names; a report per batch."""
        async with aclosing(index_stream(self._context, chunks)) as reports:
            async for report in reports:
                yield report

    async def top_activating(
        self, name: str, layer: str, channel: int, k: int
    ) -> TopActivatingAnswer:
        """The ``k`` members whose maximum of ``channel`` is highest, with their patches."""
        return await top_activating_query(self._context, name, layer, channel, k)

    async def neighbours(
        self,
        name: str,
        *,
        image: bytes | None = None,
        member_id: str | None = None,
        k: int = 0,
        space: str = "features",
        thumbnail_size: int = 0,
    ) -> NeighboursAnswer:
        """The ``k`` members nearest a query image or member, in feature or pixel space."""
        return await neighbours_query(
            self._context, name, image, member_id, k, space, thumbnail_size
        )

    async def embedding_map(
        self,
        name: str,
        *,
        method: str = "pca",
        seed: int = 0,
        max_points: int = 0,
        thumbnail_size: int = 0,
    ) -> MapAnswer:
        """The set's embeddings projected to 2-D, each point with its predicted class."""
        return await embedding_map_query(
            self._context, name, method, seed, max_points, thumbnail_size
        )

    async def list_sets(self) -> list[SetInfo]:
        """Every set's description, by name."""
        return await self._context.off_loop(self._context.store.list)

    async def describe(self, name: str) -> SetInfo:
        """The named set's description; ``NotFound`` when there is none."""
        return await self._context.describe(name)

    async def kept_pictures(self, name: str, max_images: int) -> tuple[str, list[bytes]]:
        """The model that indexed the named set, and each member's kept picture (the
        model's view, PNG) in the set's order; ``NotFound`` when there is no such set,
        ``InvalidArgument`` before anything is read when it has more than ``max_images``."""
        info = await self._context.describe(name)
        if info.size > max_images:
            raise InvalidArgument(
                f"set {info.name!r} has {info.size} images; at most {max_images} at once "
                "(--max-evaluation-images)"
            )

        def read() -> list[bytes]:
            return [record.image for record in self._context.store.members(info.name)]

        return info.model, await self._context.off_loop(read)

    async def delete(self, name: str) -> tuple[SetInfo, int]:
        """Delete the named set; its description before deletion and the bytes freed."""
        info = await self._context.describe(name)
        freed = await self._context.off_loop(self._context.store.delete, info.name)
        return info, freed


__all__ = [
    "ImageSetService",
    "IncomingImage",
    "IndexChunk",
    "IndexProgress",
    "MapAnswer",
    "NeighboursAnswer",
    "Outcome",
    "SetInfo",
    "TopActivatingAnswer",
]
