"""Read slide regions on a grid of any pixel size (um/px): the segmentation hot path.

The target grid at ``mpp`` has pixel ``i`` covering level-0 pixels
``[i * s, (i + 1) * s)`` with ``s = mpp / slide.mpp``. A read picks the coarsest
pyramid level at or finer than the target, reads the smallest rectangle of it
that covers the request, and resizes once: ``cv2.INTER_AREA`` (exact area
averaging, so no aliasing) when shrinking, bilinear when enlarging.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from cerberus_cli.slides.slide import Slide

# A level counts as "at or finer than the target" up to this relative slack, so
# that Aperio's 4.0002x levels serve a 4x request.
_LEVEL_SLACK = 1.01
# Larger level reads are split into bands of output rows to bound memory.
_BAND_PIXELS = 32 * 1024 * 1024


def best_level(slide: Slide, downsample: float) -> int:
    """Index of the coarsest level whose downsample is at most ``downsample``."""
    best = 0
    for i, ds in enumerate(slide.level_downsamples):
        if ds <= downsample * _LEVEL_SLACK and ds >= slide.level_downsamples[best]:
            best = i
    return best


def scaled_size(slide: Slide, mpp: float) -> tuple[int, int]:
    """(width, height) of the whole slide on the ``mpp`` grid (rounded up)."""
    s = mpp / slide.mpp
    w, h = slide.dimensions
    return math.ceil(w / s - 1e-9), math.ceil(h / s - 1e-9)


def read_scaled(slide: Slide, x: int, y: int, w: int, h: int, mpp: float) -> np.ndarray:
    """RGB uint8 (h, w, 3) of the slide resampled to ``mpp`` um/px.

    ``x, y, w, h`` are in pixels of the target grid. Pixels outside the slide
    are white; tiles that cannot be decoded are white with a logged warning.
    When the level-to-target ratio is an integer (40x or 20x slides read at
    0.5 um/px) the result is exactly the area average of the covered pixels;
    otherwise the window is snapped to whole level pixels, so positions are exact
    to half a level pixel, per read (errors do not accumulate across tiles).
    """
    if mpp <= 0:
        raise ValueError(f"mpp must be positive, got {mpp}")
    s = mpp / slide.mpp
    level = best_level(slide, s)
    r = s / slide.level_downsamples[level]  # level pixels per target pixel
    lx0, lx1 = round(x * r), round((x + w) * r)
    lx1 = max(lx1, lx0 + 1)
    if (lx1 - lx0) * round(h * r) <= _BAND_PIXELS:
        return _read_band(slide, level, r, lx0, lx1, y, h, w)
    rows = max(1, int(_BAND_PIXELS / max(1, lx1 - lx0) / r))
    out = np.empty((h, w, 3), np.uint8)
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        out[r0:r1] = _read_band(slide, level, r, lx0, lx1, y + r0, r1 - r0, w)
    return out


def _read_band(slide: Slide, level: int, r: float, lx0: int, lx1: int, y: int, h: int,
               w: int) -> np.ndarray:
    ly0, ly1 = round(y * r), round((y + h) * r)
    ly1 = max(ly1, ly0 + 1)
    region = slide.read_level(level, lx0, ly0, lx1 - lx0, ly1 - ly0)
    if region.shape[:2] == (h, w):
        return region
    interp = cv2.INTER_AREA if r > 1 else cv2.INTER_LINEAR
    return cv2.resize(region, (w, h), interpolation=interp)


def thumbnail(slide: Slide, mpp: float) -> np.ndarray:
    """The whole slide as RGB uint8 at ``mpp`` um/px, read from the coarsest suitable level."""
    w, h = scaled_size(slide, mpp)
    return read_scaled(slide, 0, 0, w, h, mpp)
