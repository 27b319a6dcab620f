"""Instance overlaps and foreground Dice from polygons (slide outputs).

Slide-level outputs are polygons in level-0 pixels, so slides are evaluated as
polygons rather than by rasterising them: candidate pairs come from one STRtree
query (bounding boxes that intersect), their intersection areas from shapely, and
the resulting :class:`~cerberus_cli.metrics.overlap.Overlap` feeds the very same
PQ, AJI and matching code as label maps. Areas are exact polygon areas (px²), not
pixel counts, so values differ slightly from a rasterised evaluation along edges.

Objects of one side may overlap each other (hand-drawn annotations); matching then
falls back to the Hungarian algorithm where needed, and Dice merges each side's
polygons with a union (only then: for non-overlapping sets it is a sum over pairs).
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


def self_overlap_area(geoms: np.ndarray) -> float:
    """Total area where objects of one set overlap each other (0 for a tiling)."""
    geoms = valid_geometries(geoms)
    if geoms.size < 2:
        return 0.0
    i, j = STRtree(geoms).query(geoms, predicate="intersects")
    keep = i < j
    if not keep.any():
        return 0.0
    return float(shapely.area(shapely.intersection(geoms[i[keep]], geoms[j[keep]])).sum())


def polygon_dice(true: np.ndarray, pred: np.ndarray, overlap: Overlap | None = None) -> float:
    """Dice of the areas covered by two sets of polygons (NaN if both empty).

    When neither set overlaps itself (instance outputs, phantom truth), the covered
    areas and their intersection are plain sums over ``overlap`` (computed if not
    given); otherwise each set is merged with a union first (slower, exact).
    """
    true, pred = valid_geometries(true), valid_geometries(pred)
    if self_overlap_area(true) == 0.0 and self_overlap_area(pred) == 0.0:
        ov = overlap if overlap is not None else overlap_from_polygons(true, pred)
        return dice_from_areas(float(ov.inter.sum()), float(ov.true_areas.sum()),
                               float(ov.pred_areas.sum()))
    ut = shapely.union_all(true) if true.size else shapely.Polygon()
    up = shapely.union_all(pred) if pred.size else shapely.Polygon()
    return dice_from_areas(shapely.area(shapely.intersection(ut, up)), shapely.area(ut),
                           shapely.area(up))
