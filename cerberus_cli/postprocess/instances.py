"""Instance label maps from the inner/boundary probabilities of an instance head.

Inputs are 2-D maps of the model-resolution grid, float in 0..1 or uint8 in
0..255 (quantised probabilities). Outputs are int32 label maps (0 background,
1..N objects numbered in raster order of their first pixel).
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from cerberus_cli.postprocess.options import PostprocessOptions


def as_probability(a: np.ndarray) -> np.ndarray:
    """A probability map as float32 0..1 (uint8 maps are divided by 255)."""
    a = np.asarray(a)
    if a.dtype == np.uint8:
        return a.astype(np.float32) * np.float32(1.0 / 255.0)
    return a.astype(np.float32, copy=False)


def label_components(mask: np.ndarray, min_size: int = 0) -> tuple[np.ndarray, int]:
    """8-connected components of ``mask`` without those below ``min_size`` px.

    Returns the int32 labels (renumbered 1..N in raster order of each
    component's first pixel, which OpenCV's own numbering is not) and N.
    """
    _, lab = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8, ltype=cv2.CV_32S)
    lab = relabel_sequential(lab, min_size)
    return lab, int(lab.max())


def relabel_sequential(labels: np.ndarray, min_size: int = 0) -> np.ndarray:
    """Renumber labels 1..N in raster order of first pixel, dropping small ones."""
    flat = labels.ravel()
    n = int(flat.max()) if flat.size else 0
    if n == 0:
        return labels.astype(np.int32, copy=False)
    sizes = np.bincount(flat, minlength=n + 1)
    present = np.flatnonzero(sizes >= max(min_size, 1))
    present = present[present > 0]
    # Raster order of first appearance keeps numbering independent of the
    # labelling algorithm's internal order.
    first = np.full(n + 1, flat.size, dtype=np.int64)
    nz = np.flatnonzero(flat)
    np.minimum.at(first, flat[nz], nz)
    order = present[np.argsort(first[present], kind="stable")]
    lut = np.zeros(n + 1, dtype=np.int32)
    lut[order] = np.arange(1, order.size + 1, dtype=np.int32)
    return lut[labels]


def _ellipse(size: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


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
                     options: PostprocessOptions = PostprocessOptions(),
                     origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Nucleus labels: marker-controlled watershed of ``-inner`` inside the mask.

    ``origin`` (grid position of ``inner[0, 0]``) only seeds the tie-breaking of
    equal heights, so that chunks of one grid split touching nuclei identically.
    """
    inner = as_probability(inner)
    boundary = as_probability(boundary)
    t = options.nuclei_threshold
    mask = ((inner + boundary) > t).astype(np.uint8)
    mask = cv2.erode(mask, _ellipse(3)).astype(bool)
    markers, n = label_components(inner > t, options.nuclei_min_marker_px)
    if n == 0:
        return np.zeros(inner.shape, np.int32)
    height = -inner.astype(np.float64)
    ys, xs = np.nonzero(mask)  # the watershed only visits the mask
    height[ys, xs] += tie_breaker(ys + origin[1], xs + origin[0]) * 1e-9
    labels = watershed(height, markers, mask=mask)
    return relabel_sequential(labels.astype(np.int32, copy=False), options.nuclei_min_size_px)


def _grown_instances(inner: np.ndarray, boundary: np.ndarray, threshold: float,
                     min_size: int, kernel_px: int) -> np.ndarray:
    """Threshold ``inner - boundary``, drop small parts, grow back, fill holes."""
    seed = (as_probability(inner) - as_probability(boundary)) > threshold
    labels, n = label_components(seed, min_size)
    if n == 0:
        return labels
    # Dilate each object by the eroded width (the elliptical kernel of the
    # targets). Where grown objects meet, the later label (in raster order of
    # first pixel) wins: a rule that does not depend on the array's extent.
    # Float32 holds label ids exactly up to 2**24; cv2 has no int32 dilation.
    if kernel_px > 1:
        grown = cv2.dilate(labels.astype(np.float32), _ellipse(kernel_px))
        labels = np.where(labels > 0, labels, grown.astype(np.int32))
    return fill_label_holes(labels)


def fill_label_holes(labels: np.ndarray) -> np.ndarray:
    """Fill background holes enclosed by a single object with that object's label."""
    out = labels.copy()
    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        obj = labels[sl] == i
        holes = ndi.binary_fill_holes(obj) & (labels[sl] == 0)
        out[sl][holes] = i
    return out


def _scaled_kernel(kernel_px: int, factor: int) -> int:
    """Kernel size on a ``factor``-times coarser map, kept odd so it stays centred."""
    return max(1, kernel_px // factor) | 1


def _block_mean(a: np.ndarray, f: int) -> np.ndarray:
    h, w = a.shape
    return a.reshape(h // f, f, w // f, f).mean(axis=(1, 3), dtype=np.float32)


def _at_resolution(fn, inner: np.ndarray, boundary: np.ndarray, factor: int) -> np.ndarray:
    """Run ``fn`` on ``factor``-times block-averaged maps and upsample its labels.

    Blocks start at array index 0 (callers keep the array origin a multiple of
    ``factor`` so blocks align across chunks); odd edges are zero-padded.
    """
    if factor == 1:
        return fn(as_probability(inner), as_probability(boundary))
    h, w = inner.shape
    ph, pw = -h % factor, -w % factor
    pad = ((0, ph), (0, pw))
    small = fn(_block_mean(np.pad(as_probability(inner), pad), factor),
               _block_mean(np.pad(as_probability(boundary), pad), factor))
    big = np.repeat(np.repeat(small, factor, axis=0), factor, axis=1)
    return np.ascontiguousarray(big[:h, :w])


def gland_instances(inner: np.ndarray, boundary: np.ndarray,
                    options: PostprocessOptions = PostprocessOptions()) -> np.ndarray:
    """Gland labels: ``(inner - boundary) > gland_threshold``, grown back, holes filled."""
    f = options.gland_downsample

    def run(i: np.ndarray, b: np.ndarray) -> np.ndarray:
        return _grown_instances(i, b, options.gland_threshold,
                                options.gland_min_size_px // (f * f),
                                _scaled_kernel(options.gland_kernel_px, f))

    return _at_resolution(run, inner, boundary, f)


def lumen_instances(inner: np.ndarray, boundary: np.ndarray, gland_labels: np.ndarray,
                    options: PostprocessOptions = PostprocessOptions()) -> np.ndarray:
    """Lumen labels kept only where mostly inside a gland of ``gland_labels``."""
    f = options.gland_downsample

    def run(i: np.ndarray, b: np.ndarray) -> np.ndarray:
        return _grown_instances(i, b, options.lumen_threshold,
                                options.lumen_min_size_px // (f * f),
                                _scaled_kernel(options.lumen_kernel_px, f))

    labels = _at_resolution(run, inner, boundary, f)
    n = int(labels.max())
    if n == 0:
        return labels
    size = np.bincount(labels.ravel(), minlength=n + 1)
    inside = np.bincount(labels.ravel(), weights=(gland_labels.ravel() > 0), minlength=n + 1)
    keep = inside >= options.lumen_in_gland_share * np.maximum(size, 1)
    keep[0] = False
    labels = np.where(keep[labels], labels, 0)
    return relabel_sequential(labels)
