"""Figures for explanations: overlays, grids, charts, embeddings and HTML reports.

numpy and Pillow only; scikit-learn is imported, lazily, for ``tsne_2d`` alone.
"""

from __future__ import annotations

from camserve.render.charts import channel_profile_chart
from camserve.render.colormaps import COLORMAP_NAMES, apply_colormap, colormap_lut
from camserve.render.embedding import class_colors, embedding_scatter, snap_to_grid, thumbnail_map
from camserve.render.grids import feature_map_grid, filter_tiles, method_grid
from camserve.render.images import ImageLike, overlay, resize_heatmap, to_pil
from camserve.render.projection import pca_2d, tsne_2d
from camserve.render.report import ReportEntry, html_report, png_data_uri

__all__ = [
    "COLORMAP_NAMES",
    "ImageLike",
    "ReportEntry",
    "apply_colormap",
    "channel_profile_chart",
    "class_colors",
    "colormap_lut",
    "embedding_scatter",
    "feature_map_grid",
    "filter_tiles",
    "html_report",
    "method_grid",
    "overlay",
    "pca_2d",
    "png_data_uri",
    "resize_heatmap",
    "snap_to_grid",
    "thumbnail_map",
    "to_pil",
    "tsne_2d",
]
