"""The image-set service's domain logic, free of protobuf: one object over its parts.

``servicer.py`` converts protobuf to these objects and back, nothing else. The engine
(``indexer``, ``queries``, ``receptive_field``, ``projection``) does the arithmetic;
the service's parts decide what runs where (``context``): ``set_management`` creates,
lists and deletes sets; ``index_stream`` reads an indexing stream into batches, which
``batch_indexing`` prepares (``incoming``), computes and stores; ``top_query``,
``neighbour_query`` and ``map_query`` answer the three questions. Each part is a
function of the context; ``ImageSetService`` is the context with the parts as methods.
"""

from __future__ import annotations

from .context import ImageSetContext
from .index_messages import IncomingImage, IndexChunk, IndexProgress, Outcome
from .index_stream import index_stream
from .map_query import MapAnswer, embedding_map_query
from .neighbour_query import NeighboursAnswer, neighbours_query
from .set_management import delete_set, list_sets
from .top_query import TopActivatingAnswer, top_activating_query


class ImageSetService(ImageSetContext):
    """Named image sets over one store, indexed on the server's device workers."""

    # ``describe`` and ``close`` are the context's; the rest are the parts' functions.
    index = index_stream
    top_activating = top_activating_query
    neighbours = neighbours_query
    embedding_map = embedding_map_query
    list_sets = list_sets
    delete = delete_set


__all__ = [
    "ImageSetService",
    "IncomingImage",
    "IndexChunk",
    "IndexProgress",
    "MapAnswer",
    "NeighboursAnswer",
    "Outcome",
    "TopActivatingAnswer",
]
