"""Aggregated Jaccard Index: AJI (Kumar et al. 2017) and AJI+ (Graham et al. 2019).

AJI = sum of |G ∩ P| / (sum of |G ∪ P| + area of predictions never used), where each
true instance G is paired with the prediction P of highest IoU (ties: lowest
prediction index). A true instance that touches no prediction adds its area to the
denominator only (the common reference code pairs it with prediction 1 instead,
which wrongly adds that prediction's area and marks it used). A prediction may be
used by several true instances (the over-penalisation AJI+ removes).

AJI+ uses unique pairs instead: the one-to-one assignment that maximises the total
IoU among touching pairs; unpaired true and predicted instances add their areas to
the denominator.

Both maps empty: undefined (NaN, skipped in averages). Exactly one empty: 0.
"""

from __future__ import annotations

import math

import numpy as np

from cerberus_cli.metrics.matching import max_weight_matching
from cerberus_cli.metrics.overlap import Overlap, overlap_from_maps


def aji_from_overlap(overlap: Overlap) -> float:
    """AJI of one image from its overlap table."""
    if overlap.n_true == 0 and overlap.n_pred == 0:
        return math.nan
    iou = overlap.iou()
    # Sort by true index, IoU descending, pred index: first row per true = best pair.
    order = np.lexsort((overlap.pair_pred, -iou, overlap.pair_true))
    pt = overlap.pair_true[order]
    first = np.ones(pt.size, dtype=bool)
    first[1:] = pt[1:] != pt[:-1]
    best = order[first]
    inter = overlap.inter[best].sum()
    union = overlap.union()[best].sum()
    paired_true = np.zeros(overlap.n_true, dtype=bool)
    paired_true[overlap.pair_true[best]] = True
    used = np.zeros(overlap.n_pred, dtype=bool)
    used[overlap.pair_pred[best]] = True
    denom = union + overlap.true_areas[~paired_true].sum() + overlap.pred_areas[~used].sum()
    return float(inter / denom)


def aji_plus_from_overlap(overlap: Overlap) -> float:
    """AJI+ of one image from its overlap table."""
    if overlap.n_true == 0 and overlap.n_pred == 0:
        return math.nan
    sel = max_weight_matching(overlap.pair_true, overlap.pair_pred, overlap.iou(),
                              overlap.n_true, overlap.n_pred)
    paired_true = np.zeros(overlap.n_true, dtype=bool)
    paired_true[overlap.pair_true[sel]] = True
    paired_pred = np.zeros(overlap.n_pred, dtype=bool)
    paired_pred[overlap.pair_pred[sel]] = True
    inter = overlap.inter[sel].sum()
    denom = (overlap.union()[sel].sum() + overlap.true_areas[~paired_true].sum()
             + overlap.pred_areas[~paired_pred].sum())
    return float(inter / denom)


def aji(true: np.ndarray, pred: np.ndarray) -> float:
    """AJI of two instance label maps of the same shape."""
    return aji_from_overlap(overlap_from_maps(true, pred))


def aji_plus(true: np.ndarray, pred: np.ndarray) -> float:
    """AJI+ of two instance label maps of the same shape."""
    return aji_plus_from_overlap(overlap_from_maps(true, pred))
