"""Vector ground truth of phantom windows: nuclei, glands, lumina, surface bands.

Nuclei, glands and lumina are the outlines of their raster pixels: the rasters are what
the images are painted from and the tiles hold, and they are larger than the polygons
they were filled from (a fifth for a nucleus, a pixel all round: see ``scene.fill``).
All are moved to level-0 pixel coordinates (a world pixel ``i`` covers ``[i, i+1)`` at
0.5 um/px; at 0.25 um/px every coordinate is doubled). Objects carry global ids, so a slide
written in blocks reports each object once.
"""

from __future__ import annotations

import uuid as uuid_mod
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np
import shapely
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from cerberus_cli.core.records import ObjectRecord, make_records
from cerberus_cli.core.vocabulary import (
    GLAND_TYPES,
    LUMEN_CLASSES,
    NUCLEUS_TYPES,
    TISSUE_TYPES,
)
from cerberus_cli.synthetic.glands import Glands
from cerberus_cli.synthetic.noise import hash_u64
from cerberus_cli.synthetic.params import GLAND, SURFACE
from cerberus_cli.synthetic.scene import Labels, fill


def truth_uuid(seed: int, kind: int, ids: np.ndarray) -> list[str]:
    """Deterministic version-4 UUIDs for objects with global ids ``ids``."""
    ids = np.asarray(ids).astype(np.int64)
    hi = hash_u64(seed, 9000 + kind, ids)
    lo = hash_u64(seed, 9100 + kind, ids)
    return [str(uuid_mod.UUID(int=(int(a) << 64) | int(b), version=4)) for a, b in zip(hi, lo)]


def _to_level0(geoms: np.ndarray, scale: float) -> np.ndarray:
    """World coordinates (pixel centres at integers) to level-0 pixel coordinates."""
    return shapely.transform(geoms, lambda c: (c + 0.5) * scale)


def _polygonal(geoms: np.ndarray) -> np.ndarray:
    """Only the areal parts of clipped geometries (pixel edges on the clip line leave lines)."""
    out = geoms.copy()
    for k in np.flatnonzero(~np.isin(shapely.get_type_id(geoms), (3, 6))):
        parts = [p for p in shapely.get_parts(geoms[k]) if shapely.get_type_id(p) in (3, 6)]
        out[k] = shapely.union_all(parts) if parts else shapely.Polygon()
    return out


def raster_outlines(raster: np.ndarray, ids: np.ndarray, polys: np.ndarray,
                    x0: int, y0: int) -> np.ndarray:
    """Outlines (world coordinates) of the pixels of instance ``ids`` in ``raster``.

    ``raster`` is a label window whose pixel ``(r, c)`` is centred on world ``(x0 + c,
    y0 + r)``; ``polys`` (K, lobes, V, 2) the polygons each instance was filled from,
    which bound where to look. Each outline follows pixel edges, so its area is the
    instance's pixel count: the truth is what the labels hold and the image shows.
    Instances without a pixel in the window give empty geometries.
    """
    out = np.empty(len(ids), dtype=object)
    h, w = raster.shape
    for k, i in enumerate(ids):
        pts = polys[k].reshape(-1, 2)
        c0 = max(int(np.floor(pts[:, 0].min())) - x0 - 2, 0)
        r0 = max(int(np.floor(pts[:, 1].min())) - y0 - 2, 0)
        c1 = min(int(np.ceil(pts[:, 0].max())) - x0 + 3, w)
        r1 = min(int(np.ceil(pts[:, 1].max())) - y0 + 3, h)
        inside = raster[r0:r1, c0:c1] == i
        rows, starts, ends = [], [], []
        for r in np.flatnonzero(inside.any(axis=1)):
            edges = np.diff(np.concatenate([[0], inside[r].view(np.int8), [0]]))
            b, e = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
            rows += [r] * len(b)
            starts.append(b)
            ends.append(e)
        if not rows:
            out[k] = shapely.Polygon()
            continue
        ys = np.asarray(rows, float) + r0 + y0
        xs0 = np.concatenate(starts) + c0 + x0
        xs1 = np.concatenate(ends) + c0 + x0
        runs = shapely.box(xs0 - 0.5, ys - 0.5, xs1 - 0.5, ys + 0.5)
        out[k] = shapely.union_all(runs)
    return out


def _gland_pixels(glands: Glands, k: int, over: np.ndarray,
                  outline: Callable[[int], np.ndarray]) -> BaseGeometry:
    """Outline (world coordinates) of gland ``k``'s raster pixels, as the label maps hold them.

    ``outline`` gives a gland's (or its lumen's) polygon; ``over`` are the glands of
    higher priority that may overlap it and are filled after it, as in
    :meth:`PhantomWorld.labels`. The gland is filled on its own small canvas: cv2 fills
    are translation-invariant, so its pixels are those of any window holding it whole.
    """
    pts = outline(k)
    x0 = int(np.floor(pts[:, 0].min())) - 3
    y0 = int(np.floor(pts[:, 1].min())) - 3
    w = int(np.ceil(pts[:, 0].max())) - x0 + 4
    h = int(np.ceil(pts[:, 1].max())) - y0 + 4
    canvas = np.zeros((h, w), np.int32)
    for j in [k, *over.tolist()]:   # ascending priority: later fills win
        fill(canvas, [outline(j)], j + 1, x0, y0)
    return raster_outlines(canvas, np.array([k + 1]), pts[None], x0, y0)[0]


