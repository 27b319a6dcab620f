"""Pairwise overlaps between two sets of instances, as one sparse table.

An :class:`Overlap` is what every instance metric needs: the area of each true and
each predicted instance and the intersection area of every pair that touches. It is
built from two label maps with a single contingency histogram over the foreground
pixels (no per-instance passes over the image), or from two sets of polygons (see
:mod:`cerberus_cli.metrics.polygons`). Pairs that do not touch are not stored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cerberus_cli.metrics.labels import Labels, check_same_shape, compact

# Largest dense histogram (number of bins) used for the contingency table.
_DENSE_BINS = 1 << 22


@dataclass(frozen=True)
class Overlap:
    """Areas of true and predicted instances and intersections of touching pairs.

    Instances are indexed from 0 (compact instance ``k + 1`` of a label map is index
    ``k``). ``pair_true[i]``, ``pair_pred[i]`` touch with intersection ``inter[i] > 0``;
    each pair appears once.
    """

    true_areas: np.ndarray
    pred_areas: np.ndarray
    pair_true: np.ndarray
    pair_pred: np.ndarray
    inter: np.ndarray

    @property
    def n_true(self) -> int:
        return int(self.true_areas.size)

    @property
    def n_pred(self) -> int:
        return int(self.pred_areas.size)

    def union(self) -> np.ndarray:
        """Union area of every stored pair."""
        return self.true_areas[self.pair_true] + self.pred_areas[self.pair_pred] - self.inter

    def iou(self) -> np.ndarray:
        """Intersection over union of every stored pair (all > 0)."""
        return self.inter / self.union()

    def restrict(self, keep_true: np.ndarray, keep_pred: np.ndarray) -> Overlap:
        """The overlap between the kept subsets (boolean masks), re-indexed from 0."""
        new_t = np.cumsum(keep_true) - 1
        new_p = np.cumsum(keep_pred) - 1
        sel = keep_true[self.pair_true] & keep_pred[self.pair_pred]
        return Overlap(
            self.true_areas[keep_true], self.pred_areas[keep_pred],
            new_t[self.pair_true[sel]], new_p[self.pair_pred[sel]], self.inter[sel],
        )


def overlap_from_labels(true: Labels, pred: Labels) -> Overlap:
    """Contingency table of two compact label maps of the same shape."""
    check_same_shape(true.map, pred.map)
    both = (true.map > 0) & (pred.map > 0)
    stride = pred.n + 1
    keys = true.map[both] * stride + pred.map[both]
    if (true.n + 1) * stride <= max(_DENSE_BINS, 4 * keys.size):
        counts = np.bincount(keys, minlength=(true.n + 1) * stride)
        keys = np.flatnonzero(counts)
        counts = counts[keys]
    else:
        keys, counts = np.unique(keys, return_counts=True)
    return Overlap(
        true.areas, pred.areas,
        keys // stride - 1, keys % stride - 1, counts.astype(np.float64),
    )


def overlap_from_maps(true: np.ndarray, pred: np.ndarray) -> Overlap:
    """Contingency table of two raw label maps (any ids, any integer dtype)."""
    check_same_shape(true, pred)
    return overlap_from_labels(compact(true, "true"), compact(pred, "pred"))
