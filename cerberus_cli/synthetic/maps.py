"""Synthetic network maps with known objects, for post-processing tests and benchmarks.

Objects are ellipses painted into a ground-truth label map; the instance-head
maps are made the way training targets are (inner = object eroded by an
elliptical kernel, boundary = dilated minus eroded), lightly blurred so the
maps look like soft network output rather than exact targets.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from cerberus_cli.postprocess.chunks import ChunkMaps


@dataclass
class SynthScene:
    """A synthetic grid: ground-truth labels, maps per head, type maps."""

    labels: dict[str, np.ndarray]       # head -> int32 ground-truth labels
    prob: dict[str, np.ndarray]         # head -> (2, H, W) float32 inner/boundary
    types: dict[str, np.ndarray]        # type head -> (H, W) uint8
    classes: dict[str, dict[int, int]]  # head -> ground-truth label -> class id


def _kernel(size: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


def paint_ellipses(shape: tuple[int, int], n: int, radii: tuple[float, float],
                   rng: np.random.Generator, gap: int = 2, inside: np.ndarray | None = None,
                   inset: float = 0.0, border: int = 0) -> np.ndarray:
    """Label map of up to ``n`` non-overlapping random ellipses (``gap`` px apart).

    With ``inside``, each ellipse is centred in a distinct object of that label
    map and shrunk to fit ``inset`` px inside it (used for lumina in glands).
    """
    h, w = shape
    labels = np.zeros(shape, np.int32)
    occupied = np.zeros(shape, np.uint8)
    k = 0
    if inside is not None:
        ids = [i for i in range(1, int(inside.max()) + 1) if (inside == i).any()]
        for i in ids[:n]:
            obj = (inside == i).astype(np.uint8)
            dist = cv2.distanceTransform(obj, cv2.DIST_L2, 5)
            iy, ix = np.unravel_index(np.argmax(dist), dist.shape)
            r = max(dist.max() - inset, 2.0)
            ry, rx = r * rng.uniform(0.6, 0.9), r * rng.uniform(0.6, 0.9)
            k += 1
            cv2.ellipse(labels, (int(ix), int(iy)), (int(rx), int(ry)), 0, 0, 360, k, -1)
        return labels
    for _ in range(n * 20):
        if k == n:
            break
        ry, rx = rng.uniform(*radii), rng.uniform(*radii)
        r = int(max(ry, rx)) + 1
        cy = int(rng.integers(border + r, h - border - r))
        cx = int(rng.integers(border + r, w - border - r))
        # Work in a window around the ellipse: cost independent of the grid size.
        pad = r + gap + 1
        wy0, wx0 = max(0, cy - pad), max(0, cx - pad)
        wy1, wx1 = min(h, cy + pad + 1), min(w, cx + pad + 1)
        canvas = np.zeros((wy1 - wy0, wx1 - wx0), np.uint8)
        cv2.ellipse(canvas, (cx - wx0, cy - wy0), (int(rx), int(ry)),
                    float(rng.uniform(0, 180)), 0, 360, 1, -1)
        grown: np.ndarray = cv2.dilate(canvas, _kernel(2 * gap + 1))
        if (grown & occupied[wy0:wy1, wx0:wx1]).any():
            continue
        k += 1
        labels[wy0:wy1, wx0:wx1][canvas > 0] = k
        occupied[wy0:wy1, wx0:wx1] |= canvas
    return labels


def instance_maps(labels: np.ndarray, kernel_px: int, blur: float = 0.7) -> np.ndarray:
    """(2, H, W) float32 inner/boundary maps of a label map, as training targets are made."""
    from scipy import ndimage as ndi

    inner: np.ndarray = np.zeros(labels.shape, np.float32)
    outer: np.ndarray = np.zeros(labels.shape, np.float32)
    k = _kernel(kernel_px)
    h, w = labels.shape
    pad = kernel_px
    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        y0, x0 = max(0, sl[0].start - pad), max(0, sl[1].start - pad)
        win = (slice(y0, min(h, sl[0].stop + pad)), slice(x0, min(w, sl[1].stop + pad)))
        obj = (labels[win] == i).astype(np.uint8)
        inner[win] = np.maximum(inner[win], cv2.erode(obj, k))
        outer[win] = np.maximum(outer[win], cv2.dilate(obj, k))
    boundary: np.ndarray = outer - inner
    if blur > 0:
        inner = cv2.GaussianBlur(inner, (0, 0), blur)
        boundary = cv2.GaussianBlur(boundary, (0, 0), blur)
    total = np.maximum(inner + boundary, 1.0)  # softmax outputs sum to <= 1
    return np.stack([inner / total, boundary / total]).astype(np.float32)


def type_map(labels: np.ndarray, n_classes: int, rng: np.random.Generator,
             noise: float = 0.1) -> tuple[np.ndarray, dict[int, int]]:
    """Per-pixel class map: each object's class, with ``noise`` of its pixels wrong."""
    classes = {i: int(rng.integers(1, n_classes)) for i in range(1, int(labels.max()) + 1)}
    lut = np.zeros(int(labels.max()) + 1, np.uint8)
    for i, c in classes.items():
        lut[i] = c
    out = lut[labels]
    flip = (rng.random(labels.shape) < noise) & (labels > 0)
    out[flip] = rng.integers(0, n_classes, int(flip.sum())).astype(np.uint8)
    return out, classes


