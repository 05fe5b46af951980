"""Occlusion by incremental inference (Nakandala, Kumar & Papakonstantinou, SIGMOD 2019):
each occluded copy reuses the original image's activations and recomputes only the
cone of positions its window changes, layer by layer, batched across windows; with a
projective-field threshold below 1, that cone stops growing (approximate)."""

from .execute import Scores, incremental_occluded_logits

__all__ = ["Scores", "incremental_occluded_logits"]