@dataclass
class TruthCollector:
    """Collects each object once from overlapping windows; emits records.

    Each object belongs to the one window that holds its anchor (its centre,
    clamped to the slide), so windows can be processed in any order and nothing
    about past windows needs to be remembered except the surface-band pieces.

    ``width0`` x ``height0`` is the slide in level-0 pixels; ``scale`` maps world
    pixels to level-0 pixels (1 at 0.5 um/px, 2 at 0.25 um/px). Geometries are
    clipped to the slide.
    """

    seed: int
    width0: int
    height0: int
    mpp: float
    scale: float = 1.0
    surface_parts: list = field(default_factory=list)
    counts: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.width = int(np.ceil(self.width0 / self.scale))    # world pixels
        self.height = int(np.ceil(self.height0 / self.scale))
        # The slide's extent in world coordinates (pixel centres at integers).
        self.clip = box(-0.5, -0.5, self.width0 / self.scale - 0.5, self.height0 / self.scale - 0.5)

    def _count(self, task: str, names: list[str]) -> None:
        c = self.counts.setdefault(task, {})
        for n in names:
            c[n] = c.get(n, 0) + 1

    def collect(self, lab: Labels, x0: int, y0: int, w: int, h: int) -> list[ObjectRecord]:
        """Records of objects first seen in the window ``[x0, x0+w) x [y0, y0+h)``.

        An object belongs to the window holding its anchor (centre); ``lab`` must
        cover the window (it may be larger).
        """
        slide = self.clip
        recs: list[ObjectRecord] = []
        recs += self._nuclei(lab, x0, y0, w, h, slide)
        recs += self._glands(lab, x0, y0, w, h, slide)
        self._surface(lab, x0, y0, w, h)
        return recs

    def _owns(self, x: np.ndarray, y: np.ndarray, x0, y0, w, h) -> np.ndarray:
        """Whether the window owns anchors (x, y); anchors off the slide go to its edge."""
        ax = np.clip(x, 0, self.width - 1e-6)
        ay = np.clip(y, 0, self.height - 1e-6)
        return (ax >= x0) & (ax < x0 + w) & (ay >= y0) & (ay < y0 + h)

    def _nuclei(self, lab: Labels, x0, y0, w, h, slide) -> list[ObjectRecord]:
        n = lab.nuclei
        own = self._owns(n.x, n.y, x0, y0, w, h)
        idx = np.flatnonzero(own)
        if not len(idx):
            return []
        geoms = raster_outlines(lab.nucleus, idx + 1, n.polygons()[idx], lab.x0, lab.y0)
        geoms = _to_level0(_polygonal(shapely.intersection(geoms, slide)), self.scale)
        keep = ~shapely.is_empty(geoms)
        geoms, idx = geoms[keep], idx[keep]
        cls = n.cls[idx]
        names = [NUCLEUS_TYPES[c].name for c in cls]
        self._count("nuclei", names)
        return make_records(list(geoms), "nuclei", cls.tolist(), names, [1.0] * len(idx),
                            self.mpp, truth_uuid(self.seed, 1, n.nid[idx].view(np.int64)))

    def _glands(self, lab: Labels, x0, y0, w, h, slide) -> list[ObjectRecord]:
        g = lab.glands
        own = self._owns(g.x, g.y, x0, y0, w, h)
        idx = np.flatnonzero(own)
        if not len(idx):
            return []
        rmax = g.radii.max(axis=1)
        glands, lumina = [], []
        for k in idx:
            # Higher-priority neighbours keep the pixels where outlines overlap.
            d = np.hypot(g.x - g.x[k], g.y - g.y[k])
            over = np.flatnonzero((g.priority > g.priority[k]) & (d < rmax + rmax[k]))
            glands.append(_gland_pixels(g, int(k), over, g.outline))
            lumina.append(_gland_pixels(g, int(k), over, g.lumen_outline))
        gl_all = _polygonal(shapely.intersection(np.array(glands, dtype=object), slide))
        lu_all = _polygonal(shapely.intersection(np.array(lumina, dtype=object), slide))
        keep = ~shapely.is_empty(gl_all)
        if not keep.any():
            return []
        gl, ids = gl_all[keep], g.gid[idx][keep]
        with_lumen = keep & ~shapely.is_empty(lu_all)
        lu, lids = lu_all[with_lumen], g.gid[idx][with_lumen]
        gl_geoms = _to_level0(gl, self.scale)
        gl_uuid = truth_uuid(self.seed, 2, ids)
        name = GLAND_TYPES[GLAND].name
        self._count("gland", [name] * len(gl))
        recs = make_records(list(gl_geoms), "gland", [GLAND] * len(gl), [name] * len(gl),
                            [1.0] * len(gl), self.mpp, gl_uuid)
        if len(lu):
            parent = dict(zip(ids.tolist(), gl_uuid))
            lu_geoms = _to_level0(lu, self.scale)
            lname = LUMEN_CLASSES[1].name
            self._count("lumen", [lname] * len(lu))
            recs += make_records(list(lu_geoms), "lumen", [1] * len(lu), [lname] * len(lu),
                                 [1.0] * len(lu), self.mpp, truth_uuid(self.seed, 3, lids),
                                 [parent[i] for i in lids.tolist()])
        return recs

    def _surface(self, lab: Labels, x0, y0, w, h) -> None:
        """Keep the window's piece of surface epithelium (merged in :meth:`finish`)."""
        ox, oy = x0 - lab.x0, y0 - lab.y0
        # One extra pixel right and down so pieces of neighbouring windows overlap.
        sub = (lab.gland_kind[oy:oy + h + 1, ox:ox + w + 1] == 3).astype(np.uint8)
        sub[:, min(w + 1, self.width - x0):] = 0
        sub[min(h + 1, self.height - y0):, :] = 0
        if sub.any():
            self.surface_parts.extend(mask_polygons(sub, x0, y0))

    def finish(self) -> list[ObjectRecord]:
        """Surface-epithelium records: the window pieces merged into whole bands."""
        if not self.surface_parts:
            return []
        merged = shapely.intersection(shapely.union_all(self.surface_parts), self.clip)
        parts = list(getattr(merged, "geoms", [merged]))
        parts = [p for p in parts if p.area > 4]
        parts.sort(key=lambda p: (round(p.bounds[1], 3), round(p.bounds[0], 3)))
        geoms = _to_level0(np.array(parts, dtype=object), self.scale)
        name = GLAND_TYPES[SURFACE].name
        self._count("gland", [name] * len(parts))
        keys = np.array([int(p.bounds[1]) * 1_000_003 + int(p.bounds[0]) for p in parts])
        return make_records(list(geoms), "gland", [SURFACE] * len(parts), [name] * len(parts),
                            [1.0] * len(parts), self.mpp, truth_uuid(self.seed, 4, keys))


