"""Image sets: index a data set once, then ask which images most activate a channel,
which are neighbours in feature space, and where each lies on a 2-D map of the set.

The engine is split by job: ``records`` (what is stored, in a versioned binary form),
``store`` with its memory and Redis backends and the arrays they stack for queries
(``query_arrays``), ``indexer`` (one forward pass with hooks per batch),
``receptive_field``, ``queries`` and ``projection``. The service over it: ``service``
(every operation, the one object ``servicer`` calls), ``context`` (where work runs),
``index_stream`` with ``set_management``, ``batch_indexing`` and ``incoming``, and one
module per query: ``top_query``, ``neighbour_query`` and ``map_query``.
"""
