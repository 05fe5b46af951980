"""Occlusion by incremental inference (Nakandala, Kumar & Papakonstantinou, SIGMOD 2019):
each occluded copy reuses the original image's activations and recomputes only the
cone of positions its window changes, layer by layer, batched across windows."""

from .execute import incremental_occluded_logits

__all__ = ["incremental_occluded_logits"]