def mask_polygons(mask: np.ndarray, x0: float, y0: float) -> list[BaseGeometry]:
    """Outlines (pixel edges, world coordinates minus 0.5) of a binary mask's parts."""
    contours, hier = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    out = []
    if hier is None:
        return out
    for i, c in enumerate(contours):
        if hier[0][i][3] != -1:  # holes are handled with their outer contour
            continue
        shell = c[:, 0, :].astype(np.float64) + (x0, y0)
        holes = []
        j = hier[0][i][2]
        while j != -1:
            hole = contours[j][:, 0, :].astype(np.float64) + (x0, y0)
            if len(hole) >= 3:
                holes.append(hole)
            j = hier[0][j][0]
        if len(shell) < 3:
            poly = shapely.Point(shell[0]).buffer(0.5, cap_style="square")
        else:
            poly = shapely.Polygon(shell, holes).buffer(0.5, join_style="mitre")
        if not poly.is_empty:
            out.append(poly)
    return out


def tissue_records(tissue_map: np.ndarray, cell: float, scale: float, mpp: float,
                   seed: int, width0: int, height0: int) -> list[ObjectRecord]:
    """Tissue-type regions (one record per connected region) from a coarse class map.

    ``cell`` is the map's pixel size in world pixels; regions are clipped to the
    ``width0`` x ``height0`` level-0 slide.
    """
    recs: list[ObjectRecord] = []
    for cls in range(1, len(TISSUE_TYPES)):
        m = (tissue_map == cls).astype(np.uint8)
        if not m.any():
            continue
        polys = mask_polygons(m, 0, 0)
        if not polys:
            continue
        # Mask polygons have pixel-edge corners at -0.5; map pixels span cell world px.
        geoms = shapely.transform(np.array(polys, dtype=object), lambda c: (c + 0.5) * cell * scale)
        geoms = shapely.intersection(geoms, box(0, 0, width0, height0))
        keep = ~shapely.is_empty(geoms)
        geoms, polys = geoms[keep], [p for p, k in zip(polys, keep) if k]
        keys = np.array([cls * 1_000_000_007 + int(p.bounds[1]) * 100_003 + int(p.bounds[0]) for p in polys])
        name = TISSUE_TYPES[cls].name
        recs += make_records(list(geoms), "tissue", [cls] * len(polys), [name] * len(polys),
                             [1.0] * len(polys), mpp, truth_uuid(seed, 5, keys))
    return recs
