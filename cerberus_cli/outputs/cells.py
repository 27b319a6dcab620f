"""Cell boundaries grown from nuclei, limited by their neighbours (as QuPath's cell expansion).

Each nucleus grows by a distance; where two growing cells meet, the boundary runs
half way between the nuclei. As in QuPath (``CellTools.detectionsToCells``), "half
way" is a Voronoi diagram of points spaced along every nucleus outline, whose
regions are merged per nucleus: the cell is the part of the nucleus's expansion
that lies closer to its own outline than to any other. The slide is done in blocks
of nuclei, each with the neighbours that can reach it, so the cost grows with the
number of nuclei, not with the square of it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

#: Side of a block of nuclei done at once, px (level-0); neighbours come in with a halo.
BLOCK_PX = 1024.0
#: Spacing of the points along each nucleus outline, px: finer than a nucleus, coarse
#: enough that the Voronoi diagram stays small.
SPACING_PX = 2.0


def cell_boundaries(nuclei: Sequence[BaseGeometry], distance_px: float) -> list[BaseGeometry]:
    """The cell of each nucleus: the nucleus grown by ``distance_px``, cut half way to
    its neighbours; every cell contains its nucleus, cells do not overlap (beyond
    the outline spacing). ``distance_px`` 0 gives the nuclei themselves."""
    geoms = np.empty(len(nuclei), dtype=object)
    geoms[:] = list(nuclei)
    if len(geoms) == 0 or distance_px <= 0:
        return list(geoms)
    cells = np.empty(len(geoms), dtype=object)
    centres = shapely.get_coordinates(shapely.centroid(geoms))
    blocks = np.floor(centres / BLOCK_PX).astype(np.int64)
    tree = shapely.STRtree(geoms)
    # A cell reaches distance_px beyond its nucleus and is cut by nuclei within twice that.
    halo = 2 * distance_px + SPACING_PX
    order = np.lexsort((blocks[:, 0], blocks[:, 1]))
    starts = np.flatnonzero(np.r_[True, np.any(np.diff(blocks[order], axis=0) != 0, axis=1)])
    for own in np.split(order, starts[1:]):
        x0, y0, x1, y1 = shapely.total_bounds(geoms[own])
        near = np.sort(tree.query(shapely.box(x0 - halo, y0 - halo, x1 + halo, y1 + halo)))
        cells[own] = _block_cells(geoms, own, near, distance_px)
    return list(cells)


def _block_cells(geoms: np.ndarray, own: np.ndarray, near: np.ndarray,
                 distance_px: float) -> np.ndarray:
    """Cells of the nuclei ``own``, cut against every nucleus in ``near`` (which holds them)."""
    outlines = shapely.segmentize(shapely.boundary(geoms[near]), SPACING_PX)
    points, owner = shapely.get_coordinates(outlines, return_index=True)
    # Nuclei that touch share outline points; the diagram needs each point once.
    points, first = np.unique(np.round(points, 6), axis=0, return_index=True)
    owner = owner[first]
    x0, y0 = points.min(axis=0) - 2 * distance_px
    x1, y1 = points.max(axis=0) + 2 * distance_px
    regions = shapely.get_parts(shapely.voronoi_polygons(
        shapely.multipoints(points), extend_to=shapely.box(x0, y0, x1, y1), ordered=True))
    # Near-collinear outline points give GEOS a few self-touching regions: repaired once.
    regions = shapely.make_valid(regions)
    # The regions of each own nucleus's outline points, merged per nucleus in one call
    # (buffer(0) of a collection dissolves it), then cut to the grown nucleus.
    slot = np.full(len(near), -1)
    slot[np.searchsorted(near, own)] = np.arange(len(own))
    which = slot[owner]
    keep = np.flatnonzero(which >= 0)
    keep = keep[np.argsort(which[keep], kind="stable")]
    # A nucleus hidden under others (overlapping input) may own no point: its cell is itself.
    present, dense = np.unique(which[keep], return_inverse=True)
    merged = np.full(len(own), shapely.Polygon(), dtype=object)
    merged[present] = shapely.buffer(shapely.geometrycollections(regions[keep], indices=dense), 0)
    nuclei = geoms[own]
    cells = shapely.union(shapely.intersection(merged, shapely.buffer(nuclei, distance_px)),
                          nuclei)
    odd = np.flatnonzero(shapely.get_type_id(cells) != shapely.GeometryType.POLYGON)
    for k in odd:
        cells[k] = _main_part(shapely.make_valid(cells[k]), nuclei[k])
    return cells


def _main_part(cell: BaseGeometry, nucleus: BaseGeometry) -> BaseGeometry:
    """One polygon: the piece that holds the nucleus (slivers cut off by neighbours dropped)."""
    parts = [p for p in shapely.get_parts(cell) if p.geom_type == "Polygon"]
    if not parts:
        return nucleus
    return max(parts, key=lambda p: (p.intersection(nucleus).area, p.area))
