"""Probe metrics and their confidence intervals from a bootstrap over groups.

Labels are integer class indices into the training classes; ``scores`` are (N, K)
decision values or probabilities (only their order within a class column matters).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np

METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "roc_auc")


def confusion(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> np.ndarray:
    """(K, K) counts, rows = true class, columns = predicted class."""
    return np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)


def _auc(pos: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC by ranks (ties counted half): P(score of a positive > score of a negative)."""
    n_pos = int(pos.sum())
    n_neg = len(pos) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score), np.float64)
    sorted_scores = score[order]
    # Average ranks over ties.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Binary AUC (class 1's score), or the macro one-vs-rest AUC over classes that have
    both positives and negatives in ``y_true``."""
    k = scores.shape[1]
    if k == 2:
        return _auc(y_true == 1, scores[:, 1] - scores[:, 0])
    values = [_auc(y_true == c, scores[:, c]) for c in range(k)]
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def metrics(y_true: np.ndarray, y_pred: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Accuracy, balanced accuracy and macro F1 (over classes present in ``y_true``),
    and ROC AUC (see :func:`roc_auc`)."""
    k = scores.shape[1]
    cm = confusion(y_true, y_pred, k).astype(np.float64)
    support = cm.sum(axis=1)
    present = support > 0
    tp = np.diag(cm)
    recall = np.divide(tp, support, out=np.zeros(k), where=present)
    predicted = cm.sum(axis=0)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(k), where=denom > 0)
    return {
        "accuracy": float(tp.sum() / max(1.0, cm.sum())),
        "balanced_accuracy": float(recall[present].mean()) if present.any() else math.nan,
        "macro_f1": float(f1[present].mean()) if present.any() else math.nan,
        "roc_auc": roc_auc(y_true, scores),
    }


def normalised_confusion(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> np.ndarray:
    """Row-normalised confusion matrix (each true class's rows sum to 1; absent: 0)."""
    cm = confusion(y_true, y_pred, k).astype(np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    return np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)


def _resamples(groups: np.ndarray, replicates: int, seed: int) -> Iterator[np.ndarray]:
    """Row indices of ``replicates`` bootstrap samples that draw whole groups with
    replacement (a pure function of ``groups`` and ``seed``)."""
    rng = np.random.default_rng(seed)
    _, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(inverse.max() + 1)]
    for _ in range(replicates):
        pick = rng.integers(0, len(members), len(members))
        yield np.concatenate([members[g] for g in pick])


def _seed_mean(y_true: np.ndarray, preds: list[np.ndarray], scores: list[np.ndarray],
               idx: np.ndarray) -> dict[str, float]:
    """Every metric on rows ``idx``, averaged over the seeds' predictions (NaN: undefined)."""
    yt = y_true[idx]
    per_seed = [metrics(yt, p[idx], s[idx]) for p, s in zip(preds, scores)]
    return {m: float(np.nanmean([d[m] for d in per_seed]))
            if not all(math.isnan(d[m]) for d in per_seed) else math.nan for m in METRICS}


def _interval(values: list[float], confidence: float) -> tuple[float, float] | None:
    arr = np.asarray([x for x in values if not math.isnan(x)])
    if not len(arr):
        return None
    alpha = (1.0 - confidence) / 2.0
    return float(np.quantile(arr, alpha)), float(np.quantile(arr, 1 - alpha))


def group_bootstrap(y_true: np.ndarray, preds: list[np.ndarray], scores: list[np.ndarray],
                    groups: np.ndarray, replicates: int, confidence: float,
                    seed: int = 0) -> dict[str, tuple[float, float] | np.ndarray]:
    """Percentile intervals of every metric (averaged over seeds' predictions) and of
    the row-normalised confusion matrix, resampling whole groups with replacement."""
    if replicates <= 0:
        return {}
    k = scores[0].shape[1]
    values: dict[str, list[float]] = {m: [] for m in METRICS}
    cms = []
    for idx in _resamples(groups, replicates, seed):
        for m, value in _seed_mean(y_true, preds, scores, idx).items():
            values[m].append(value)
        cms.append(np.mean([normalised_confusion(y_true[idx], p[idx], k) for p in preds], axis=0))
    out: dict[str, tuple[float, float] | np.ndarray] = {}
    for m, v in values.items():
        ci = _interval(v, confidence)
        if ci is not None:
            out[m] = ci
    alpha = (1.0 - confidence) / 2.0
    stack = np.stack(cms)
    out["confusion_low"] = np.quantile(stack, alpha, axis=0)
    out["confusion_high"] = np.quantile(stack, 1 - alpha, axis=0)
    return out


def paired_difference(y_true: np.ndarray, base: tuple[list[np.ndarray], list[np.ndarray]],
                      other: tuple[list[np.ndarray], list[np.ndarray]], groups: np.ndarray,
                      replicates: int, confidence: float, seed: int = 0) -> dict[str, dict[str, Any]]:
    """``other`` minus ``base`` on the same test rows, per metric: the difference, its
    percentile interval and the share of replicates where ``other`` is ahead.

    Both are scored on each replicate's resampled groups, so what the two have in common
    (which groups are hard) cancels: the interval of a difference is narrower than the
    two separate intervals suggest. ``base`` and ``other`` are (predictions, scores) per
    seed.
    """
    everything = np.arange(len(y_true))
    a, b = _seed_mean(y_true, *base, everything), _seed_mean(y_true, *other, everything)
    diffs: dict[str, list[float]] = {m: [] for m in METRICS}
    if replicates > 0:
        for idx in _resamples(groups, replicates, seed):
            ra, rb = _seed_mean(y_true, *base, idx), _seed_mean(y_true, *other, idx)
            for m in METRICS:
                diffs[m].append(rb[m] - ra[m])
    out: dict[str, dict[str, Any]] = {}
    for m in METRICS:
        finite = [d for d in diffs[m] if not math.isnan(d)]
        out[m] = {"difference": b[m] - a[m], "ci": _interval(diffs[m], confidence),
                  "share_ahead": float(np.mean(np.asarray(finite) > 0)) if finite else None}
    return out
