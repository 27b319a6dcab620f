"""Hand-computed cases and edge cases for every metric."""

import math

import numpy as np
import pytest

from cerberus_cli.core.errors import InputError
from cerberus_cli.metrics import (
    aji,
    aji_plus,
    average_precision,
    class_pq_counts,
    classification_metrics,
    compact,
    detection_counts,
    dice,
    mpq,
    mpq_plus,
    overlap_from_maps,
    pair_centroids,
    panoptic_quality,
    vote_classes,
)
from cerberus_cli.metrics.labels import centroids, lookup_classes


def row(*spans, width=24, dtype=np.int32):
    """A 1 x width label map; spans are (id, start, stop) column ranges."""
    m = np.zeros((1, width), dtype=dtype)
    for i, a, b in spans:
        m[0, a:b] = i
    return m


# --- PQ ---------------------------------------------------------------------------

def test_pq_hand_computed():
    true = row((1, 0, 10), (2, 12, 16))
    pred = row((5, 0, 8), (9, 18, 20))  # IoU(1, 5) = 8 / 10; 9 touches nothing
    c = panoptic_quality(true, pred)
    assert (c.tp, c.fp, c.fn) == (1, 1, 1)
    assert c.dq == pytest.approx(0.5)
    assert c.sq == pytest.approx(0.8)
    assert c.pq == pytest.approx(0.4)


def test_pq_threshold_is_strict():
    true = row((1, 0, 4))
    pred = row((1, 0, 2))  # IoU exactly 0.5: not a match at 0.5
    assert panoptic_quality(true, pred).tp == 0
    assert panoptic_quality(true, pred, threshold=0.49).tp == 1


def test_pq_hungarian_below_half():
    # IoU(A,P) = IoU(B,P) = IoU(B,Q) = 1/3: the best unique pairs are A-P and B-Q.
    true = row((1, 0, 4), (2, 4, 8))
    pred = row((1, 2, 6), (2, 6, 10))
    c = panoptic_quality(true, pred, threshold=0.3)
    assert (c.tp, c.fp, c.fn) == (2, 0, 0)
    assert c.sq == pytest.approx(1 / 3)
    assert c.pq == pytest.approx(1 / 3)
    assert panoptic_quality(true, pred).pq == 0.0


def test_pq_threshold_range():
    with pytest.raises(ValueError):
        panoptic_quality(row((1, 0, 2)), row((1, 0, 2)), threshold=1.0)


def test_pq_edge_cases():
    empty = row()
    one = row((3, 0, 4))
    both = panoptic_quality(empty, empty)
    assert (both.tp, both.fp, both.fn) == (0, 0, 0)
    assert math.isnan(both.pq) and math.isnan(both.dq) and math.isnan(both.sq)
    for t, p in ((empty, one), (one, empty)):
        c = panoptic_quality(t, p)
        assert (c.dq, c.sq, c.pq) == (0.0, 0.0, 0.0)


def test_ids_dtypes_and_offsets_do_not_matter():
    true = row((1, 0, 10), (2, 12, 16))
    pred = row((5, 0, 8), (9, 12, 15))
    ref = panoptic_quality(true, pred).as_dict()
    for t, p in (
        (true * 1000 + (true > 0) * 7, pred),                   # ids far from 1, gaps
        (true.astype(np.uint16), pred.astype(np.uint8)),        # different dtypes
        (true.astype(np.float32), pred.astype(np.int64)),       # integer-valued floats
        (np.where(true == 1, 2, np.where(true == 2, 1, 0)), pred),  # swapped ids
        (true.astype(np.uint64) + (true > 0) * (2**40), pred),  # ids beyond a lookup table
    ):
        assert panoptic_quality(t, p).as_dict() == ref


def test_bad_maps_are_errors():
    with pytest.raises(InputError, match="differ in shape"):
        panoptic_quality(np.zeros((4, 4), int), np.zeros((4, 5), int))
    with pytest.raises(InputError, match="negative"):
        panoptic_quality(np.full((2, 2), -1), np.zeros((2, 2), int))
    with pytest.raises(InputError, match="non-integer"):
        panoptic_quality(np.full((2, 2), 0.5), np.zeros((2, 2)))
    with pytest.raises(InputError, match="2-D"):
        panoptic_quality(np.zeros((2, 2, 2), int), np.zeros((2, 2, 2), int))
    with pytest.raises(InputError, match="differ in shape"):
        dice(np.zeros((4, 4)), np.zeros((5, 4)))


# --- mPQ / mPQ+ ---------------------------------------------------------------------

