"""GlaS challenge gland metrics: object-level F1, object Dice and object Hausdorff.

Sirinukunwattana et al. 2017, "Gland segmentation in colon histology images: The
GlaS challenge contest" (Medical Image Analysis 35), as defined on the challenge's
evaluation page and in its MATLAB evaluation code (``F1score.m``, ``ObjectDice.m``,
``ObjectHausdorff.m``, 2015). ``G`` are the ground-truth objects, ``S`` the
segmented (predicted) objects; every metric ignores classes.

* **Partner.** The partner of an object is the object of the other set that it
  overlaps most (most shared pixels; for polygons the largest intersection area);
  ties go to the lowest id, as MATLAB's ``mode``/``max`` do.
* **Object F1.** A segmented object is a true positive when it covers *more than*
  half of its partner ground-truth object, ``|S_j ∩ G*(S_j)| > 0.5 |G*(S_j)|`` (the
  official code's strict test; the page says "at least 50%"); otherwise, and when
  it overlaps no ground truth, it is a false positive. Two disjoint objects cannot
  both cover more than half of one object, so the pairs are one-to-one; where
  predicted polygons overlap each other, only the one covering most of the truth
  object counts. A ground-truth object without a true positive is a false negative
  (FN = n_G - TP), as the challenge page defines it ("no corresponding segmented
  object or less than 50% of its area overlapped"). F1 = 2 TP / (2 TP + FP + FN),
  equal to 2PR/(P+R). Dataset value: TP, FP and FN pooled over all images.
* **Object Dice.** ``Dice_obj = 1/2 [sum_j w_j Dice(G*(S_j), S_j) + sum_i w~_i
  Dice(G_i, S*(G_i))]`` with ``w_j = |S_j| / sum |S|`` and ``w~_i = |G_i| / sum |G|``;
  an object that overlaps nothing has Dice 0.
* **Object Hausdorff.** The same two weighted sums of ``H(G, S) = max(sup_{g in G}
  inf_{s in S} |g - s|, sup_{s in S} inf_{g in G} |s - g|)``, the symmetric Hausdorff
  distance between the two objects' *pixel sets* (every pixel of each mask, as the
  official ``Hausdorff.m`` does with ``knnsearch`` on the mask coordinates; not
  their boundaries), Euclidean between pixel centres, in pixels. An object that
  overlaps nothing takes as partner the object of the other set nearest to it *by
  Hausdorff distance* (the challenge definition), found exactly with a
  bounding-box lower bound that prunes candidates. Distances come from Euclidean
  distance transforms of the pair's bounding box (scipy), never from loops over
  pixels.

Dataset values of object Dice and object Hausdorff follow the challenge page,
which sums over the set of *all* objects of the test images (weights ``|S_j|`` over
the total area of all images); the per-image values (weights within the image)
are reported too, and their mean is the per-image average many papers give.

Empty cases, following the rule of :mod:`cerberus_cli.metrics`: truth and
prediction both empty gives NaN for all three (the official code returns 1, 1
and 0), left out of every mean. One side empty: F1 and object Dice are 0 (as in
the official code); object Hausdorff is the image diagonal ``hypot(H, W)``,
longer than any distance in the image, since every object lacks a partner (the
official ``Hausdorff.m`` returns infinity and ``ObjectHausdorff.m`` gives no
value). For polygons the diagonal is that of the box holding all objects of both
sides. More generally, a sum over an empty set is left out: the value is the mean
of the weighted sums whose set has objects.

Polygons (slide object files) are rasterised for the Hausdorff distance: a
level-0 pixel ``(row, col)`` belongs to an object when its centre ``(col + 0.5,
row + 0.5)`` lies inside the polygon (holes respected; the scanline fill of
:func:`cerberus_cli.metrics.polygons.fill_polygon`), so pixel-aligned polygons give
the same distances as label maps; an object too thin to hold a pixel centre keeps
the pixel under a point on its surface.

Quick use::

    from cerberus_cli.metrics.glas import glas_metrics
    g = glas_metrics(true_map, pred_map)   # g.f1, g.object_dice, g.object_hausdorff
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
from scipy import ndimage

from cerberus_cli.core.errors import InputError
from cerberus_cli.metrics.labels import Labels, check_same_shape, compact
from cerberus_cli.metrics.overlap import Overlap, overlap_from_labels
from cerberus_cli.metrics.polygons import polygon_pixels, valid_geometries

#: A segmented object is a true positive above this share of its partner's area.
TP_COVER = 0.5
# Polygon masks are kept for reuse while their pixels total no more than this.
_CACHE_PIXELS = 1 << 25


@dataclass(frozen=True)
class GlasCounts:
    """Counts and area-weighted sums of one image (or, added up, of a data set).

    ``true_dice`` is ``sum_i |G_i| Dice(G_i, S*(G_i))`` and ``pred_dice`` is
    ``sum_j |S_j| Dice(G*(S_j), S_j)``; ``true_hausdorff``/``pred_hausdorff`` the
    same sums of partner Hausdorff distances (NaN when not computed). Adding two
    counts pools them, which gives the challenge's values over a set of images.
    """

    tp: int = 0
    fp: int = 0
    fn: int = 0
    true_area: float = 0.0
    pred_area: float = 0.0
    true_dice: float = 0.0
    pred_dice: float = 0.0
    true_hausdorff: float = 0.0
    pred_hausdorff: float = 0.0

    def __add__(self, other: GlasCounts) -> GlasCounts:
        return GlasCounts(
            self.tp + other.tp, self.fp + other.fp, self.fn + other.fn,
            self.true_area + other.true_area, self.pred_area + other.pred_area,
            self.true_dice + other.true_dice, self.pred_dice + other.pred_dice,
            self.true_hausdorff + other.true_hausdorff,
            self.pred_hausdorff + other.pred_hausdorff,
        )

    @property
    def precision(self) -> float:
        """TP / (TP + FP); NaN without segmented objects."""
        n = self.tp + self.fp
        return math.nan if n == 0 else self.tp / n

    @property
    def recall(self) -> float:
        """TP / (TP + FN); NaN without ground-truth objects."""
        n = self.tp + self.fn
        return math.nan if n == 0 else self.tp / n

    @property
    def f1(self) -> float:
        """Object-level F1 = 2 TP / (2 TP + FP + FN); NaN when both sets are empty."""
        n = 2 * self.tp + self.fp + self.fn
        return math.nan if n == 0 else 2 * self.tp / n

    @property
    def object_dice(self) -> float:
        """Object-level Dice; NaN when both sets are empty."""
        return _two_sided(self.true_dice, self.true_area, self.pred_dice, self.pred_area)

    @property
    def object_hausdorff(self) -> float:
        """Object-level Hausdorff distance (px); NaN when both sets are empty or not computed."""
        return _two_sided(self.true_hausdorff, self.true_area, self.pred_hausdorff,
                          self.pred_area)


def _two_sided(true_sum: float, true_area: float, pred_sum: float, pred_area: float) -> float:
    """Mean of the two normalised weighted sums, leaving out a side without objects."""
    terms = [s / a for s, a in ((true_sum, true_area), (pred_sum, pred_area)) if a > 0]
    return float(np.mean(terms)) if terms else math.nan


def partners(owner: np.ndarray, other: np.ndarray, inter: np.ndarray,
             n_owner: int) -> tuple[np.ndarray, np.ndarray]:
    """Partner of each owner object: the other-side object it overlaps most.

    ``owner[k]``, ``other[k]`` and ``inter[k]`` are the stored pairs of an
    :class:`Overlap` seen from one side. Returns ``(partner, intersection)`` per
    owner object; partner ``-1`` (intersection 0) when it overlaps nothing. Ties
    go to the lowest index.
    """
    best = np.full(n_owner, -1, dtype=np.int64)
    area = np.zeros(n_owner, dtype=np.float64)
    if owner.size:
        order = np.lexsort((other, -inter, owner))
        first = order[np.r_[True, owner[order][1:] != owner[order][:-1]]]
        best[owner[first]] = other[first]
        area[owner[first]] = inter[first]
    return best, area


def glas_counts(overlap: Overlap,
                distances: tuple[np.ndarray, np.ndarray] | None = None) -> GlasCounts:
    """GlaS counts of one image from its overlap table.

    ``distances`` (from :func:`partner_distances`) are the Hausdorff distances of
    every true and every predicted object to its partner; without them the
    Hausdorff sums are NaN.
    """
    at, ap = overlap.true_areas, overlap.pred_areas
    true_of_pred, inter_p = partners(overlap.pair_pred, overlap.pair_true, overlap.inter,
                                     overlap.n_pred)
    pred_of_true, inter_t = partners(overlap.pair_true, overlap.pair_pred, overlap.inter,
                                     overlap.n_true)
    has_p, has_t = true_of_pred >= 0, pred_of_true >= 0
    covered = np.zeros(overlap.n_pred, dtype=bool)
    covered[has_p] = inter_p[has_p] > TP_COVER * at[true_of_pred[has_p]]
    # One true positive per truth object (several only where predictions overlap).
    tp = int(np.unique(true_of_pred[covered]).size)
    dice_p = np.zeros(overlap.n_pred)
    dice_p[has_p] = 2 * inter_p[has_p] / (ap[has_p] + at[true_of_pred[has_p]])
    dice_t = np.zeros(overlap.n_true)
    dice_t[has_t] = 2 * inter_t[has_t] / (at[has_t] + ap[pred_of_true[has_t]])
    if distances is None:
        h_true = h_pred = math.nan
    else:
        d_true, d_pred = (np.asarray(d, dtype=np.float64) for d in distances)
        if d_true.shape != at.shape or d_pred.shape != ap.shape:
            raise ValueError("distances do not match the objects of the overlap table")
        h_true, h_pred = float(at @ d_true), float(ap @ d_pred)
    return GlasCounts(
        tp=tp, fp=overlap.n_pred - tp, fn=overlap.n_true - tp,
        true_area=float(at.sum()), pred_area=float(ap.sum()),
        true_dice=float(at @ dice_t), pred_dice=float(ap @ dice_p),
        true_hausdorff=h_true, pred_hausdorff=h_pred,
    )


# --- Hausdorff distances ------------------------------------------------------------

class ObjectMasks:
    """Pixel masks of a set of objects, one bounding box at a time.

    ``boxes[k]`` is ``(y0, x0, y1, x1)`` (ends exclusive) of object ``k``'s pixels;
    :meth:`crop` paints object ``k`` into a window that holds its box.
    """

    boxes: np.ndarray

    @property
    def n(self) -> int:
        """Number of objects."""
        return int(self.boxes.shape[0])

    def crop(self, k: int, y0: int, x0: int, shape: tuple[int, int]) -> np.ndarray:
        """Boolean mask of object ``k`` in the window at ``(y0, x0)`` of ``shape``."""
        raise NotImplementedError


class LabelMasks(ObjectMasks):
    """The instances of a compact label map (instance ``k + 1`` is object ``k``)."""

    def __init__(self, labels: Labels) -> None:
        self.map = labels.map
        slices = ndimage.find_objects(labels.map, max_label=labels.n)
        self.boxes = np.array([(s[0].start, s[1].start, s[0].stop, s[1].stop) for s in slices],
                              dtype=np.int64).reshape(-1, 4)

    def crop(self, k: int, y0: int, x0: int, shape: tuple[int, int]) -> np.ndarray:
        return self.map[y0:y0 + shape[0], x0:x0 + shape[1]] == k + 1


class PolygonMasks(ObjectMasks):
    """Polygons (level-0 px) rasterised by pixel centre, holes respected."""

    def __init__(self, geoms: np.ndarray) -> None:
        self.geoms = valid_geometries(geoms)
        self._cache: dict[int, tuple[int, int, np.ndarray]] = {}
        self._cached = 0
        rasters = [self._raster(k) for k in range(self.geoms.size)]
        self.boxes = np.array([(y, x, y + m.shape[0], x + m.shape[1]) for y, x, m in rasters],
                              dtype=np.int64).reshape(-1, 4)

    def _raster(self, k: int) -> tuple[int, int, np.ndarray]:
        """Object ``k`` as (y0, x0, mask) cropped to its pixels."""
        if k in self._cache:
            return self._cache[k]
        out = polygon_pixels(self.geoms[k])
        if out is None:
            raise InputError(f"object {k + 1} of {self.geoms.size} has an empty outline "
                             "(no pixels for the object Hausdorff distance)")
        if self._cached + out[2].size <= _CACHE_PIXELS:
            self._cache[k] = out
            self._cached += out[2].size
        return out

    def crop(self, k: int, y0: int, x0: int, shape: tuple[int, int]) -> np.ndarray:
        oy, ox, m = self._raster(k)
        out = np.zeros(shape, dtype=bool)
        out[oy - y0:oy - y0 + m.shape[0], ox - x0:ox - x0 + m.shape[1]] = m
        return out


def mask_hausdorff(a: np.ndarray, b: np.ndarray) -> float:
    """Symmetric Hausdorff distance (px) between the pixels of two boolean masks.

    Both masks must be non-empty and of one shape, a window holding both sets
    whole; distances are Euclidean between pixel centres, exact (distance
    transforms).
    """
    check_same_shape(a, b, "masks")
    if not (a.any() and b.any()):
        raise ValueError("Hausdorff distance needs two non-empty masks")
    to_b = ndimage.distance_transform_edt(~b)
    to_a = ndimage.distance_transform_edt(~a)
    return float(max(to_b[a].max(), to_a[b].max()))


def _pair_hausdorff(true: ObjectMasks, i: int, pred: ObjectMasks, j: int) -> float:
    a, b = true.boxes[i], pred.boxes[j]
    y0, x0 = int(min(a[0], b[0])), int(min(a[1], b[1]))
    shape = (int(max(a[2], b[2])) - y0, int(max(a[3], b[3])) - x0)
    return mask_hausdorff(true.crop(i, y0, x0, shape), pred.crop(j, y0, x0, shape))


def _nearest(box: np.ndarray, boxes: np.ndarray, distance: Callable[[int], float]) -> float:
    """Smallest ``distance(k)`` over the objects of ``boxes``.

    The Hausdorff distance is at least that of the sets' projections on each axis,
    hence at least the largest difference of matching box edges: candidates are
    taken in that order and the search stops once the bound reaches the best.
    """
    bound = np.abs(boxes - box).max(axis=1)
    best = math.inf
    for k in np.argsort(bound, kind="stable"):
        if bound[k] >= best:
            break
        best = min(best, distance(int(k)))
    return best


def partner_distances(true: ObjectMasks, pred: ObjectMasks, overlap: Overlap,
                      diagonal: float) -> tuple[np.ndarray, np.ndarray]:
    """Hausdorff distance of every true and every predicted object to its partner.

    The partner is the most-overlapping object of the other set, or, for an object
    that overlaps none, the other set's object nearest by Hausdorff distance. When
    the other set is empty every object scores ``diagonal``. Returns
    ``(true_distances, pred_distances)``.
    """
    if true.n != overlap.n_true or pred.n != overlap.n_pred:
        raise ValueError("masks and overlap table hold different numbers of objects")
    d_true = np.full(true.n, float(diagonal))
    d_pred = np.full(pred.n, float(diagonal))
    if true.n == 0 or pred.n == 0:
        return d_true, d_pred
    cache: dict[tuple[int, int], float] = {}

    def h(i: int, j: int) -> float:
        if (i, j) not in cache:
            cache[i, j] = _pair_hausdorff(true, i, pred, j)
        return cache[i, j]

    def h_pred(j: int, i: int) -> float:
        return h(i, j)

    pred_of_true, _ = partners(overlap.pair_true, overlap.pair_pred, overlap.inter, true.n)
    true_of_pred, _ = partners(overlap.pair_pred, overlap.pair_true, overlap.inter, pred.n)
    for i, j in enumerate(pred_of_true.tolist()):
        d_true[i] = h(i, j) if j >= 0 else _nearest(true.boxes[i], pred.boxes, partial(h, i))
    for j, i in enumerate(true_of_pred.tolist()):
        d_pred[j] = h(i, j) if i >= 0 else _nearest(pred.boxes[j], true.boxes,
                                                    partial(h_pred, j))
    return d_true, d_pred


def image_diagonal(shape: tuple[int, ...]) -> float:
    """Length of the diagonal of an image of ``shape`` (px): the one-side-empty distance."""
    return float(math.hypot(shape[0], shape[1]))


def label_distances(true: Labels, pred: Labels, overlap: Overlap) -> tuple[np.ndarray, np.ndarray]:
    """:func:`partner_distances` of two compact label maps (diagonal: the image's)."""
    check_same_shape(true.map, pred.map)
    return partner_distances(LabelMasks(true), LabelMasks(pred), overlap,
                             image_diagonal(true.map.shape))


def polygon_distances(true: np.ndarray, pred: np.ndarray,
                      overlap: Overlap) -> tuple[np.ndarray, np.ndarray]:
    """:func:`partner_distances` of two arrays of polygons (level-0 px).

    The one-side-empty distance is the diagonal of the box holding the pixels of
    all objects of both sides.
    """
    tm, pm = PolygonMasks(true), PolygonMasks(pred)
    boxes = np.concatenate([tm.boxes, pm.boxes])
    diagonal = 0.0
    if boxes.size:
        diagonal = image_diagonal((int(boxes[:, 2].max() - boxes[:, 0].min()),
                                   int(boxes[:, 3].max() - boxes[:, 1].min())))
    return partner_distances(tm, pm, overlap, diagonal)


def glas_metrics(true: np.ndarray, pred: np.ndarray, hausdorff: bool = True) -> GlasCounts:
    """GlaS counts of two label maps (any ids); ``hausdorff=False`` skips the distances.

    ``glas_metrics(t, p).f1``, ``.object_dice`` and ``.object_hausdorff`` are the
    image's values.
    """
    check_same_shape(true, pred)
    lt, lp = compact(true, "true"), compact(pred, "pred")
    ov = overlap_from_labels(lt, lp)
    return glas_counts(ov, label_distances(lt, lp, ov) if hausdorff else None)
