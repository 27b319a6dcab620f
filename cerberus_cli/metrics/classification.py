"""Patch classification metrics: accuracy, per-class and mean F1, AP and mAP, confusion.

* Confusion matrix: rows = true class, columns = predicted class.
* F1 of a class = 2 TP / (2 TP + FP + FN); a class that is neither true nor predicted
  anywhere is undefined (NaN) and left out of the mean F1.
* Average precision of a class (one-vs-rest, from probabilities) is the step-wise
  area under the precision-recall curve, sum_n (R_n - R_{n-1}) P_n over the
  distinct score thresholds (no interpolation; the same as scikit-learn's
  ``average_precision_score``). A class with no true sample is undefined (NaN) and
  left out of mAP.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cerberus_cli.core.errors import InputError


def _labels(a: np.ndarray, n_classes: int, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 1:
        raise InputError(f"{name}: expected a 1-D array of class ids, got shape {a.shape}")
    if a.size and (a.min() < 0 or a.max() >= n_classes):
        raise InputError(f"{name}: class ids must lie in 0..{n_classes - 1}")
    return a.astype(np.int64)


def confusion_matrix(true: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) counts; rows are true classes, columns predicted."""
    t = _labels(true, n_classes, "true")
    p = _labels(pred, n_classes, "pred")
    if t.size != p.size:
        raise InputError(f"true has {t.size} samples but pred has {p.size}")
    return np.bincount(t * n_classes + p, minlength=n_classes ** 2).reshape(n_classes, n_classes)


def accuracy_from_confusion(cm: np.ndarray) -> float:
    """Share of samples on the diagonal; NaN without samples."""
    total = cm.sum()
    return math.nan if total == 0 else float(np.trace(cm) / total)


def f1_from_confusion(cm: np.ndarray) -> np.ndarray:
    """F1 per class from a confusion matrix (NaN for classes never true nor predicted)."""
    tp = np.diag(cm).astype(np.float64)
    denom = 2 * tp + (cm.sum(axis=0) - tp) + (cm.sum(axis=1) - tp)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2 * tp / denom, np.nan)


def average_precision(positive: np.ndarray, scores: np.ndarray) -> float:
    """Step-wise average precision of one binary problem; NaN without positives."""
    positive = np.asarray(positive, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    if positive.sum() == 0:
        return math.nan
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], positive[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last index of each distinct score
    tps = np.cumsum(y)[last]
    fps = (last + 1) - tps
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


@dataclass(frozen=True)
class ClassificationResult:
    """All patch classification metrics of one set of samples."""

    accuracy: float
    mean_f1: float
    f1: np.ndarray
    mean_ap: float
    ap: np.ndarray
    confusion: np.ndarray


def classification_metrics(true: np.ndarray, pred: np.ndarray | None = None,
                           probabilities: np.ndarray | None = None,
                           n_classes: int | None = None) -> ClassificationResult:
    """Accuracy, F1, mean F1, AP per class, mAP and confusion matrix.

    Give predicted class ids, per-class ``probabilities`` (N, C) or both; predicted
    ids default to the arg-max of the probabilities. mAP needs probabilities (NaN
    without them).
    """
    if pred is None and probabilities is None:
        raise InputError("classification needs predicted classes or probabilities")
    if probabilities is not None:
        probabilities = np.asarray(probabilities, dtype=np.float64)
        if probabilities.ndim != 2:
            raise InputError(f"probabilities must be (N, C), got shape {probabilities.shape}")
        n_classes = n_classes or probabilities.shape[1]
        if probabilities.shape != (len(true), n_classes):
            raise InputError(f"probabilities have shape {probabilities.shape}, "
                             f"expected ({len(true)}, {n_classes})")
        if pred is None:
            pred = probabilities.argmax(axis=1)
    assert pred is not None  # given, or the arg-max of the probabilities
    if n_classes is None:
        n_classes = int(max(np.max(true, initial=0), np.max(pred, initial=0))) + 1
    cm = confusion_matrix(true, pred, n_classes)
    f1 = f1_from_confusion(cm)
    t = np.asarray(true, dtype=np.int64)
    if probabilities is not None:
        ap = np.array([average_precision(t == c, probabilities[:, c]) for c in range(n_classes)])
    else:
        ap = np.full(n_classes, np.nan)
    return ClassificationResult(
        accuracy=accuracy_from_confusion(cm),
        mean_f1=_nanmean(f1), f1=f1,
        mean_ap=_nanmean(ap), ap=ap,
        confusion=cm,
    )


def _nanmean(a: np.ndarray) -> float:
    a = a[~np.isnan(a)]
    return float(a.mean()) if a.size else math.nan
