"""Panoptic quality: PQ = DQ x SQ, binary and per class (mPQ, mPQ+).

Definitions (Kirillov et al. 2019; Graham et al. 2022, section 4.2):

* TP = matched pairs (unique, IoU > threshold, 0.5 by default), FP = unmatched
  predictions, FN = unmatched true instances.
* DQ = TP / (TP + FP/2 + FN/2); SQ = (sum of IoU over TP) / TP; PQ = DQ x SQ.

Edge cases (one rule for every metric here, as in the COCO panoptic reference):

* TP + FP + FN = 0 (both maps empty): undefined, NaN, skipped by every average;
* only one map empty: DQ = SQ = PQ = 0 (SQ is 0, not undefined, when TP = 0 but
  FP + FN > 0, so PQ = DQ x SQ always holds).

Aggregates:

* PQ (binary): the per-image value averaged over images;
* mPQ: per class, PQ per image averaged over the images whose ground truth holds
  the class (images without the class are skipped even if predictions hold it),
  then averaged over classes;
* mPQ+: per class, TP, FP, FN and IoU sums pooled over all images, PQ of the pooled
  counts, then averaged over classes (a class with no true or predicted instance in
  the whole set is undefined and skipped; a class only ever predicted scores 0).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from cerberus_cli.metrics.matching import match_iou
from cerberus_cli.metrics.overlap import Overlap, overlap_from_maps


@dataclass(frozen=True)
class PQCounts:
    """Matching counts of one image (or pooled over images) and their PQ."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    iou_sum: float = 0.0

    def __add__(self, other: PQCounts) -> PQCounts:
        return PQCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn,
                        self.iou_sum + other.iou_sum)

    @property
    def defined(self) -> bool:
        """False when there is nothing to count (both sides empty)."""
        return self.tp + self.fp + self.fn > 0

    @property
    def dq(self) -> float:
        """Detection quality (an F1 score); NaN when undefined."""
        if not self.defined:
            return math.nan
        return self.tp / (self.tp + 0.5 * self.fp + 0.5 * self.fn)

    @property
    def sq(self) -> float:
        """Segmentation quality (mean IoU of matched pairs); 0 without matches."""
        if not self.defined:
            return math.nan
        return self.iou_sum / self.tp if self.tp else 0.0

    @property
    def pq(self) -> float:
        """Panoptic quality DQ x SQ; NaN when undefined."""
        return self.dq * self.sq

    def as_dict(self) -> dict[str, float]:
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "iou_sum": self.iou_sum,
                "dq": self.dq, "sq": self.sq, "pq": self.pq}


def pq_counts(overlap: Overlap, threshold: float = 0.5) -> PQCounts:
    """PQ counts of one image from its overlap table."""
    mt, _, iou = match_iou(overlap, threshold)
    tp = int(mt.size)
    return PQCounts(tp, overlap.n_pred - tp, overlap.n_true - tp, float(iou.sum()))


def panoptic_quality(true: np.ndarray, pred: np.ndarray, threshold: float = 0.5) -> PQCounts:
    """PQ of two instance label maps (any ids, any integer dtype, same shape).

    >>> c = panoptic_quality(true_map, pred_map)
    >>> c.pq, c.dq, c.sq
    """
    return pq_counts(overlap_from_maps(true, pred), threshold)


def class_pq_counts(overlap: Overlap, true_classes: np.ndarray, pred_classes: np.ndarray,
                    classes: Iterable[int], threshold: float = 0.5) -> dict[int, PQCounts]:
    """PQ counts per class: instances of class ``c`` matched only to instances of ``c``.

    ``true_classes``/``pred_classes`` give the class of each instance of the overlap.
    Instances whose class is not in ``classes`` (e.g. 0, no-label) are ignored.
    """
    true_classes = np.asarray(true_classes)
    pred_classes = np.asarray(pred_classes)
    out: dict[int, PQCounts] = {}
    for c in classes:
        kt, kp = true_classes == c, pred_classes == c
        out[int(c)] = pq_counts(overlap.restrict(kt, kp), threshold)
    return out


def mean_defined(values: Iterable[float]) -> float:
    """Mean of the non-NaN values; NaN if there are none."""
    v = np.asarray([x for x in values if not math.isnan(x)], dtype=np.float64)
    return float(v.mean()) if v.size else math.nan


@dataclass(frozen=True)
class ClassPQ:
    """mPQ or mPQ+ with its per-class values (NaN = undefined, skipped)."""

    value: float
    per_class: dict[int, float]


def mpq(per_image: Sequence[Mapping[int, PQCounts]]) -> ClassPQ:
    """mPQ from per-image, per-class counts: images without the class in the truth skipped."""
    classes = sorted({c for counts in per_image for c in counts})
    per_class = {
        c: mean_defined(counts[c].pq for counts in per_image
                        if c in counts and counts[c].tp + counts[c].fn > 0)
        for c in classes
    }
    return ClassPQ(mean_defined(per_class.values()), per_class)


def mpq_plus(per_image: Sequence[Mapping[int, PQCounts]]) -> ClassPQ:
    """mPQ+ from per-image, per-class counts: counts pooled over images per class."""
    classes = sorted({c for counts in per_image for c in counts})
    pooled = {c: sum((counts.get(c, PQCounts()) for counts in per_image), PQCounts())
              for c in classes}
    per_class = {c: p.pq for c, p in pooled.items()}
    return ClassPQ(mean_defined(per_class.values()), per_class)


def image_mpq(counts: Mapping[int, PQCounts]) -> float:
    """mPQ of one image: mean PQ over the classes its ground truth holds."""
    return mean_defined(c.pq for c in counts.values() if c.tp + c.fn > 0)
