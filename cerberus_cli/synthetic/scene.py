"""The label side of a phantom window: objects first, then their rasters.

:class:`PhantomWorld` is an infinite, seeded stretch of tissue. ``labels(x0, y0, w, h)``
returns every label layer of a window plus the objects behind them; the same world
gives identical objects to overlapping windows, which is what lets a slide be
rendered block by block.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from cerberus_cli.synthetic import nuclei as nuclei_mod
from cerberus_cli.synthetic.fields import SDF_CLIP, CoarseFields, surface_band
from cerberus_cli.synthetic.glands import (
    MAX_RADIUS,
    Glands,
    place_glands,
)
from cerberus_cli.synthetic.glands import (
    ROUNDS as GLAND_ROUNDS,
)
from cerberus_cli.synthetic.nuclei import Nuclei, place_nuclei
from cerberus_cli.synthetic.params import BACK, KIND_SURFACE, TILE_SCENE, SceneParams

SHIFT = 4  # sub-pixel bits for cv2 polygon filling


@dataclass
class Labels:
    """Label layers of a window (all HxW) and the objects they were drawn from.

    Instance maps are 1-based indices into ``glands`` / ``nuclei`` (gland ids above
    ``len(glands)`` are surface-epithelium bands, in ``surface_ids`` order).
    """

    x0: int
    y0: int
    tissue: np.ndarray       # uint8 tissue class (0 = glass)
    sdf: np.ndarray          # float32 signed distance to the glass (px)
    gland: np.ndarray        # int32 gland instances (glands, then surface bands)
    gland_kind: np.ndarray   # uint8 KIND_NORMAL | KIND_TUMOUR | KIND_SURFACE
    lumen: np.ndarray        # int32, lumen of gland k has id k
    nucleus: np.ndarray      # int32 nucleus instances
    nucleus_class: np.ndarray  # uint8 1..6
    cytoplasm: np.ndarray    # uint8 nucleus class of the cell owning the cytoplasm
    glands: Glands
    nuclei: Nuclei
    fields: CoarseFields


def fill(img: np.ndarray, polys: list[np.ndarray], value: int, x0: float, y0: float) -> None:
    """Fill float polygons (global coordinates) into a window image in place.

    cv2 fills every pixel the outline touches, so a raster is larger than its polygon
    (about a fifth for a nucleus). The images are painted from these rasters and the
    bundled model learnt them, so the slide truth of nuclei, glands and lumina is traced
    from the rasters (:mod:`cerberus_cli.synthetic.truth`), not taken from the polygons.
    """
    pts = [np.round((p - (x0, y0)) * (1 << SHIFT)).astype(np.int32) for p in polys]
    cv2.fillPoly(img, pts, int(value), lineType=cv2.LINE_8, shift=SHIFT)


class PhantomWorld:
    """A seeded, unbounded phantom tissue at 0.5 um/px."""

    def __init__(self, seed: int, params: SceneParams = TILE_SCENE) -> None:
        self.seed = int(seed)
        self.params = params

    def objects_margin(self) -> float:
        """How far outside a window objects must be known to draw it exactly."""
        g = self.params.gland_scale
        glands = (GLAND_ROUNDS + 1) * 2 * MAX_RADIUS * g + 2 * MAX_RADIUS * g
        return glands + nuclei_mod.margin(self.params.nucleus_scale)

    def fields(self, x0: int, y0: int, w: int, h: int) -> CoarseFields:
        return CoarseFields(self.seed, self.params, x0, y0, w, h,
                            int(self.objects_margin() + SDF_CLIP + 64))

    def labels(self, x0: int, y0: int, w: int, h: int) -> Labels:
        """All label layers of the window ``[x0, x0+w) x [y0, y0+h)``."""
        p = self.params
        f = self.fields(x0, y0, w, h)
        m = nuclei_mod.margin(p.nucleus_scale) + 2
        glands = place_glands(self.seed, p, f, x0 - m, y0 - m, x0 + w + m, y0 + h + m)
        nuc = place_nuclei(self.seed, p, f, glands, x0, y0, x0 + w, y0 + h)

        # Rasterise with a small pad: cv2 clips polygons at image borders slightly
        # differently, and the pad keeps the window's own border rows exact.
        P = 2
        X0, Y0, W, H = x0 - P, y0 - P, w + 2 * P, h + 2 * P
        crop = (slice(P, P + h), slice(P, P + w))
        region = f.region_map(x0, y0, w, h)
        sdf = f.sdf_map(x0, y0, w, h).astype(np.float32)
        tissue = np.where(sdf > 0, region, BACK).astype(np.uint8)

        gland = np.zeros((H, W), np.int32)
        kind = np.zeros((H, W), np.uint8)
        lumen = np.zeros((H, W), np.int32)
        for k in range(len(glands)):  # ascending priority: higher glands win overlaps
            outline = glands.outline(k)
            fill(gland, [outline], k + 1, X0, Y0)
            fill(kind, [outline], int(glands.kind[k]), X0, Y0)
        for k in range(len(glands)):
            fill(lumen, [glands.lumen_outline(k)], k + 1, X0, Y0)
        gland, kind, lumen = gland[crop], kind[crop], lumen[crop]
        band = surface_band(region, sdf, p.surface_width) & (gland == 0)
        n_surf, comp = cv2.connectedComponents(band.astype(np.uint8), connectivity=8)
        n_surf -= 1
        if n_surf:
            gland = np.where(comp > 0, comp + len(glands), gland).astype(np.int32)
            kind[comp > 0] = KIND_SURFACE

        nucleus = np.zeros((H, W), np.int32)
        ncls = np.zeros((H, W), np.uint8)
        cyto = np.zeros((H, W), np.uint8)
        polys = nuc.polygons()
        t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        for c in np.flatnonzero(nuc.cyto[:, 2] > 0):
            cx, cy, a, b, th = nuc.cyto[c]
            pts = np.column_stack([cx + a * np.cos(t) * np.cos(th) - b * np.sin(t) * np.sin(th),
                                   cy + a * np.cos(t) * np.sin(th) + b * np.sin(t) * np.cos(th)])
            fill(cyto, [pts], int(nuc.cls[c]), X0, Y0)
        for i in range(len(nuc)):
            lob = [polys[i, j] for j in range(int(nuc.nlobes[i]))]
            fill(nucleus, lob, i + 1, X0, Y0)
            fill(ncls, lob, int(nuc.cls[i]), X0, Y0)
        return Labels(x0, y0, tissue, sdf,
                      gland, kind, lumen, nucleus[crop], ncls[crop], cyto[crop], glands, nuc, f)