def _class_counts(true, true_cls, pred, pred_cls, classes=(1, 2)):
    ov = overlap_from_maps(true, pred)
    return class_pq_counts(ov, np.array(true_cls), np.array(pred_cls), classes)


def test_mpq_and_mpq_plus_hand_computed():
    # Image 1: a class-1 nucleus found exactly, plus a class-2 false positive.
    img1 = _class_counts(row((1, 0, 4)), [1], row((1, 0, 4), (2, 10, 12)), [1, 2])
    # Image 2: a class-2 nucleus found exactly.
    img2 = _class_counts(row((1, 0, 4)), [2], row((1, 0, 4)), [2])
    m = mpq([img1, img2])
    assert m.per_class == {1: 1.0, 2: 1.0}  # image 1 skipped for class 2 (absent in truth)
    assert m.value == 1.0
    mp = mpq_plus([img1, img2])
    assert mp.per_class[1] == 1.0
    assert mp.per_class[2] == pytest.approx(2 / 3)  # TP 1, FP 1 pooled
    assert mp.value == pytest.approx(5 / 6)


def test_class_mismatch_is_fn_and_fp():
    counts = _class_counts(row((1, 0, 4)), [1], row((1, 0, 4)), [2])
    assert (counts[1].tp, counts[1].fn, counts[1].fp) == (0, 1, 0)
    assert (counts[2].tp, counts[2].fn, counts[2].fp) == (0, 0, 1)
    assert math.isnan(mpq([counts]).per_class[2])   # never in the truth: undefined
    assert mpq_plus([counts]).per_class[2] == 0.0   # only predicted: scores 0


def test_class_absent_everywhere_is_undefined():
    counts = _class_counts(row((1, 0, 4)), [1], row((1, 0, 4)), [1])
    assert math.isnan(mpq_plus([counts]).per_class[2])
    assert mpq_plus([counts]).value == 1.0


# --- AJI ------------------------------------------------------------------------------

def test_aji_hand_computed():
    true = row((1, 0, 4), (2, 4, 8))
    pred = row((1, 0, 6))
    # AJI: both true instances pick the one prediction: (4 + 2) / (6 + 8).
    assert aji(true, pred) == pytest.approx(6 / 14)
    # AJI+: unique pairs, A-P (4 / 6) and B unpaired (4): 4 / 10.
    assert aji_plus(true, pred) == pytest.approx(0.4)


def test_aji_true_instance_without_overlap():
    true = row((1, 0, 4), (2, 10, 12))
    pred = row((7, 0, 4), (8, 20, 22))
    # C = 4; U = 4 + 2 (true 2, untouched) + 2 (prediction 8, unused).
    assert aji(true, pred) == pytest.approx(0.5)
    assert aji_plus(true, pred) == pytest.approx(0.5)


def test_aji_edge_cases():
    empty, one = row(), row((1, 0, 3))
    assert math.isnan(aji(empty, empty)) and math.isnan(aji_plus(empty, empty))
    assert aji(one, empty) == 0.0 and aji(empty, one) == 0.0
    assert aji_plus(one, empty) == 0.0 and aji_plus(empty, one) == 0.0


# --- Dice -----------------------------------------------------------------------------

def test_dice_hand_computed_and_edges():
    assert dice(row((1, 0, 4)), row((3, 2, 8))) == pytest.approx(2 * 2 / (4 + 6))
    assert math.isnan(dice(row(), row()))
    assert dice(row((1, 0, 4)), row()) == 0.0
    assert dice(row((1, 0, 4)).astype(bool), row((9, 0, 4)).astype(np.float64)) == 1.0


# --- labels -------------------------------------------------------------------------

def test_compact_areas_and_centroids():
    m = np.zeros((5, 5), np.uint16)
    m[0:2, 0:2] = 40
    m[4, 1:4] = 7
    lab = compact(m)
    assert lab.ids.tolist() == [7, 40]
    assert lab.areas.tolist() == [3, 4]
    assert centroids(lab).tolist() == [[2.0, 4.0], [0.5, 0.5]]


def test_vote_classes_ignores_no_label_unless_alone():
    inst = row((1, 0, 6), (2, 6, 9), (3, 9, 12))
    cls = row((1, 0, 2), (2, 2, 3), (0, 3, 6), (0, 6, 9), (2, 9, 10), (1, 10, 11))
    # Instance 1: 2 px of class 1, 1 of class 2, 3 of no-label -> 1.
    # Instance 2: only no-label -> 0. Instance 3: tie 1 vs 2 -> lower id, 1.
    assert vote_classes(compact(inst), cls, 3).tolist() == [1, 0, 1]
    with pytest.raises(InputError, match="expected ids 0..2"):
        vote_classes(compact(inst), row((5, 0, 1)), 3)


