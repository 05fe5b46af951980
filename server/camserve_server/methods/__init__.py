"""Explanation methods: one registry, one small file per family (see docs/methods.md)."""

from .base import (
    BatchResult,
    CachedLayer,
    Method,
    MethodNotApplicable,
    SampleResult,
    TargetRequest,
)
from .engine import explain
from .registry import METHODS, get_method

__all__ = [
    "METHODS",
    "BatchResult",
    "CachedLayer",
    "Method",
    "MethodNotApplicable",
    "SampleResult",
    "TargetRequest",
    "explain",
    "get_method",
]
