"""Label map -> shapely polygons following pixel edges, holes kept.

Each object's mask is upsampled 2x (nearest) and traced with OpenCV
(``findContours``, two-level hierarchy: exteriors and their holes); the traced
rings pass through the centres of the boundary sub-pixels, a quarter pixel
inside the pixel edges, so a mitred buffer of +0.25 px puts every axis-aligned
edge exactly on the pixel edges (pixel ``i`` covers ``[i, i+1)``). Areas then
match pixel counts to within a few hundredths of a pixel per corner, unlike
outlines through pixel centres, which shrink a 60-px nucleus by ~20 %; the 2x
trace also keeps one-pixel-wide parts as proper polygons. Outlines are
simplified (Douglas-Peucker, topology preserved) in coordinates relative to
the object's bounding box, so the same object gives the same polygon wherever
it sits in an array.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import shapely
from scipy import ndimage as ndi
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry


def _ring(contour: np.ndarray) -> np.ndarray:
    """OpenCV contour on the 2x grid -> sub-pixel-centre coordinates in pixels."""
    return (contour[:, 0, :].astype(np.float64) + 0.5) / 2.0


def _trace(mask: np.ndarray) -> BaseGeometry | None:
    """Rings through boundary sub-pixel centres (a quarter pixel inside the edges)."""
    up = cv2.resize(mask.astype(np.uint8), None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    contours, hierarchy = cv2.findContours(up, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    links = hierarchy[0]
    polys = []
    for i, (_, _, child, parent) in enumerate(links):
        if parent >= 0:
            continue
        holes = []
        while child >= 0:
            holes.append(_ring(contours[child]))
            child = links[child][0]
        polys.append(Polygon(_ring(contours[i]), holes))
    return polys[0] if len(polys) == 1 else MultiPolygon(polys)


def _finish(traced: np.ndarray, simplify: float) -> np.ndarray:
    """Vectorised: move rings onto pixel edges, repair, simplify keeping the area."""
    out = shapely.buffer(traced, 0.25, join_style="mitre")
    if simplify > 0:
        exact = shapely.area(out)
        out = shapely.simplify(out, simplify, preserve_topology=True)
        # Douglas-Peucker keeps a staircase's outer corners, which grows a small convex
        # object (a 5 px-radius nucleus by 4 %); moving the outline in by the area
        # gained over the perimeter gives the pixel count back.
        grown = (shapely.area(out) - exact) / np.maximum(shapely.length(out), 1e-9)
        fix = np.abs(grown) > 1e-3
        if fix.any():
            out[fix] = shapely.buffer(out[fix], -grown[fix], join_style="mitre")
    bad = ~shapely.is_valid(out)
    if bad.any():
        out[bad] = shapely.make_valid(out[bad])
    return out


def mask_polygon(mask: np.ndarray, simplify: float = 0.0) -> BaseGeometry | None:
    """Polygon (or MultiPolygon) of a boolean mask, in pixel-edge coordinates.

    Returns None for an empty mask.
    """
    traced = _trace(np.asarray(mask, bool))
    if traced is None:
        return None
    return polygonal_part(_finish(np.array([traced], dtype=object), simplify)[0])


def polygonal_part(geom: BaseGeometry) -> BaseGeometry | None:
    """The polygonal parts of a geometry (stray lines/points dropped), or None."""
    if isinstance(geom, (Polygon, MultiPolygon)):
        return None if geom.is_empty else geom
    parts = [g for g in getattr(geom, "geoms", []) if isinstance(g, (Polygon, MultiPolygon))]
    polys = [p for g in parts for p in (g.geoms if isinstance(g, MultiPolygon) else [g])]
    if not polys:
        return None
    return polys[0] if len(polys) == 1 else MultiPolygon(polys)


def _contours(mask: np.ndarray) -> tuple[Sequence[np.ndarray], np.ndarray | None]:
    """OpenCV contours (two-level hierarchy) of a mask upsampled 2x (nearest)."""
    up = cv2.resize(mask.view(np.uint8), None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    return cv2.findContours(up, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)


def label_polygons(labels: np.ndarray, ids: Sequence[int] | None = None,
                   offset: tuple[float, float] = (0.0, 0.0), scale: float = 1.0,
                   simplify: float = 0.5) -> list[BaseGeometry | None]:
    """Polygons of the objects ``ids`` (default: all 1..N) of an int label map.

    Output coordinates are ``(pixel-edge coordinate + offset) * scale``, e.g.
    ``offset`` = grid position of ``labels[0, 0]`` and ``scale`` = level-0 px per
    grid px. ``simplify`` is the tolerance in grid px. An id absent from
    ``labels`` gives None.

    Only the tracing runs per object; every ring, polygon and multi-polygon is
    built by one shapely array call (the same geometries as built one by one).
    """
    slices = ndi.find_objects(labels)
    if ids is None:
        ids = range(1, len(slices) + 1)
    ids = list(ids)
    rings: list[np.ndarray] = []   # contour points of every ring, shells before their holes
    ring_poly: list[int] = []      # polygon of each ring
    poly_slot: list[int] = []      # traced object of each polygon
    where: list[int] = []          # position in ``ids`` of each traced object
    origins = []
    for k, i in enumerate(ids):
        sl = slices[i - 1] if 0 < i <= len(slices) else None
        if sl is None:
            continue
        contours, hierarchy = _contours(labels[sl] == i)
        if not contours or hierarchy is None:  # no hierarchy exactly when no contours
            continue
        slot = len(where)
        where.append(k)
        origins.append((sl[1].start + offset[0], sl[0].start + offset[1]))
        if len(contours) == 1:  # one shell, no hole (most objects): no hierarchy to walk
            ring_poly.append(len(poly_slot))
            rings.append(contours[0])
            poly_slot.append(slot)
            continue
        links = hierarchy[0]
        for j, (_, _, child, parent) in enumerate(links):
            if parent >= 0:
                continue
            ring_poly.append(len(poly_slot))
            rings.append(contours[j])
            while child >= 0:
                ring_poly.append(len(poly_slot))
                rings.append(contours[child])
                child = links[child][0]
            poly_slot.append(slot)
    geoms: list[BaseGeometry | None] = [None] * len(ids)
    if not where:
        return geoms
    arr = _assemble(rings, np.asarray(ring_poly), np.asarray(poly_slot), len(where))
    arr = _finish(arr, simplify)
    counts = shapely.get_num_coordinates(arr)
    shift = np.repeat(np.asarray(origins, dtype=np.float64), counts, axis=0)
    arr = shapely.transform(arr, lambda xy: (xy + shift) * scale)
    # Non-empty polygons and multi-polygons are their own polygonal part.
    plain = np.isin(shapely.get_type_id(arr), (3, 6)) & ~shapely.is_empty(arr)
    for k, g, ok in zip(where, arr, plain):
        geoms[k] = g if ok else polygonal_part(g)
    return geoms


def _assemble(rings: list[np.ndarray], ring_poly: np.ndarray, poly_slot: np.ndarray,
              n: int) -> np.ndarray:
    """Object geometries (Polygon, or MultiPolygon for several parts) from traced rings."""
    sizes = np.fromiter((len(r) for r in rings), np.int64, len(rings))
    points = np.concatenate(rings)[:, 0, :]
    coords = (points.astype(np.float64) + 0.5) / 2.0  # as _ring does, for all rings at once
    lr = shapely.linearrings(coords, indices=np.repeat(np.arange(len(rings)), sizes))
    polys = shapely.polygons(lr, indices=ring_poly)
    parts = np.bincount(poly_slot, minlength=n)
    out = np.empty(n, dtype=object)
    single = parts[poly_slot] == 1
    out[poly_slot[single]] = polys[single]
    multi = ~single
    if multi.any():
        slots = np.flatnonzero(parts > 1)
        out[slots] = shapely.multipolygons(polys[multi], indices=np.searchsorted(
            slots, poly_slot[multi]))
    return out