def test_lookup_classes_needs_every_id():
    lab = compact(row((4, 0, 2), (9, 3, 5)))
    assert lookup_classes(lab, np.array([9, 4]), np.array([3, 1])).tolist() == [1, 3]
    with pytest.raises(InputError, match="id 9 has no class"):
        lookup_classes(lab, np.array([4]), np.array([1]))


# --- detection ------------------------------------------------------------------------

def test_pair_centroids_keeps_the_most_pairs():
    # Nearest-first greedy pairing would take t0-p0 (distance 1) and leave t1 alone;
    # the best pairing uses both.
    t = np.array([[0.0, 0.0], [-5.0, 0.0]])
    p = np.array([[1.0, 0.0], [-4.0, 0.0]])
    ti, pi = pair_centroids(t, np.array([[-4.5, 0.0], [5.0, 0.0]]), radius=6)
    assert sorted(zip(ti.tolist(), pi.tolist())) == [(0, 1), (1, 0)]
    ti, pi = pair_centroids(t, p, radius=6)
    assert sorted(zip(ti.tolist(), pi.tolist())) == [(0, 0), (1, 1)]
    assert pair_centroids(t, p, radius=0.5)[0].size == 0
    assert pair_centroids(t, p[:1] - [1, 0], radius=0)[0].tolist() == [0]  # distance 0 pairs


def test_detection_f1_and_hovernet_class_f1():
    true = np.array([[0, 0], [20, 0], [40, 0], [60, 0]], float)
    pred = np.array([[1, 0], [21, 0], [41, 0], [90, 0]], float)
    c = detection_counts(true, pred, np.array([1, 1, 2, 2]), np.array([1, 2, 2, 1]))
    # Pairs (1,1), (1,2), (2,2); unpaired true class 2; unpaired pred class 1.
    assert c.f1 == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))
    assert c.accuracy == pytest.approx(2 / 3)
    # Class 1: TP 1, FP 0, FN 1 (paired as 2), FP_d 1 -> 2 / (2 + 2 + 1).
    assert c.class_f1(1) == pytest.approx(2 / 5)
    # Class 2: TP 1, FP 1, FN 0, FN_d 1 -> 2 / (2 + 2 + 1).
    assert c.class_f1(2) == pytest.approx(2 / 5)
    assert math.isnan(c.class_f1(5))
    pooled = c + detection_counts(true[:1], np.zeros((0, 2)), np.array([1]), np.array([]))
    assert pooled.f1 == pytest.approx(6 / 9)  # one more unpaired true nucleus
    assert math.isnan(detection_counts(np.zeros((0, 2)), np.zeros((0, 2))).f1)


# --- patch classification -------------------------------------------------------------

def test_average_precision_hand_computed_with_ties():
    # Scores .9(+) .8(-) .7(+) .7(-) .1(+): thresholds .9, .8, .7, .1
    # recall 1/3, 1/3, 2/3, 1; precision 1, 1/2, 1/2, 3/5.
    y = np.array([1, 0, 1, 0, 1], bool)
    s = np.array([0.9, 0.8, 0.7, 0.7, 0.1])
    assert average_precision(y, s) == pytest.approx(1 / 3 * 1 + 1 / 3 * 0.5 + 1 / 3 * 0.6)
    assert math.isnan(average_precision(np.zeros(3, bool), np.ones(3)))


def test_classification_metrics_hand_computed():
    true = np.array([0, 1, 1, 2])
    probs = np.array([[.8, .1, .1, 0], [.2, .7, .1, 0], [.5, .3, .2, 0], [.1, .1, .8, 0]])
    r = classification_metrics(true, probabilities=probs)
    assert r.confusion[:3, :3].tolist() == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    assert r.accuracy == 0.75
    assert r.f1[:3] == pytest.approx([2 / 3, 2 / 3, 1.0])
    assert math.isnan(r.f1[3])  # class 3 neither true nor predicted
    assert r.mean_f1 == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    assert r.ap.tolist()[:3] == [1.0, 1.0, 1.0] and math.isnan(r.ap[3])
    assert r.mean_ap == 1.0
    with pytest.raises(InputError, match="expected"):
        classification_metrics(true, probabilities=probs, n_classes=5)
    with pytest.raises(InputError, match="0..2"):
        classification_metrics(np.array([0, 3]), np.array([0, 1]), n_classes=3)
