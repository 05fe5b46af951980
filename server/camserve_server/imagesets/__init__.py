"""Image sets: index a data set once, then ask which images most activate a channel,
which are neighbours in feature space, and where each lies on a 2-D map of the set.

The engine is split by job: ``records`` (what is stored, in a versioned binary form),
``store`` with its memory and Redis backends, ``indexer`` (one forward pass with hooks
per batch), ``receptive_field``, ``queries`` and ``projection``. The service over it is
split the same way: ``service`` (the one object ``servicer`` calls), ``context`` (where
work runs), ``set_management``, ``index_stream``, ``batch_indexing``, ``incoming``, and
one module per query: ``top_query``, ``neighbour_query`` and ``map_query``.
"""
