"""Thresholds and sizes of the instance post-processing, in one typed place.

Sizes are in pixels of the model-resolution grid (about 0.5 um/px for the
reference Cerberus model); areas in pixels (px^2).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PostprocessOptions:
    """Parameters of the reference post-processing (Graham et al., 2022).

    Nuclei: ``mask = (inner + boundary) > nuclei_threshold`` eroded once,
    ``markers = inner > nuclei_threshold`` (components smaller than
    ``nuclei_min_marker_px`` removed), watershed on ``-inner`` inside the mask.
    Glands/lumina: ``(inner - boundary) > threshold``, components smaller than
    the minimum removed, each dilated back by the eroded width (elliptical
    kernel of ``*_kernel_px``) and its holes filled; lumina are kept only inside
    glands. ``gland_downsample=2`` runs the gland and lumen steps on a 2x
    block-averaged map (sizes halved) for speed; labels are brought back to the
    full grid, so the rest of the pipeline is unchanged.
    """

    nuclei_threshold: float = 0.5
    nuclei_min_marker_px: int = 5
    nuclei_min_size_px: int = 10
    gland_threshold: float = 0.55
    gland_min_size_px: int = 400
    gland_kernel_px: int = 11
    lumen_threshold: float = 0.5
    lumen_min_size_px: int = 30
    lumen_kernel_px: int = 3
    #: Minimum share of a lumen's pixels that must lie inside a gland.
    lumen_in_gland_share: float = 0.5
    gland_downsample: int = 1
    #: Douglas-Peucker tolerance of the output polygons (model-grid px).
    simplify_px: float = 0.5
    #: Largest expected object extent per task (model-grid px), for chunk margins.
    max_nucleus_px: int = 64
    max_gland_px: int = 512
    max_lumen_px: int = 384

    def __post_init__(self) -> None:
        if self.gland_downsample not in (1, 2):
            raise ValueError(f"gland_downsample must be 1 or 2, got {self.gland_downsample}")
        for name in ("nuclei_threshold", "gland_threshold", "lumen_threshold",
                     "lumen_in_gland_share"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {v}")
        for name in ("gland_kernel_px", "lumen_kernel_px"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.simplify_px < 0:
            raise ValueError("simplify_px must be >= 0")
