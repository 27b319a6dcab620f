"""Tissue detection on a low-resolution thumbnail.

Method (on an RGB thumbnail, default 8 um/px):

1. **Saturation.** Stained tissue is coloured; glass, dust and black ink are
   grey. The HSV saturation ``(max - min) / max`` is thresholded with Otsu's
   method, the threshold clamped to ``[0.05, 0.25]`` so that slides that are
   almost all glass or almost all tissue (where Otsu has no second mode to
   find) still get a sensible cut.
2. **Optical density.** ``OD = -log10(I / 255)`` per channel. Pixels with a
   mean OD below 0.05 are glass even if slightly tinted, and opaque pixels
   whose brightest channel is below 40 (dust, black ink, slide edges) are
   removed whatever their saturation.
3. **Pen marks.** H&E absorbs green most strongly (for both haematoxylin and
   eosin the green OD is the largest). Blue and green marker ink absorbs red
   (and blue) more than green: pixels whose red or blue OD exceeds 1.25 x the
   green OD are pen, and are removed together with a 1-pixel rim.
4. **Morphology** (sizes in micrometres, converted to mask pixels): closing
   (radius 16 um) to join fragments, holes smaller than 0.05 mm^2 filled
   (lumina, fat cells), objects smaller than 0.01 mm^2 removed (specks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from skimage.filters import threshold_otsu

from cerberus_cli.slides.scale import thumbnail
from cerberus_cli.slides.slide import Slide

_SAT_CLAMP = (0.05, 0.25)
_MIN_OD = 0.05
_OPAQUE_MAX = 40
_PEN_RATIO = 1.25
_CLOSE_RADIUS_UM = 16.0
_HOLE_AREA_UM2 = 50_000.0
_OBJECT_AREA_UM2 = 10_000.0


@dataclass
class TissueMask:
    """Where the tissue is.

    ``mask`` is a bool (H, W) array; one mask pixel is ``mpp`` um wide, so pixel
    (i, j) covers level-0 pixels from ``(j, i) * mpp / slide.mpp``.
    """

    mask: np.ndarray
    mpp: float
    source: str = "detected"

    @property
    def fraction(self) -> float:
        """Fraction of the mask's pixels that are tissue."""
        return float(self.mask.mean()) if self.mask.size else 0.0

    @property
    def shape(self) -> tuple[int, int]:
        return self.mask.shape  # type: ignore[return-value]


def tissue_from_rgb(rgb: np.ndarray, mpp: float) -> np.ndarray:
    """Boolean tissue mask of an RGB uint8 image whose pixels are ``mpp`` um wide."""
    img = rgb.astype(np.float32)
    mx = img.max(axis=2)
    mn = img.min(axis=2)
    sat = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1.0), 0.0)
    od = -np.log10(np.maximum(img, 1.0) / 255.0)
    od_mean = od.mean(axis=2)
    candidate = od_mean > _MIN_OD
    if candidate.sum() > 16:
        values = sat[candidate]
        thr = float(threshold_otsu(values)) if values.min() < values.max() else _SAT_CLAMP[0]
    else:
        thr = _SAT_CLAMP[0]
    thr = min(max(thr, _SAT_CLAMP[0]), _SAT_CLAMP[1])
    tissue = candidate & (sat > thr) & (mx >= _OPAQUE_MAX)
    od_r, od_g, od_b = od[..., 0], od[..., 1], od[..., 2]
    pen = candidate & ((od_r > _PEN_RATIO * od_g) | (od_b > _PEN_RATIO * od_g))
    if pen.any():
        pen = cv2.dilate(pen.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        tissue &= ~pen
    radius = max(1, round(_CLOSE_RADIUS_UM / mpp))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    # Pad before closing so tissue touching the border is not eroded by it.
    padded = cv2.copyMakeBorder(tissue.astype(np.uint8), radius, radius, radius, radius,
                                cv2.BORDER_REPLICATE)
    closed = cv2.morphologyEx(padded, cv2.MORPH_CLOSE, kernel)[radius:-radius, radius:-radius]
    px_area = mpp * mpp
    mask = closed.astype(bool)
    holes = _small_components(~mask, math.ceil(_HOLE_AREA_UM2 / px_area), keep_border=True)
    mask |= holes
    mask &= ~_small_components(mask, math.ceil(_OBJECT_AREA_UM2 / px_area), keep_border=False)
    return mask


def _small_components(binary: np.ndarray, max_px: int, keep_border: bool) -> np.ndarray:
    """Pixels of 8-connected components of ``binary`` with fewer than ``max_px`` pixels.

    With ``keep_border`` components touching the image edge are never small
    (glass around the tissue is not a hole).
    """
    n, labels, stats, _ = cv2.connectedComponentsWithStats(binary.astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros_like(binary, dtype=bool)
    small = stats[:, cv2.CC_STAT_AREA] < max_px
    small[0] = False  # label 0 is the complement
    if keep_border:
        h, w = binary.shape
        x, y = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
        bw, bh = stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT]
        small &= (x > 0) & (y > 0) & (x + bw < w) & (y + bh < h)
    return small[labels]


def detect_tissue(slide: Slide, mpp: float = 8.0) -> TissueMask:
    """Detect tissue on a thumbnail of ``slide`` at ``mpp`` um/px (see module docs)."""
    mpp = max(mpp, slide.mpp)  # no finer than the slide itself
    rgb = thumbnail(slide, mpp)
    return TissueMask(tissue_from_rgb(rgb, mpp), mpp, "detected")
