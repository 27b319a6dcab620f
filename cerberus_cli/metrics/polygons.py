"""Instance overlaps and foreground Dice from polygons (slide outputs).

Slide-level outputs are polygons in level-0 pixels, so slides are evaluated as
polygons rather than by rasterising them: candidate pairs come from one STRtree
query (bounding boxes that intersect), their intersection areas from shapely, and
the resulting :class:`~cerberus_cli.metrics.overlap.Overlap` feeds the very same
PQ, AJI and matching code as label maps. Areas are exact polygon areas (px²), not
pixel counts, so values differ slightly from a rasterised evaluation along edges.

Objects of one side may overlap each other (hand-drawn annotations); matching then
falls back to the Hungarian algorithm where needed, and Dice uses the union of
each side's polygons.
"""

from __future__ import annotations

import numpy as np
import shapely
from shapely import STRtree

from cerberus_cli.metrics.dice import dice_from_areas
from cerberus_cli.metrics.overlap import Overlap


def valid_geometries(geoms: np.ndarray) -> np.ndarray:
    """An object array of geometries with invalid ones repaired (``make_valid``)."""
    geoms = np.asarray(geoms, dtype=object)
    bad = ~shapely.is_valid(geoms)
    if bad.any():
        geoms = geoms.copy()
        geoms[bad] = shapely.make_valid(geoms[bad])
    return geoms


def overlap_from_polygons(true: np.ndarray, pred: np.ndarray) -> Overlap:
    """Overlap table of two arrays of shapely (Multi)Polygons."""
    true, pred = valid_geometries(true), valid_geometries(pred)
    at = shapely.area(true).astype(np.float64)
    ap = shapely.area(pred).astype(np.float64)
    if true.size == 0 or pred.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Overlap(at, ap, empty, empty, np.zeros(0))
    ti, pj = STRtree(pred).query(true, predicate="intersects")
    inter = shapely.area(shapely.intersection(true[ti], pred[pj]))
    keep = inter > 0
    return Overlap(at, ap, ti[keep].astype(np.int64), pj[keep].astype(np.int64),
                   inter[keep].astype(np.float64))


def polygon_dice(true: np.ndarray, pred: np.ndarray) -> float:
    """Dice of the areas covered by two sets of polygons (NaN if both empty)."""
    true, pred = valid_geometries(true), valid_geometries(pred)
    ut = shapely.union_all(true) if true.size else shapely.Polygon()
    up = shapely.union_all(pred) if pred.size else shapely.Polygon()
    return dice_from_areas(shapely.area(shapely.intersection(ut, up)), shapely.area(ut),
                           shapely.area(up))
