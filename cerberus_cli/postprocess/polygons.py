"""Label map -> shapely polygons following pixel edges, holes kept.

Outlines are traced by marching squares on the object's mask upsampled 2x
(nearest), which puts the outline on the pixel edges (pixel ``i`` covers
``[i, i+1)``) with only a quarter-pixel chamfer at corners: areas match pixel
counts, unlike outlines through pixel centres, which shrink a 60-px nucleus by
~20 %. Every ring is traced, and rings combine even-odd, so holes (and islands
inside holes) come out right. Outlines are simplified (Douglas-Peucker,
topology preserved) in coordinates relative to the object's bounding box, so
the same object gives the same polygon wherever it sits in an array.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import shapely
from scipy import ndimage as ndi
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry
from skimage.measure import find_contours


def mask_polygon(mask: np.ndarray, simplify: float = 0.0) -> BaseGeometry | None:
    """Polygon (or MultiPolygon) of a boolean mask, in pixel-edge coordinates.

    Returns None for an empty mask.
    """
    if not mask.any():
        return None
    up = np.pad(mask, 1).astype(np.float32).repeat(2, axis=0).repeat(2, axis=1)
    rings = []
    for c in find_contours(up, 0.5, fully_connected="high"):
        if len(c) >= 4:
            # (row, col) of the 2x grid, shifted by the 1-px pad -> (x, y) pixel edges.
            rings.append(Polygon((c[:, ::-1] + 0.5) / 2.0 - 1.0))
    if not rings:
        return None
    geom = rings[0]
    for ring in rings[1:]:
        geom = shapely.symmetric_difference(geom, ring)
    if simplify > 0:
        geom = shapely.simplify(geom, simplify, preserve_topology=True)
    if not geom.is_valid:
        geom = shapely.make_valid(geom)
    return _polygonal(geom)


def _polygonal(geom: BaseGeometry) -> BaseGeometry | None:
    """Keep the polygonal parts of a geometry (drop stray lines/points)."""
    if isinstance(geom, (Polygon, MultiPolygon)):
        return None if geom.is_empty else geom
    parts = [g for g in getattr(geom, "geoms", []) if isinstance(g, (Polygon, MultiPolygon))]
    polys = [p for g in parts for p in (g.geoms if isinstance(g, MultiPolygon) else [g])]
    if not polys:
        return None
    return polys[0] if len(polys) == 1 else MultiPolygon(polys)


def label_polygons(labels: np.ndarray, ids: Sequence[int] | None = None,
                   offset: tuple[float, float] = (0.0, 0.0), scale: float = 1.0,
                   simplify: float = 0.5) -> list[BaseGeometry | None]:
    """Polygons of the objects ``ids`` (default: all 1..N) of an int label map.

    Output coordinates are ``(pixel-edge coordinate + offset) * scale``, e.g.
    ``offset`` = grid position of ``labels[0, 0]`` and ``scale`` = level-0 px per
    grid px. ``simplify`` is the tolerance in grid px. An id absent from
    ``labels`` gives None.
    """
    slices = ndi.find_objects(labels)
    if ids is None:
        ids = range(1, len(slices) + 1)
    geoms: list[BaseGeometry | None] = []
    origins = []
    for i in ids:
        sl = slices[i - 1] if 0 < i <= len(slices) else None
        geom = None if sl is None else mask_polygon(labels[sl] == i, simplify)
        geoms.append(geom)
        if geom is not None:
            origins.append((sl[1].start + offset[0], sl[0].start + offset[1]))
    present = [g for g in geoms if g is not None]
    if not present:
        return geoms
    arr = np.empty(len(present), dtype=object)
    arr[:] = present
    counts = shapely.get_num_coordinates(arr)
    shift = np.repeat(np.asarray(origins, dtype=np.float64), counts, axis=0)
    moved = iter(shapely.transform(arr, lambda xy: (xy + shift) * scale))
    return [None if g is None else next(moved) for g in geoms]