def scene(shape: tuple[int, int] = (360, 420), seed: int = 0, nuclei: int = 150,
          glands: int = 6, gland_radii: tuple[float, float] = (18, 40),
          gland_gap: int = 14) -> SynthScene:
    """A grid with nuclei, glands and one lumen in each gland (0.5 um/px sizes)."""
    rng = np.random.default_rng(seed)
    gl = paint_ellipses(shape, glands, gland_radii, rng, gap=gland_gap)
    lu = paint_ellipses(shape, glands, (0, 0), rng, inside=gl, inset=10)
    nu = paint_ellipses(shape, nuclei, (3.0, 7.0), rng, gap=1)
    nt, ncls = type_map(nu, 7, rng)
    gt, gcls = type_map(gl, 3, rng)
    return SynthScene(
        labels={"gland": gl, "lumen": lu, "nuclei": nu},
        prob={"gland": instance_maps(gl, 11), "lumen": instance_maps(lu, 3),
              "nuclei": instance_maps(nu, 3)},
        types={"gland_type": gt, "nuclei_type": nt},
        classes={"gland": gcls, "nuclei": ncls},
    )


def chunks_of(sc: SynthScene, core: int, margin: int, quantise: bool = False):
    """Split a scene into :class:`ChunkMaps` with ``core``-px cores and ``margin``."""
    h, w = next(iter(sc.labels.values())).shape
    for y0 in range(0, h, core):
        for x0 in range(0, w, core):
            y1, x1 = min(y0 + core, h), min(x0 + core, w)
            ay0, ax0 = max(0, y0 - margin), max(0, x0 - margin)
            ay1, ax1 = min(h, y1 + margin), min(w, x1 + margin)
            prob = {k: v[:, ay0:ay1, ax0:ax1] for k, v in sc.prob.items()}
            if quantise:
                prob = {k: np.round(v * 255).astype(np.uint8) for k, v in prob.items()}
            yield ChunkMaps(origin=(ax0, ay0), core=(x0, y0, x1, y1), prob=prob,
                            types={k: v[ay0:ay1, ax0:ax1] for k, v in sc.types.items()})


def whole(sc: SynthScene) -> ChunkMaps:
    """The whole scene as one chunk that owns everything."""
    h, w = next(iter(sc.labels.values())).shape
    return ChunkMaps(origin=(0, 0), core=(0, 0, w, h), prob=dict(sc.prob),
                     types=dict(sc.types))
