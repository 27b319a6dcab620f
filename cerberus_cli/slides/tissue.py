"""Tissue detection on a low-resolution thumbnail (method and figures: docs/tissue.md).

Default method ``od`` (on an RGB thumbnail, default 4 um/px):

1. **Glass colour.** The brightest near-grey pixels are glass; their median colour
   is the reference white (a default white when no glass is seen).
2. **Stain density.** Optical density above the glass, ``OD = log10(glass / I)``
   per channel, smoothed over ~6 um. Haematoxylin and eosin both absorb green
   most, while grey things (dust, bubbles, glass edges, black ink) absorb all
   channels alike and blue or green ink absorbs red most. The stain evidence
   ``min(OD_G - (OD_R + OD_B) / 2, 1.2 OD_G - max(OD_R, OD_B)) - 0.05 max(OD - 0.3, 0)``
   (``OD`` the total density)
   is therefore positive on tissue, however pale, and zero or negative on the
   glass and on everything grey, near-black or inked.
3. **Cut.** Evidence above ``threshold`` (default: from the glass's own noise,
   within 0.005-0.02) is tissue; strongly inked pixels are removed with a rim.
4. **Morphology** (sizes in micrometres, converted to mask pixels): closing
   (radius 12 um) joins the walls of fat cells and strands of loose stroma,
   holes smaller than 0.05 mm^2 are filled (lumina, fat cells), objects
   smaller than 0.01 mm^2 removed (specks).

Method ``otsu`` is the older cut of HSV saturation with Otsu's threshold (misses
pale tissue); ``all`` skips detection and marks the whole slide as tissue.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from skimage.filters import threshold_otsu

from cerberus_cli.slides.scale import scaled_size, thumbnail
from cerberus_cli.slides.slide import Slide
from cerberus_cli.slides.tissue_options import TissueOptions

# --- od method ---------------------------------------------------------------------------
#: Glass candidates: every channel at least this bright, channels within this spread.
_GLASS_MIN, _GLASS_SPREAD = 180.0, 25.0
#: Percentile (of green among the candidates) above which a candidate is glass.
_GLASS_TOP = 97.0
#: Reference white when a thumbnail shows no glass (all tissue, a crop).
_DEFAULT_WHITE = np.array([242.0, 242.0, 242.0], np.float32)
#: Stain must absorb green at least this much more than red and blue (see stain_evidence).
_GREEN_EXCESS = 1.2
#: Share of the total density above ``_DARK_FROM`` subtracted from the evidence.
_DARK_WEIGHT, _DARK_FROM = 0.05, 0.3
#: Smoothing of the densities (um): averages stain over gaps of loose tissue.
_SMOOTH_UM = 4.0
#: Automatic cut: this many robust standard deviations of the glass, within bounds.
_NOISE_K, _OD_CUT_RANGE = 12.0, (0.005, 0.02)
#: Ink: total density above this whose red or blue density exceeds the green one.
_INK_OD, _INK_RATIO = 0.15, 1.1

# --- otsu method -------------------------------------------------------------------------
_SAT_CLAMP = (0.05, 0.25)
_MIN_OD = 0.05
_OPAQUE_MAX = 40
_PEN_RATIO = 1.25

# --- shared morphology -------------------------------------------------------------------
_CLOSE_RADIUS_UM = 12.0
_HOLE_AREA_UM2 = 50_000.0
_OBJECT_AREA_UM2 = 1_500.0

#: Detected tissue fractions outside this range get a warning on the mask.
PLAUSIBLE_FRACTION = (0.005, 0.95)


@dataclass
class TissueMask:
    """Where the tissue is.

    ``mask`` is a bool (H, W) array; one mask pixel is ``mpp`` um wide, so pixel
    (i, j) covers level-0 pixels from ``(j, i) * mpp / slide.mpp``. ``method`` and
    ``threshold`` say how it was found (the cut actually used; None for masks
    read from a file); ``warning`` is a one-line note when the result looks
    implausible (almost no tissue, no glass at all), else None.
    """

    mask: np.ndarray
    mpp: float
    source: str = "detected"
    method: str | None = None
    threshold: float | None = None
    warning: str | None = None

    @property
    def fraction(self) -> float:
        """Fraction of the mask's pixels that are tissue."""
        return float(self.mask.mean()) if self.mask.size else 0.0

    @property
    def shape(self) -> tuple[int, int]:
        return self.mask.shape  # type: ignore[return-value]


@dataclass(frozen=True)
class Detection:
    """A detected mask with the cut used and whether glass was seen."""

    mask: np.ndarray
    threshold: float
    glass_seen: bool


