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

Where pixels are needed (the GlaS object Hausdorff distance; predicted objects
scored against a label map) polygons are rasterised by pixel centre: a level-0
pixel ``(row, col)`` belongs to an object when its centre ``(col + 0.5, row +
0.5)`` lies inside the polygon, holes respected (:func:`fill_polygon`). Outlines
that follow pixel edges, as ``cerberus segment`` traces them, therefore give back
exactly the pixels they were traced from.
"""

from __future__ import annotations

import math

import numpy as np
import shapely
from shapely import STRtree

from cerberus_cli.core.errors import InputError
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


# --- rasterising ------------------------------------------------------------------------

def _parts(geom: shapely.Geometry) -> list[shapely.Polygon]:
    """The polygons of a (Multi)Polygon or geometry collection."""
    if isinstance(geom, shapely.Polygon):
        return [] if geom.is_empty else [geom]
    if isinstance(geom, (shapely.MultiPolygon, shapely.GeometryCollection)):
        return [p for part in geom.geoms for p in _parts(part)]
    return []


def fill_polygon(geom: shapely.Geometry, y0: int, x0: int, shape: tuple[int, int]) -> np.ndarray:
    """Pixels of the window at (y0, x0) whose centres lie inside ``geom``.

    A vectorised scanline fill: every ring edge is cut with the rows of pixel
    centres it spans (half-open in y, so a vertex on a row counts once), and the
    crossings of each row, sorted, bound the inside spans by the even-odd rule over
    all rings, which respects holes and islands in holes. A centre exactly on an
    edge belongs to the span on its right, so polygons that share an edge never
    both hold a pixel.
    """
    h, w = shape
    rows_all, xs_all = [], []
    for poly in _parts(geom):
        for ring in (poly.exterior, *poly.interiors):
            xy = np.asarray(ring.coords, dtype=np.float64)[:, :2]
            gx, gy = xy[:, 0] - 0.5 - x0, xy[:, 1] - 0.5 - y0  # pixel centres at integers
            ax, ay, bx, by = gx[:-1], gy[:-1], gx[1:], gy[1:]
            r0 = np.clip(np.ceil(np.minimum(ay, by)), 0, h).astype(np.int64)
            r1 = np.clip(np.ceil(np.maximum(ay, by)), 0, h).astype(np.int64)
            n = r1 - r0
            total = int(n.sum())
            if total == 0:
                continue
            edge = np.repeat(np.arange(n.size), n)
            rows = np.repeat(r0, n) + np.arange(total) - np.repeat(np.cumsum(n) - n, n)
            xs = ax[edge] + (rows - ay[edge]) * (bx[edge] - ax[edge]) / (by[edge] - ay[edge])
            rows_all.append(rows)
            xs_all.append(xs)
    if not rows_all:
        return np.zeros(shape, dtype=bool)
    rows, xs = np.concatenate(rows_all), np.concatenate(xs_all)
    order = np.lexsort((xs, rows))  # every row holds an even number of crossings
    rows, xs = rows[order], xs[order]
    start = np.clip(np.ceil(xs[0::2]), 0, w).astype(np.int64)
    stop = np.clip(np.ceil(xs[1::2]), 0, w).astype(np.int64)
    diff = np.zeros((h, w + 1), dtype=np.int32)
    np.add.at(diff, (rows[0::2], start), 1)
    np.add.at(diff, (rows[0::2], stop), -1)
    return np.cumsum(diff, axis=1)[:, :w] > 0


def polygon_pixels(geom: shapely.Geometry | None) -> tuple[int, int, np.ndarray] | None:
    """The pixels of one object as ``(y0, x0, mask)``, the mask cropped to them.

    Pixels by centre (:func:`fill_polygon`); an object too thin to hold any pixel
    centre keeps the one pixel under a point on its surface, so no object vanishes.
    None for a missing or empty outline.
    """
    if geom is None or shapely.is_empty(geom):
        return None
    minx, miny, maxx, maxy = shapely.bounds(geom)
    x0, y0 = math.floor(minx), math.floor(miny)
    mask = fill_polygon(geom, y0, x0, (math.ceil(maxy) - y0 + 1, math.ceil(maxx) - x0 + 1))
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size:
        return (y0 + int(rows[0]), x0 + int(cols[0]),
                mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1])
    p = shapely.point_on_surface(geom)
    return math.floor(p.y), math.floor(p.x), np.ones((1, 1), dtype=bool)


def rasterise_polygons(geoms: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Label map of ``shape`` with object ``k`` of ``geoms`` as id ``k + 1`` (int32).

    Pixels by centre (:func:`polygon_pixels`). Where objects overlap (they do not
    in ``cerberus segment`` outputs) the smaller object keeps the shared pixels, so
    a small object on a large one stays visible. Raises :class:`InputError` naming
    the first object (1-based, in file order) with an empty outline or with pixels
    outside the map.
    """
    geoms = valid_geometries(geoms)
    h, w = shape
    out = np.zeros(shape, dtype=np.int32)
    order = np.argsort(-shapely.area(geoms), kind="stable") if geoms.size else np.zeros(0, int)
    for k in order.tolist():
        pixels = polygon_pixels(geoms[k])
        if pixels is None:
            raise InputError(f"object {k + 1} of {geoms.size} has an empty outline")
        y0, x0, mask = pixels
        y1, x1 = y0 + mask.shape[0], x0 + mask.shape[1]
        if y0 < 0 or x0 < 0 or y1 > h or x1 > w:
            raise InputError(f"object {k + 1} of {geoms.size} covers pixels x {x0}..{x1 - 1}, "
                             f"y {y0}..{y1 - 1}, outside the {w} x {h} px map")
        out[y0:y1, x0:x1][mask] = k + 1
    return out
