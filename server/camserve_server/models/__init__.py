"""Models: loading, structure inspection, layer lookup and the backbone/head split."""

from .explainable import ExplainableModel
from .inspection import ModelStructure, inspect_model

__all__ = ["ExplainableModel", "ModelStructure", "inspect_model"]
