"""Agreement with a straightforward reference implementation, and properties."""

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from cerberus_cli.metrics import aji, aji_plus, panoptic_quality


def random_map(rng, size=48, n=14):
    """Overlapping random rectangles painted in order: touching, irregular instances."""
    m = np.zeros((size, size), np.int32)
    for i in range(1, n + 1):
        y, x = rng.integers(0, size - 4, 2)
        h, w = rng.integers(3, 12, 2)
        m[y:y + h, x:x + w] = i
    return m


def reference_iou(true, pred):
    """IoU matrix and intersection/union matrices by one full-image pass per pair."""
    tids = [i for i in np.unique(true) if i]
    pids = [j for j in np.unique(pred) if j]
    inter = np.zeros((len(tids), len(pids)))
    union = np.zeros((len(tids), len(pids)))
    for a, i in enumerate(tids):
        for b, j in enumerate(pids):
            t, p = true == i, pred == j
            inter[a, b] = np.sum(t & p)
            union[a, b] = np.sum(t | p)
    return inter, union, [np.sum(true == i) for i in tids], [np.sum(pred == j) for j in pids]


def reference_pq(true, pred, thr):
    inter, union, _, _ = reference_iou(true, pred)
    iou = inter / np.maximum(union, 1)
    if iou.size == 0:
        return 0, iou.shape[1], iou.shape[0], 0.0
    if thr >= 0.5:
        r, c = np.nonzero(iou > thr)
    else:
        w = np.where(iou > thr, iou, 0)
        r, c = linear_sum_assignment(w, maximize=True)
        keep = w[r, c] > 0
        r, c = r[keep], c[keep]
    tp = len(r)
    return tp, iou.shape[1] - tp, iou.shape[0] - tp, float(iou[r, c].sum())


def reference_aji(true, pred):
    inter, union, at, ap = reference_iou(true, pred)
    iou = inter / np.maximum(union, 1)
    c = u = 0.0
    used = set()
    for a in range(len(at)):
        if iou.shape[1] and iou[a].max() > 0:
            b = int(np.argmax(iou[a]))
            c += inter[a, b]
            u += union[a, b]
            used.add(b)
        else:
            u += at[a]
    u += sum(ap[b] for b in range(len(ap)) if b not in used)
    return c / u


def reference_aji_plus(true, pred):
    inter, union, at, ap = reference_iou(true, pred)
    iou = inter / np.maximum(union, 1)
    r, c = linear_sum_assignment(iou, maximize=True)
    keep = iou[r, c] > 0
    r, c = r[keep], c[keep]
    u = union[r, c].sum() + sum(at[a] for a in range(len(at)) if a not in set(r))
    u += sum(ap[b] for b in range(len(ap)) if b not in set(c))
    return inter[r, c].sum() / u


@pytest.mark.parametrize("seed", range(12))
def test_agrees_with_reference(seed):
    rng = np.random.default_rng(seed)
    true = random_map(rng)
    # Prediction: the truth shifted and partly re-drawn, plus a few new objects.
    pred = np.roll(true, rng.integers(-2, 3, 2), axis=(0, 1))
    pred = np.where(rng.random(pred.shape) < 0.05, 0, pred)
    pred[random_map(rng, n=4) > 0] = 0
    for thr in (0.5, 0.3, 0.75):
        c = panoptic_quality(true, pred, thr)
        tp, fp, fn, s = reference_pq(true, pred, thr)
        assert (c.tp, c.fp, c.fn) == (tp, fp, fn)
        assert c.iou_sum == pytest.approx(s)
    assert aji(true, pred) == pytest.approx(reference_aji(true, pred))
    assert aji_plus(true, pred) == pytest.approx(reference_aji_plus(true, pred))


@pytest.mark.parametrize("seed", range(6))
def test_properties(seed):
    rng = np.random.default_rng(100 + seed)
    true = random_map(rng)
    pred = np.roll(random_map(np.random.default_rng(seed)), 1, axis=0)
    own = panoptic_quality(true, true)
    assert (own.pq, own.dq, own.sq) == (1.0, 1.0, 1.0)
    assert aji(true, true) == 1.0 and aji_plus(true, true) == 1.0
    c = panoptic_quality(true, pred)
    assert 0.0 <= c.dq <= 1.0 and 0.0 <= c.sq <= 1.0 and c.pq == pytest.approx(c.dq * c.sq)
    # Relabelling ids (a random permutation into large, sparse ids) changes nothing.
    perm = np.concatenate([[0], rng.permutation(np.arange(1, true.max() + 1)) * 977 + 5])
    relabelled = perm[true].astype(np.uint32)
    assert panoptic_quality(relabelled, pred).as_dict() == pytest.approx(c.as_dict())
    assert aji(relabelled, pred) == pytest.approx(aji(true, pred))
    # At IoU > 0.5 PQ is symmetric (FP and FN swap).
    s = panoptic_quality(pred, true)
    assert (s.tp, s.fp, s.fn) == (c.tp, c.fn, c.fp) and s.pq == pytest.approx(c.pq)
