"""The ``camserve.v1`` wire contract: stubs generated from ``protos/camserve/v1/``.

``explain_pb2`` holds the messages, ``explain_pb2_grpc`` the ``ExplainService``
stub and servicer. Regenerate them with ``python scripts/gen_protos.py``.
"""

from camserve.v1 import explain_pb2, explain_pb2_grpc

__all__ = ["explain_pb2", "explain_pb2_grpc"]