def glass_colour(rgb: np.ndarray) -> tuple[np.ndarray, bool]:
    """Median colour (float32 RGB) of the brightest near-grey pixels, and whether any were seen.

    Only the candidates brightest in green (the channel both stains absorb most)
    are used: on a slide mostly covered by tissue, fat and pale tissue outnumber
    the glass among near-grey pixels, but are never greener than it.
    """
    img = rgb.astype(np.float32)
    mx, mn = img.max(axis=2), img.min(axis=2)
    cand = (mn > _GLASS_MIN) & (mx - mn < _GLASS_SPREAD)
    if cand.sum() < max(16, 0.002 * cand.size):
        return _DEFAULT_WHITE.copy(), False
    green = img[..., 1]
    sel = cand & (green >= np.percentile(green[cand], _GLASS_TOP))
    return np.median(img[sel], axis=0).astype(np.float32), True


def stain_evidence(rgb: np.ndarray, mpp: float, glass: np.ndarray,
                   smooth: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Stain evidence (float32 HxW, log10 OD units) and the inked pixels (bool HxW).

    ``glass`` is the reference white of :func:`glass_colour`; ``smooth`` averages
    the densities over ~4 um first.
    """
    img = np.maximum(rgb.astype(np.float32), 1.0)
    od = np.maximum(np.log10(glass[None, None, :] / img), 0.0)
    sigma = _SMOOTH_UM / mpp
    if smooth and sigma >= 0.3:
        od = cv2.GaussianBlur(od, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
    r, g, b = od[..., 0], od[..., 1], od[..., 2]
    side = np.maximum(r, b)
    # The second term keeps blue ink (red density far above green) out.
    # The last term keeps near-black things (marker, dense dust) out: a faint tint
    # of a dark grey is not stain.
    dark = _DARK_WEIGHT * np.maximum(r + g + b - _DARK_FROM, 0.0)
    evidence = np.minimum(g - 0.5 * (r + b), _GREEN_EXCESS * g - side) - dark
    ink = (r + g + b > _INK_OD) & (np.maximum(r, b) > _INK_RATIO * g)
    return evidence, ink


def _trim_halo(mask: np.ndarray, raw: np.ndarray, cut: float) -> np.ndarray:
    """Drop boundary pixels whose own (unsmoothed) evidence is below the cut.

    Smoothing spreads tissue's stain onto the glass next to it, so a low cut
    puts the edge a pixel or so outside the tissue; those pixels are glass.
    """
    inner = cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8),
                      borderType=cv2.BORDER_REPLICATE) > 0
    return mask & ~(~inner & (raw < cut))


def detect_od(rgb: np.ndarray, mpp: float, threshold: float | None = None) -> Detection:
    """Tissue by stain optical density above the glass (see module docs)."""
    glass, seen = glass_colour(rgb)
    evidence, ink = stain_evidence(rgb, mpp, glass)
    if threshold is None:
        threshold = _auto_cut(rgb, evidence, glass) if seen else _OD_CUT_RANGE[0]
    tissue = evidence > threshold
    tissue = _trim_halo(tissue, stain_evidence(rgb, mpp, glass, smooth=False)[0], threshold)
    mask = _clean(tissue, mpp)
    if ink.any():
        # Ink is never tissue, even where closing bridged it; a rim goes with it.
        rim = max(1, round(4.0 / mpp))
        ink = cv2.dilate(ink.astype(np.uint8), np.ones((2 * rim + 1,) * 2, np.uint8)) > 0
        mask &= ~ink
        mask &= ~_small_components(mask, math.ceil(_OBJECT_AREA_UM2 / (mpp * mpp)), keep_border=False)
    return Detection(mask, float(threshold), seen)


def _auto_cut(rgb: np.ndarray, evidence: np.ndarray, glass: np.ndarray) -> float:
    """Cut from the glass's noise: ``_NOISE_K`` standard deviations, within bounds.

    The glass's evidence scatters around zero; fat and pale tissue, which look
    like glass, only add evidence above it. So the spread is read off the lower
    tail alone: the 2nd percentile of a normal lies 2.05 standard deviations
    below its mean.
    """
    img = rgb.astype(np.float32)
    near = np.abs(img - glass[None, None, :]).max(axis=2) < 12
    values = evidence[near] if near.sum() >= 64 else evidence.ravel()
    sd = max(0.0, -float(np.percentile(values, 2.0))) / 2.05
    low, high = _OD_CUT_RANGE
    return float(min(max(_NOISE_K * sd, low), high))


def detect_otsu(rgb: np.ndarray, mpp: float, threshold: float | None = None) -> Detection:
    """Tissue by an Otsu cut of saturation (the older method; misses pale tissue)."""
    img = rgb.astype(np.float32)
    mx = img.max(axis=2)
    mn = img.min(axis=2)
    sat = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1.0), 0.0)
    od = -np.log10(np.maximum(img, 1.0) / 255.0)
    candidate = od.mean(axis=2) > _MIN_OD
    if threshold is None:
        if candidate.sum() > 16:
            values = sat[candidate]
            thr = float(threshold_otsu(values)) if values.min() < values.max() else _SAT_CLAMP[0]
        else:
            thr = _SAT_CLAMP[0]
        threshold = min(max(thr, _SAT_CLAMP[0]), _SAT_CLAMP[1])
    tissue = candidate & (sat > threshold) & (mx >= _OPAQUE_MAX)
    od_r, od_g, od_b = od[..., 0], od[..., 1], od[..., 2]
    pen = candidate & ((od_r > _PEN_RATIO * od_g) | (od_b > _PEN_RATIO * od_g))
    if pen.any():
        pen = cv2.dilate(pen.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        tissue &= ~pen
    return Detection(_clean(tissue, mpp), float(threshold), bool((~candidate).any()))


def _clean(tissue: np.ndarray, mpp: float) -> np.ndarray:
    """Closing, small holes filled, specks removed (sizes in um, see module docs)."""
    radius = max(1, round(_CLOSE_RADIUS_UM / mpp))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    # Pad before closing so tissue touching the border is not eroded by it.
    padded = cv2.copyMakeBorder(tissue.astype(np.uint8), radius, radius, radius, radius,
                                cv2.BORDER_REPLICATE)
    closed = cv2.morphologyEx(padded, cv2.MORPH_CLOSE, kernel)[radius:-radius, radius:-radius]
    px_area = mpp * mpp
    mask = closed.astype(bool)
    mask |= _small_components(~mask, math.ceil(_HOLE_AREA_UM2 / px_area), keep_border=True)
    mask &= ~_small_components(mask, math.ceil(_OBJECT_AREA_UM2 / px_area), keep_border=False)
    return mask


def tissue_from_rgb(rgb: np.ndarray, mpp: float, method: str = "od",
                    threshold: float | None = None) -> np.ndarray:
    """Boolean tissue mask of an RGB uint8 image whose pixels are ``mpp`` um wide."""
    if method == "all":
        return np.ones(rgb.shape[:2], bool)
    detect = detect_od if method == "od" else detect_otsu
    return detect(rgb, mpp, threshold).mask


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


def plausibility_warning(fraction: float, glass_seen: bool) -> str | None:
    """A one-line note when a detected tissue fraction is implausible, else None."""
    low, high = PLAUSIBLE_FRACTION
    if fraction < low:
        return (f"only {100 * fraction:.1f}% of the slide was detected as tissue: blank glass, "
                "or tissue paler than the cut (try a lower --tissue-threshold or --mask)")
    if not glass_seen:
        return ("no glass seen on the thumbnail (a crop or a slide filled with tissue?): "
                "the stain was measured against a default white")
    if fraction > high:
        return (f"{100 * fraction:.1f}% of the slide was detected as tissue: a crop, or a "
                "tinted background mistaken for tissue (try a higher --tissue-threshold)")
    return None


def detect_tissue(slide: Slide, mpp: float | None = None,
                  options: TissueOptions | None = None) -> TissueMask:
    """Detect tissue on a thumbnail of ``slide`` (see module docs).

    ``options`` chooses the method, cut and resolution; ``mpp`` (um/px of the
    thumbnail) overrides ``options.tissue_mpp``. The mask is never finer than the
    slide itself.
    """
    options = options or TissueOptions()
    mpp = max(float(mpp if mpp is not None else options.tissue_mpp), slide.mpp)
    if options.tissue_method == "all":
        w, h = scaled_size(slide, mpp)
        return TissueMask(np.ones((h, w), bool), mpp, "all", "all")
    rgb = thumbnail(slide, mpp)
    detect = detect_od if options.tissue_method == "od" else detect_otsu
    found = detect(rgb, mpp, options.tissue_threshold)
    fraction = float(found.mask.mean()) if found.mask.size else 0.0
    return TissueMask(found.mask, mpp, "detected", options.tissue_method, found.threshold,
                      plausibility_warning(fraction, found.glass_seen))
