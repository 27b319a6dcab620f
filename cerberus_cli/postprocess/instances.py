"""Instance label maps from the inner/boundary probabilities of an instance head.

Inputs are 2-D maps of the model-resolution grid, float in 0..1 or uint8 in
0..255 (quantised probabilities). Outputs are int32 label maps (0 background,
1..N objects numbered in raster order of their first pixel).

Speed without changing a single label: uint8 maps are thresholded as integers
with a rule checked once against the float arithmetic it replaces (no float
copies of whole maps), relabelling touches only foreground pixels, and the
watershed, growth and hole filling run on the bounding box of what they can
change, which gives the same labels as the whole array. Foreground pixels are
listed from a boolean map (numpy lists the non-zero entries of a bool array
about ten times faster than those of an int32 one), and the watershed floods
with scikit-image's own flooding core on arrays padded once, its heights set
only where it reads them (the mask).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from cerberus_cli.postprocess.options import PostprocessOptions

try:  # scikit-image's flooding core, called without its whole-array copies
    from skimage.morphology._util import _offsets_to_raveled_neighbors, _validate_connectivity
    from skimage.segmentation._watershed_cy import watershed_raveled
except ImportError:  # another scikit-image layout: the public function does the same
    watershed_raveled = None

_DEFAULTS = PostprocessOptions()
_SCALE = np.float32(1.0 / 255.0)
#: ``as_probability`` of every uint8 value (float32, then float64 for heights).
_LEVELS32 = np.arange(256, dtype=np.uint8).astype(np.float32) * _SCALE
_LEVELS64 = _LEVELS32.astype(np.float64)


def as_probability(a: np.ndarray) -> np.ndarray:
    """A probability map as float32 0..1 (uint8 maps are divided by 255)."""
    a = np.asarray(a)
    if a.dtype == np.uint8:
        return a.astype(np.float32) * _SCALE
    return a.astype(np.float32, copy=False)


@functools.lru_cache(maxsize=64)
def _integer_rule(op: str, t: float) -> int | None:
    """``k`` such that ``(p(a) op p(b)) > t`` equals ``(a op b) >= k`` for all uint8 a, b.

    ``p`` is :func:`as_probability`, evaluated in float32 exactly as on whole
    maps; ``op`` is "+", "-" or "" (``p(a) > t`` alone). None when no such
    integer rule reproduces the float result for every pair of values.
    """
    ia = np.arange(256)
    if op == "":
        want, value = _LEVELS32 > t, ia
    else:
        fa, fb = _LEVELS32[:, None], _LEVELS32[None, :]
        want = (fa + fb) > t if op == "+" else (fa - fb) > t
        value = ia[:, None] + ia[None, :] if op == "+" else ia[:, None] - ia[None, :]
    k = int(value[want].min()) if want.any() else int(value.max()) + 1
    return k if np.array_equal(want, value >= k) else None


def _above(a: np.ndarray, t: float, b: np.ndarray | None = None, op: str = "") -> np.ndarray:
    """Bool map of ``(p(a) op p(b)) > t`` (or ``p(a) > t``), as the float maps give it."""
    a = np.asarray(a)
    if a.dtype == np.uint8 and (b is None or np.asarray(b).dtype == np.uint8):
        k = _integer_rule(op, float(t))
        if k is not None:
            if op == "":
                return a >= k
            assert b is not None, f"operator {op!r} combines two maps"
            if op == "+" and 0 <= k <= 255:  # a saturating sum decides exactly up to 255
                return cv2.add(a, b) >= k
            if op == "-" and 1 <= k <= 255:  # a sum clipped at 0 decides exactly from 1
                return cv2.subtract(a, b) >= k
    pa = as_probability(a)
    if op == "":
        return pa > t
    assert b is not None, f"operator {op!r} combines two maps"
    pb = as_probability(b)
    return ((pa + pb) if op == "+" else (pa - pb)) > t


def _heights(a: np.ndarray) -> np.ndarray:
    """``as_probability(a)`` as float64 (the watershed's working type)."""
    a = np.asarray(a)
    if a.dtype == np.uint8:
        return _LEVELS64[a]
    return as_probability(a).astype(np.float64)


def foreground(a: np.ndarray) -> np.ndarray:
    """Flat indices (raster order) of the non-zero entries of ``a``."""
    return np.flatnonzero(np.asarray(a).ravel() != 0)


def label_components(mask: np.ndarray, min_size: int = 0) -> tuple[np.ndarray, int]:
    """8-connected components of ``mask`` without those below ``min_size`` px.

    Returns the int32 labels (renumbered 1..N in raster order of each
    component's first pixel, which OpenCV's own numbering is not) and N.
    """
    m = np.ascontiguousarray(mask)
    m = m.view(np.uint8) if m.dtype == bool else m.astype(np.uint8)
    _, lab = cv2.connectedComponents(m, connectivity=8, ltype=cv2.CV_32S)
    lab = relabel_sequential(lab, min_size)
    return lab, int(lab.max()) if lab.size else 0


def relabel_sequential(labels: np.ndarray, min_size: int = 0) -> np.ndarray:
    """Renumber labels 1..N in raster order of first pixel, dropping small ones."""
    flat = np.ascontiguousarray(labels).ravel()
    nz = foreground(flat)  # foreground only: usually a small part of the map
    if nz.size == 0:
        return labels.astype(np.int32, copy=False)
    return _relabel_foreground(labels.shape, nz, flat[nz], min_size)


def _relabel_foreground(shape: tuple[int, ...], nz: np.ndarray, lab: np.ndarray,
                        min_size: int = 0) -> np.ndarray:
    """:func:`relabel_sequential` of a map given by its foreground (flat index, label)."""
    out = np.zeros(shape, np.int32)
    if nz.size == 0:
        return out
    n = int(lab.max())
    sizes = np.bincount(lab, minlength=n + 1)
    present = np.flatnonzero(sizes >= max(min_size, 1))
    present = present[present > 0]
    # Raster order of first appearance keeps numbering independent of the
    # labelling algorithm's internal order. Only the starts of runs of equal
    # labels can be first pixels, so the minimum runs over far fewer entries.
    starts = np.flatnonzero(np.diff(lab, prepend=lab.dtype.type(0)) != 0)
    first = np.full(n + 1, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first, lab[starts], nz[starts])
    order = present[np.argsort(first[present], kind="stable")]
    lut = np.zeros(n + 1, dtype=np.int32)
    lut[order] = np.arange(1, order.size + 1, dtype=np.int32)
    out.ravel()[nz] = lut[lab]
    return out


def _ellipse(size: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


def _bbox(mask: np.ndarray, pad: int = 0) -> tuple[slice, slice] | None:
    """Bounding box of a 2-D mask grown by ``pad`` px (clipped), or None if empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    h, w = mask.shape
    return (slice(max(0, rows[0] - pad), min(h, rows[-1] + 1 + pad)),
            slice(max(0, cols[0] - pad), min(w, cols[-1] + 1 + pad)))


def tie_breaker(ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """A fixed pseudo-random value in [0, 1) per global grid position (ys, xs).

    The watershed floods pixels of equal height in an order that depends on
    everything else in the array; a perturbation far below the map's precision
    that depends only on the global position makes the flooding order, and so
    the split between touching nuclei, the same in every chunk.
    """
    gx = xs.astype(np.uint64)
    gy = ys.astype(np.uint64)
    mixed = (gx * np.uint64(0x9E3779B1)) ^ (gy * np.uint64(0x85EBCA77))
    mixed = (mixed ^ (mixed >> np.uint64(15))) * np.uint64(0x2C1B3C6D)
    return ((mixed >> np.uint64(8)) & np.uint64(0xFFFFFF)).astype(np.float64) / float(1 << 24)


def nuclei_instances(inner: np.ndarray, boundary: np.ndarray,
                     options: PostprocessOptions = _DEFAULTS,
                     origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Nucleus labels: marker-controlled watershed of ``-inner`` inside the mask.

    ``origin`` (grid position of ``inner[0, 0]``) only seeds the tie-breaking of
    equal heights, so that chunks of one grid split touching nuclei identically.
    """
    t = options.nuclei_threshold
    mask = _above(inner, t, boundary, "+").view(np.uint8)
    mask = cv2.erode(mask, _ellipse(3)).view(bool)
    markers, n = label_components(_above(inner, t), options.nuclei_min_marker_px)
    box = _bbox(mask) if n else None
    if box is None:
        return np.zeros(np.shape(inner), np.int32)
    # The watershed floods only the mask and only from markers inside it, in
    # an order that cropping preserves: the mask's bounding box gives the same
    # labels as the whole array.
    m = mask[box]
    ys, xs = np.nonzero(m)
    y0, x0 = box[0].start, box[1].start
    heights = -_heights(np.asarray(inner)[box][ys, xs])
    heights += tie_breaker(ys + (y0 + origin[1]), xs + (x0 + origin[0])) * 1e-9
    labels = np.zeros(mask.shape, np.int32)
    # Raster order inside the box is raster order in the array: relabelling the
    # box numbers the nuclei as relabelling the whole array would.
    labels[box] = relabel_sequential(masked_watershed(heights, ys, xs, markers[box], m),
                                     options.nuclei_min_size_px)
    return labels


def masked_watershed(heights: np.ndarray, ys: np.ndarray, xs: np.ndarray,
                     markers: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``skimage.segmentation.watershed(image, markers, mask=mask)`` (connectivity 1).

    The flooding reads the image only inside ``mask``, so the image is given
    there alone: ``heights[k]`` at ``(ys[k], xs[k])``, the mask's pixels. Arrays
    are padded once and markers outside the mask dropped, as the public
    function does with several whole-array copies; the labels are the same.
    """
    h, w = mask.shape
    markers = np.asarray(markers, np.int32)
    if watershed_raveled is None:
        image = np.zeros((h, w))
        image[ys, xs] = heights
        return watershed(image, markers, mask=mask)
    shape = (h + 2, w + 2)
    image = np.zeros(shape)
    image[ys + 1, xs + 1] = heights
    inside = np.zeros(shape, np.int8)
    inside[1:-1, 1:-1] = mask
    out = np.zeros(shape, np.int32)
    np.multiply(markers, mask, out=out[1:-1, 1:-1])
    footprint, centre = _validate_connectivity(2, 1, None)
    neighbours = _offsets_to_raveled_neighbors(shape, footprint, center=centre)
    strides = np.array(image.strides, dtype=np.intp) // image.itemsize
    watershed_raveled(image.ravel(), foreground(out), neighbours, inside.ravel(), strides,
                      0, out.ravel(), False)
    return np.ascontiguousarray(out[1:-1, 1:-1])


def _grown_instances(inner: np.ndarray, boundary: np.ndarray, threshold: float,
                     min_size: int, kernel_px: int) -> np.ndarray:
    """Threshold ``inner - boundary``, drop small parts, grow back, fill holes."""
    labels, n = label_components(_above(inner, threshold, boundary, "-"), min_size)
    if n == 0:
        return labels
    # Growth reaches kernel_px // 2 px beyond the objects and hole filling stays
    # inside them: the box around the objects plus that reach holds every change.
    box = _bbox(labels > 0, kernel_px // 2 if kernel_px > 1 else 0)
    part = labels[box]
    # Dilate each object by the eroded width (the elliptical kernel of the
    # targets). Where grown objects meet, the later label (in raster order of
    # first pixel) wins: a rule that does not depend on the array's extent.
    # Float32 holds label ids exactly up to 2**24; cv2 has no int32 dilation.
    if kernel_px > 1:
        grown = cv2.dilate(part.astype(np.float32), _ellipse(kernel_px))
        part = np.where(part > 0, part, grown.astype(np.int32))
    labels[box] = fill_label_holes(part)
    return labels


def fill_label_holes(labels: np.ndarray) -> np.ndarray:
    """Fill background holes enclosed by a single object with that object's label.

    A hole of object ``i`` is a background pixel of its bounding box that the
    4-connected non-``i`` pixels do not link to the outside of the box: what
    ``scipy.ndimage.binary_fill_holes`` adds, found by one OpenCV flood fill from
    outside the box instead of scipy's erosions repeated until nothing changes.
    Objects are filled in label order (a later one wins a pixel both enclose).
    """
    out = labels.copy()
    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        part = labels[sl]
        h, w = part.shape
        if h < 3 or w < 3:  # no pixel of the box can be enclosed
            continue
        outside = np.zeros((h + 2, w + 2), np.uint8)
        outside[1:-1, 1:-1] = part == i
        cv2.floodFill(outside, None, (0, 0), 1, flags=4)
        holes = (outside[1:-1, 1:-1] == 0) & (part == 0)
        if holes.any():
            out[sl][holes] = i
    return out


def _scaled_kernel(kernel_px: int, factor: int) -> int:
    """Kernel size on a ``factor``-times coarser map, kept odd so it stays centred."""
    return max(1, kernel_px // factor) | 1


def _block_mean(a: np.ndarray, f: int) -> np.ndarray:
    h, w = a.shape
    return a.reshape(h // f, f, w // f, f).mean(axis=(1, 3), dtype=np.float32)


def _at_resolution(fn: Callable[[np.ndarray, np.ndarray], np.ndarray], inner: np.ndarray,
                   boundary: np.ndarray, factor: int) -> np.ndarray:
    """Run ``fn`` on ``factor``-times block-averaged maps and upsample its labels.

    Blocks start at array index 0 (callers keep the array origin a multiple of
    ``factor`` so blocks align across chunks); odd edges are zero-padded. At
    ``factor`` 1 the maps go through as they are (uint8 stays uint8).
    """
    if factor == 1:
        return fn(inner, boundary)
    h, w = inner.shape
    ph, pw = -h % factor, -w % factor
    pad = ((0, ph), (0, pw))
    small = fn(_block_mean(np.pad(as_probability(inner), pad), factor),
               _block_mean(np.pad(as_probability(boundary), pad), factor))
    big = np.repeat(np.repeat(small, factor, axis=0), factor, axis=1)
    return np.ascontiguousarray(big[:h, :w])


def gland_instances(inner: np.ndarray, boundary: np.ndarray,
                    options: PostprocessOptions = _DEFAULTS) -> np.ndarray:
    """Gland labels: ``(inner - boundary) > gland_threshold``, grown back, holes filled."""
    f = options.gland_downsample

    def run(i: np.ndarray, b: np.ndarray) -> np.ndarray:
        return _grown_instances(i, b, options.gland_threshold,
                                options.gland_min_size_px // (f * f),
                                _scaled_kernel(options.gland_kernel_px, f))

    return _at_resolution(run, inner, boundary, f)


def lumen_instances(inner: np.ndarray, boundary: np.ndarray, gland_labels: np.ndarray,
                    options: PostprocessOptions = _DEFAULTS) -> np.ndarray:
    """Lumen labels kept only where mostly inside a gland of ``gland_labels``."""
    f = options.gland_downsample

    def run(i: np.ndarray, b: np.ndarray) -> np.ndarray:
        return _grown_instances(i, b, options.lumen_threshold,
                                options.lumen_min_size_px // (f * f),
                                _scaled_kernel(options.lumen_kernel_px, f))

    labels = _at_resolution(run, inner, boundary, f)
    flat = labels.ravel()
    nz = foreground(flat)
    if nz.size == 0:
        return labels
    lab = flat[nz]
    n = int(lab.max())
    size = np.bincount(lab, minlength=n + 1)
    inside = np.bincount(lab, weights=(gland_labels.ravel()[nz] > 0), minlength=n + 1)
    keep = inside >= options.lumen_in_gland_share * np.maximum(size, 1)
    keep[0] = False
    sel = keep[lab]
    return _relabel_foreground(labels.shape, nz[sel], lab[sel])
