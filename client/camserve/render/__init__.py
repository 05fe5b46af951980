"""Figures for explanations: overlays, captioned panels with colour scales, grids, charts,
embeddings, HTML reports, and evaluations of methods (ranked table, score charts,
sanity curves).

Overlays, panels, grids and thumbnail maps need numpy and Pillow only. Captioned
figures, charts and the scatter plot use matplotlib, the HTML report jinja2, and
``tsne_2d`` scikit-learn: the ``plots`` extra, each imported on first use, with an
ImportError naming the extra where it is missing.
"""

from __future__ import annotations

from camserve.render._mpl import PLOTS_EXTRA_HINT, has_matplotlib
from camserve.render.attributions import gradient_image, outlier_threshold, signed_map
from camserve.render.charts import channel_profile_chart, channel_profile_figure
from camserve.render.colormaps import COLORMAP_NAMES, apply_colormap, colormap_lut, is_colormap
from camserve.render.embedding import class_colors, embedding_scatter, snap_to_grid, thumbnail_map
from camserve.render.evaluation_charts import sanity_curves_chart, score_bars_chart
from camserve.render.evaluation_report import evaluation_page, write_evaluation_report
from camserve.render.figures import (
    feature_maps_figure,
    filters_figure,
    panels_figure,
    tiles_figure,
)
from camserve.render.grids import feature_map_grid, filter_tiles, method_grid
from camserve.render.images import ImageLike, for_display, overlay, resize_heatmap, to_pil
from camserve.render.panels import ColourScale, Panel, explanation_panels
from camserve.render.projection import pca_2d, tsne_2d
from camserve.render.report import ReportEntry, html_report, png_data_uri, write_report

__all__ = [
    "COLORMAP_NAMES",
    "PLOTS_EXTRA_HINT",
    "ColourScale",
    "ImageLike",
    "Panel",
    "ReportEntry",
    "apply_colormap",
    "channel_profile_chart",
    "channel_profile_figure",
    "class_colors",
    "colormap_lut",
    "embedding_scatter",
    "evaluation_page",
    "explanation_panels",
    "feature_map_grid",
    "feature_maps_figure",
    "filter_tiles",
    "filters_figure",
    "for_display",
    "gradient_image",
    "has_matplotlib",
    "html_report",
    "is_colormap",
    "method_grid",
    "outlier_threshold",
    "overlay",
    "panels_figure",
    "pca_2d",
    "png_data_uri",
    "resize_heatmap",
    "sanity_curves_chart",
    "score_bars_chart",
    "signed_map",
    "snap_to_grid",
    "thumbnail_map",
    "tiles_figure",
    "to_pil",
    "tsne_2d",
    "write_evaluation_report",
    "write_report",
]
