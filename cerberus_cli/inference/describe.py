"""`slide_info`: everything ``cerberus info`` reports about one slide, as a dict
(metadata from the reader, plus how many tiles segmentation would process)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from cerberus_cli.core.optionspec import backend_opt, check_mpp, check_options, mpp_opt, opt
from cerberus_cli.inference.tile_plan import (
    DEFAULT_MARGIN,
    DEFAULT_TILE,
    REFERENCE_TILE,
    plan_tiles,
)
from cerberus_cli.slides.masks import load_mask
from cerberus_cli.slides.slide import open_slide
from cerberus_cli.slides.tissue import detect_tissue
from cerberus_cli.slides.tissue_options import TissueOptions

#: Model resolution of the segmentation (um/px).
SEGMENT_MPP = 0.5


@dataclass(frozen=True)
class InfoOptions:
    """Options of ``cerberus info`` (and :func:`slide_info`)."""

    backend: str = backend_opt()
    mpp: float | None = mpp_opt()
    mask: str | None = opt(None, "Tissue mask (PNG/TIFF spanning the slide, or GeoJSON polygons "
                           "in level-0 px) instead of automatic detection.")
    tissue: TissueOptions = field(default_factory=TissueOptions)

    def __post_init__(self) -> None:
        check_options(self)
        check_mpp(self.mpp)


def slide_info(path: str | os.PathLike, options: InfoOptions | None = None) -> dict[str, Any]:
    """Metadata, tissue fraction and tile counts of one slide (JSON-serialisable).

    ``mask`` replaces the automatic tissue detection with a user mask. The tile
    counts are those of the default segmentation geometry (720 px tiles with 152 px
    context at 0.5 um/px) and of the reference geometry (144 px tiles).
    """
    options = options or InfoOptions()
    with open_slide(path, backend=options.backend, mpp=options.mpp) as slide:
        tissue = load_mask(options.mask, slide) if options.mask else detect_tissue(slide, options=options.tissue)
        tiles = {}
        for name, tile in (("default", DEFAULT_TILE), ("reference", REFERENCE_TILE)):
            plan = plan_tiles(slide, tissue, SEGMENT_MPP, tile, DEFAULT_MARGIN)
            tiles[name] = {"mpp": SEGMENT_MPP, "tile": tile, "margin": DEFAULT_MARGIN,
                           "count": len(plan)}
        width, height = slide.dimensions
        return {
            "path": str(slide.path),
            "vendor": slide.vendor,
            "backend": slide.backend,
            "width": width,
            "height": height,
            "mpp": slide.mpp,
            "mpp_source": slide.mpp_source,
            "objective_power": slide.objective_power,
            "levels": [
                {"width": w, "height": h, "downsample": ds}
                for (w, h), ds in zip(slide.level_dimensions, slide.level_downsamples)
            ],
            "associated_images": list(slide.associated_images),
            "tissue_fraction": tissue.fraction,
            "tissue_mask": {"source": tissue.source, "mpp": tissue.mpp,
                            "width": int(tissue.mask.shape[1]), "height": int(tissue.mask.shape[0])},
            "tiles": tiles,
        }
