"""camserve's server: the explanation engine, the model registry and the gRPC service."""

__version__ = "0.1.0"
