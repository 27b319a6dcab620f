"""Segment an image or a slide region in memory and get a GeoDataFrame back, no files.

The same pipeline as ``cerberus segment`` (tiles, network, post-processing), with
a :class:`~cerberus_cli.inference.sinks.MemorySink` in place of the file writers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import geopandas as gpd
import numpy as np
import shapely

from cerberus_cli.core.errors import InputError
from cerberus_cli.inference.options import SegmentOptions
from cerberus_cli.inference.pipeline import Segmenter
from cerberus_cli.inference.sinks import MemorySink, SlideStats
from cerberus_cli.model.registry import load_model
from cerberus_cli.outputs.frame import records_to_frame
from cerberus_cli.slides import (
    Slide,
    TissueMask,
    detect_tissue,
    load_mask,
    open_slide,
    slide_from_array,
)


@dataclass
class SegmentResult:
    """Objects (level-0 px of the image or slide), the tissue-type map and statistics."""

    objects: gpd.GeoDataFrame
    tissue: np.ndarray | None     #: tissue class per map cell (None without a tissue head)
    tissue_mpp: float | None      #: um/px of one tissue-map cell
    stats: SlideStats


def segment_image(image: np.ndarray, mpp: float, options: SegmentOptions | None = None,
                  key: str = "image", whole: bool = True) -> SegmentResult:
    """Segment an RGB image array (H x W x 3 uint8) at ``mpp`` um/px.

    ``whole=True`` segments the whole image; ``False`` detects tissue first as for a
    slide. Reads happen in this process (``options.workers`` is ignored).
    """
    options = replace(options or SegmentOptions(), workers=0)
    slide = slide_from_array(image, mpp, key)
    return _segment(slide, options, key, None if whole else detect_tissue(slide, options=options.tissue))


def segment_region(path: str | os.PathLike, region: tuple[int, int, int, int],
                   options: SegmentOptions | None = None) -> SegmentResult:
    """Segment the level-0 rectangle ``region = (x, y, width, height)`` of a slide file.

    Objects come back in the slide's level-0 coordinates, clipped to the region.
    """
    options = options or SegmentOptions()
    x, y, w, h = (int(v) for v in region)
    with open_slide(path, backend=options.backend, mpp=options.mpp) as slide:
        width, height = slide.dimensions
        if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > width or y + h > height:
            raise InputError(f"{path}: region {region} is not inside the {width}x{height} slide")
        pixels = slide.read_region(x, y, 0, w, h)
        mpp = slide.mpp
    key = f"{os.path.basename(os.fspath(path))}@{x},{y},{w},{h}"
    result = segment_image(pixels, mpp, options, key=key)
    result.objects = _translate(result.objects, x, y)
    return result


def _segment(slide: Slide, options: SegmentOptions, key: str,
             mask: TissueMask | None) -> SegmentResult:
    if options.mask:
        mask = load_mask(options.mask, slide)
    sink = MemorySink()
    with Segmenter(load_model(options.model), options) as segmenter:
        stats = segmenter.run(slide, mask, sink, key)
    return SegmentResult(records_to_frame(sink.records), sink.tissue_classes, sink.tissue_mpp, stats)


def _translate(frame: gpd.GeoDataFrame, dx: int, dy: int) -> gpd.GeoDataFrame:
    if len(frame):
        frame["geometry"] = shapely.transform(frame.geometry.values, lambda c: c + (dx, dy))
        frame["centroid_x"] += dx
        frame["centroid_y"] += dy
    return frame

