"""Coarse tissue fields: which tissue class is where, and where the glass is.

The fields live on a global lattice every :data:`COARSE` pixels and are
interpolated bilinearly, both at single points (to place objects) and at every
pixel of a block (to paint), with the same formula, so objects and pixels agree.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from cerberus_cli.synthetic.noise import value_noise_grid
from cerberus_cli.synthetic.params import BACK, NORM, REGION_CLASSES, SceneParams

COARSE = 16
#: Signed distances to the tissue edge are exact up to this many pixels, then clipped.
SDF_CLIP = 400.0


class CoarseFields:
    """Region scores and signed distance to glass over a window plus margin.

    ``sdf`` is positive inside tissue (pixels to the nearest glass), negative on
    glass. Values are exact (independent of the window) within ``margin - SDF_CLIP``
    of the window.
    """

    def __init__(self, seed: int, params: SceneParams, x0: int, y0: int, w: int, h: int,
                 margin: int) -> None:
        c = COARSE
        self.i0 = math.floor((x0 - margin) / c)
        self.j0 = math.floor((y0 - margin) / c)
        i1 = math.ceil((x0 + w + margin) / c) + 1
        j1 = math.ceil((y0 + h + margin) / c) + 1
        xs = np.arange(self.i0, i1 + 1) * float(c)
        ys = np.arange(self.j0, j1 + 1) * float(c)
        scores = []
        for k, cls in enumerate(REGION_CLASSES):
            s = value_noise_grid(seed, 10 + cls, xs, ys, params.region_scale, octaves=3)
            s = s + params.region_weights[k]
            if params.force_class == cls:
                s = s + 6.0
            scores.append(s.astype(np.float32))
        self.scores = np.stack(scores)
        # The tissue mask is decided on a grid twice as fine as the lattice, so the
        # interpolated distances are accurate to a few pixels and the edge is smooth.
        fc = c // 2
        fxs = np.arange(self.i0 * 2, i1 * 2 + 1) * float(fc)
        fys = np.arange(self.j0 * 2, j1 * 2 + 1) * float(fc)
        t = value_noise_grid(seed, 3, fxs, fys, params.tissue_scale, octaves=5) + params.tissue_bias
        if params.force_class is not None:
            t = np.full_like(t, -1.0 if params.force_class == BACK else 1.0)
        mask = t > 0
        if mask.all():
            sdf = np.full(mask.shape, SDF_CLIP)
        elif not mask.any():
            sdf = np.full(mask.shape, -SDF_CLIP)
        else:
            inside = ndimage.distance_transform_edt(mask)
            outside = ndimage.distance_transform_edt(~mask)
            sdf = np.where(mask, inside - 0.5, -(outside - 0.5)) * fc
        self.sdf = np.clip(sdf[::2, ::2], -SDF_CLIP, SDF_CLIP).astype(np.float32)
        # A smooth field for the orientation of fibres (stroma, muscle), in radians.
        self.orient = (value_noise_grid(seed, 5, xs, ys, 900.0, octaves=2) * np.pi).astype(np.float32)

    # --- points ---------------------------------------------------------------------
    def _sample(self, grid: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        gx = np.asarray(x, dtype=np.float64) / COARSE - self.i0
        gy = np.asarray(y, dtype=np.float64) / COARSE - self.j0
        ix = np.clip(np.floor(gx).astype(np.int64), 0, grid.shape[-1] - 2)
        iy = np.clip(np.floor(gy).astype(np.int64), 0, grid.shape[-2] - 2)
        fx = (gx - ix).astype(np.float32)
        fy = (gy - iy).astype(np.float32)
        top = grid[..., iy, ix] * (1 - fx) + grid[..., iy, ix + 1] * fx
        bot = grid[..., iy + 1, ix] * (1 - fx) + grid[..., iy + 1, ix + 1] * fx
        return top * (1 - fy) + bot * fy

    def region_at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Tissue class (1..8) of the region at points, ignoring glass."""
        s = self._sample(self.scores, x, y)
        return np.asarray(REGION_CLASSES, dtype=np.uint8)[np.argmax(s, axis=0)]

    def sdf_at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Signed distance to the tissue edge at points (pixels, positive = tissue)."""
        return self._sample(self.sdf, x, y)

    def orient_at(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return self._sample(self.orient, x, y)

    def sdf_gradient_at(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Unit vector pointing into the tissue (away from glass) at points."""
        e = 2.0
        gx = self.sdf_at(x + e, y) - self.sdf_at(x - e, y)
        gy = self.sdf_at(x, y + e) - self.sdf_at(x, y - e)
        n = np.hypot(gx, gy) + 1e-6
        return gx / n, gy / n

    # --- pixels ---------------------------------------------------------------------
    def _upsample(self, grid: np.ndarray, x0: int, y0: int, w: int, h: int) -> np.ndarray:
        """Bilinear values at every pixel centre-less position (x, y) = integers."""
        gx = (np.arange(x0, x0 + w, dtype=np.float64)) / COARSE - self.i0
        gy = (np.arange(y0, y0 + h, dtype=np.float64)) / COARSE - self.j0
        ix = np.floor(gx).astype(np.int64)
        iy = np.floor(gy).astype(np.int64)
        fx = (gx - ix).astype(np.float32)
        fy = (gy - iy).astype(np.float32)
        rows = slice(iy[0], iy[-1] + 2)
        g = grid[..., rows, :]
        iy = iy - iy[0]
        # Interpolate along x for the needed lattice rows, then along y.
        gxr = g[..., :, ix] * (1 - fx) + g[..., :, ix + 1] * fx
        return gxr[..., iy, :] * (1 - fy)[:, None] + gxr[..., iy + 1, :] * fy[:, None]

    def region_map(self, x0: int, y0: int, w: int, h: int) -> np.ndarray:
        """Region class (1..8) of every pixel, ignoring glass (uint8 HxW).

        Equal to :meth:`region_at` at every pixel. Where the four lattice nodes of a
        cell agree on the winner, every convex mix of their scores does too, so only
        the pixels of cells on a region border need the interpolated scores.
        """
        best = np.argmax(self.scores, axis=0)
        agree = ((best[:-1, :-1] == best[1:, :-1]) & (best[:-1, :-1] == best[:-1, 1:])
                 & (best[:-1, :-1] == best[1:, 1:]))
        gx = np.arange(x0, x0 + w, dtype=np.float64) / COARSE - self.i0
        gy = np.arange(y0, y0 + h, dtype=np.float64) / COARSE - self.j0
        ix = np.floor(gx).astype(np.int64)
        iy = np.floor(gy).astype(np.int64)
        out = best[np.ix_(iy, ix)]
        py, px = np.nonzero(~agree[np.ix_(iy, ix)])
        if len(py):
            xs = np.arange(x0, x0 + w, dtype=np.float64)[px]
            ys = np.arange(y0, y0 + h, dtype=np.float64)[py]
            out[py, px] = np.argmax(self._sample(self.scores, xs, ys), axis=0)
        return np.asarray(REGION_CLASSES, dtype=np.uint8)[out]

    def sdf_map(self, x0: int, y0: int, w: int, h: int) -> np.ndarray:
        return self._upsample(self.sdf, x0, y0, w, h)


def surface_band(region: np.ndarray, sdf: np.ndarray, width: float) -> np.ndarray:
    """Pixels of surface epithelium: normal mucosa within ``width`` of the glass."""
    return (sdf > 0) & (sdf < width) & (region == NORM)
