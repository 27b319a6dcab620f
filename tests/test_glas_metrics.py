"""GlaS gland metrics: hand-computed values, edge cases, a brute-force reference, CLI."""

import csv
import json
import math
import random

import cv2
import geopandas as gpd
import numpy as np
import pytest
import shapely
from click.testing import CliRunner
from scipy.spatial.distance import cdist
from shapely.geometry import box

from cerberus_cli.cli import main
from cerberus_cli.core.errors import InputError
from cerberus_cli.core.records import make_record
from cerberus_cli.metrics import GlasCounts, glas_counts, glas_metrics, mask_hausdorff
from cerberus_cli.metrics.evaluate import evaluate, evaluate_slides
from cerberus_cli.metrics.glas import PolygonMasks, label_distances, polygon_distances
from cerberus_cli.metrics.labels import compact
from cerberus_cli.metrics.overlap import overlap_from_labels
from cerberus_cli.metrics.polygons import overlap_from_polygons
from cerberus_cli.metrics.scoring import instance_metric_names
from cerberus_cli.outputs.geoparquet import write_geoparquet

# Boxes (id, y0, y1, x0, x1), ends exclusive, on a 10 x 10 image.
TRUE = [(1, 1, 5, 1, 5),      # G1: rows 1-4, cols 1-4, 16 px
        (2, 6, 9, 5, 9)]      # G2: rows 6-8, cols 5-8, 12 px
PRED = [(1, 1, 5, 2, 5),      # S1: rows 1-4, cols 2-4, 12 px, inside G1
        (2, 6, 9, 7, 10),     # S2: rows 6-8, cols 7-9, 9 px, 6 of them on G2
        (3, 8, 10, 0, 2)]     # S3: rows 8-9, cols 0-1, 4 px, touching nothing
SHAPE = (10, 10)

# Object F1: S1 covers 12/16 of G1 > 1/2: TP. S2 covers 6/12 of G2, exactly half,
# not more: FP. S3 overlaps nothing: FP. G2 has no TP: FN. TP 1, FP 2, FN 1:
# P = 1/3, R = 1/2, F1 = 2PR/(P+R) = 2/5.
F1 = 2 / 5
# Object Dice. Dice(G1, S1) = 2*12/(16+12) = 6/7; Dice(G2, S2) = 2*6/(12+9) = 4/7.
# Segmented side, weights |S_j|/25: (12*6/7 + 9*4/7 + 4*0)/25 = 108/175.
# Truth side, weights |G_i|/28: (16*6/7 + 12*4/7)/28 = 36/49.
# Dice_obj = (108/175 + 36/49)/2 = 828/1225.
OBJECT_DICE = 828 / 1225
# Object Hausdorff, between pixel centres (row, col):
# H(G1, S1) = 1 (G1's column 1 is one pixel from S1's column 2; S1 lies in G1).
# H(G2, S2) = 2 (G2's column 5 is two from S2's column 7; S2's column 9 one from G2).
# S3 overlaps nothing, so its partner is the truth object nearest by Hausdorff
# distance. Both are 4 px away at the closest (a gap of 4 rows or 4 columns), but
# H(S3, G1) = |(1,4) - (8,1)| = sqrt(58) while H(S3, G2) = |(6,8) - (8,1)| = sqrt(53)
# (the farthest G2 pixel from S3; S3's farthest from G2 is (9,0), sqrt(26) away).
# Segmented side: (12*1 + 9*2 + 4*sqrt(53))/25; truth side: (16*1 + 12*2)/28 = 10/7.
OBJECT_HAUSDORFF = ((12 + 18 + 4 * math.sqrt(53)) / 25 + 10 / 7) / 2  # 1.8967


def paint(boxes, shape=SHAPE):
    m = np.zeros(shape, np.uint16)
    for i, y0, y1, x0, x1 in boxes:
        m[y0:y1, x0:x1] = i
    return m


def polygons(boxes, dy=0, dx=0):
    """The boxes as level-0 polygons: pixel (r, c) is the square [c, c+1) x [r, r+1)."""
    return np.array([box(x0 + dx, y0 + dy, x1 + dx, y1 + dy) for _, y0, y1, x0, x1 in boxes],
                    dtype=object)


def test_hand_computed_example():
    g = glas_metrics(paint(TRUE), paint(PRED))
    assert (g.tp, g.fp, g.fn) == (1, 2, 1)
    assert g.precision == pytest.approx(1 / 3) and g.recall == pytest.approx(1 / 2)
    assert g.f1 == pytest.approx(F1, rel=1e-12)
    assert g.object_dice == pytest.approx(OBJECT_DICE, rel=1e-12)
    assert g.object_hausdorff == pytest.approx(OBJECT_HAUSDORFF, rel=1e-12)
    # The partner distances themselves: S3 pairs with G2 (sqrt 53), not G1 (sqrt 58).
    lt, lp = compact(paint(TRUE)), compact(paint(PRED))
    d_true, d_pred = label_distances(lt, lp, overlap_from_labels(lt, lp))
    np.testing.assert_allclose(d_true, [1, 2])
    np.testing.assert_allclose(d_pred, [1, 2, math.sqrt(53)])


def test_truth_without_overlap_takes_the_nearest_segmented_object():
    # Swapped roles: now the truth object S3 overlaps nothing and takes the nearest
    # segmented object. Dice_obj and H_obj are symmetric in G and S; F1 is not:
    # G1 covers all of S1 and G2 covers 6/9 of S2: TP 2, FP 0, FN 1 (S3).
    g = glas_metrics(paint(PRED), paint(TRUE))
    assert (g.tp, g.fp, g.fn) == (2, 0, 1) and g.f1 == pytest.approx(4 / 5)
    assert g.object_dice == pytest.approx(OBJECT_DICE, rel=1e-12)
    assert g.object_hausdorff == pytest.approx(OBJECT_HAUSDORFF, rel=1e-12)


def test_false_negative_when_partner_covers_half_or_less():
    # One truth object, one prediction covering 2 of its 4 pixels: the prediction is a
    # FP and the truth object a FN (the challenge page's definition), F1 = 0.
    true = np.array([[1, 1, 1, 1, 0, 0]])
    pred = np.array([[0, 0, 7, 7, 7, 7]])
    g = glas_metrics(true, pred)
    assert (g.tp, g.fp, g.fn, g.f1) == (0, 1, 1, 0.0)
    # Three of four: TP; the segmented object's extra pixels do not matter.
    g = glas_metrics(true, np.array([[0, 7, 7, 7, 7, 7]]))
    assert (g.tp, g.fp, g.fn, g.f1) == (1, 0, 0, 1.0)
    # Dice 2*3/(4+5) each way; H: column 5 of the prediction is 2 from column 3.
    assert g.object_dice == pytest.approx(6 / 9) and g.object_hausdorff == 2.0


def test_partner_ties_go_to_the_lowest_id():
    # S covers 2 px of each of G5 and G9: its partner is G5, Dice 2*2/(4+3) for
    # the segmented side, H(S, G5) = 2 (S's column 4 to G5's column 2).
    true = np.array([[5, 5, 5, 9, 9, 9, 0]])
    pred = np.array([[0, 3, 3, 3, 3, 0, 0]])
    lt, lp = compact(true), compact(pred)
    ov = overlap_from_labels(lt, lp)
    d_true, d_pred = label_distances(lt, lp, ov)
    assert d_pred.tolist() == [2.0]
    g = glas_counts(ov, (d_true, d_pred))
    assert g.pred_dice == pytest.approx(4 * 2 * 2 / 7)


def test_empty_sides():
    t, p, empty = paint(TRUE), paint(PRED), np.zeros(SHAPE, np.uint16)
    diagonal = math.hypot(*SHAPE)
    # No prediction: nothing detected, Dice 0, every truth object at the diagonal.
    g = glas_metrics(t, empty)
    assert (g.tp, g.fp, g.fn) == (0, 0, 2) and g.f1 == 0.0 and g.recall == 0.0
    assert math.isnan(g.precision)
    assert g.object_dice == 0.0 and g.object_hausdorff == pytest.approx(diagonal)
    # No truth: every prediction a FP, Dice 0, Hausdorff the diagonal.
    g = glas_metrics(empty, p)
    assert (g.tp, g.fp, g.fn) == (0, 3, 0) and g.f1 == 0.0 and math.isnan(g.recall)
    assert g.object_dice == 0.0 and g.object_hausdorff == pytest.approx(diagonal)
    # Both empty: undefined.
    g = glas_metrics(empty, empty)
    assert all(math.isnan(v) for v in (g.f1, g.object_dice, g.object_hausdorff))
    # Pooled with a scored image, an empty pair changes nothing.
    both = glas_metrics(t, p) + g
    assert both.f1 == pytest.approx(F1) and both.object_dice == pytest.approx(OBJECT_DICE)
    # Without distances the Hausdorff value is NaN, not 0.
    assert math.isnan(glas_metrics(t, p, hausdorff=False).object_hausdorff)


def test_pooling_weights_over_all_objects():
    # Image b: one 4 px truth object found exactly. Pooled: TP 2, FP 2, FN 1;
    # Dice weights over all objects: segmented (108/7 + 4)/29, truth (144/7 + 4)/32.
    a = glas_metrics(paint(TRUE), paint(PRED))
    b = glas_metrics(np.pad(np.ones((2, 2), int), 4), np.pad(np.ones((2, 2), int), 4))
    pooled = a + b
    assert pooled.f1 == pytest.approx(4 / 7)
    assert pooled.object_dice == pytest.approx(((108 / 7 + 4) / 29 + (144 / 7 + 4) / 32) / 2)
    assert pooled.object_hausdorff == pytest.approx(
        ((30 + 4 * math.sqrt(53)) / 29 + 40 / 32) / 2)


def test_mask_hausdorff_is_exact_and_checked():
    a = np.zeros((5, 7), bool)
    b = np.zeros((5, 7), bool)
    a[0, 0], b[4, 6] = True, True
    assert mask_hausdorff(a, b) == pytest.approx(math.hypot(4, 6))
    with pytest.raises(ValueError, match="non-empty"):
        mask_hausdorff(a, np.zeros_like(a))
    with pytest.raises(InputError, match="differ in shape"):
        glas_metrics(np.zeros((3, 3)), np.zeros((3, 4)))


# --- a brute-force reference --------------------------------------------------------

def reference(true, pred):
    """The official MATLAB logic object by object, with all-pairs pixel distances.

    F1: FN = n_G - TP (the challenge page). Both empty: NaN; one empty: the
    documented values (0, 0, image diagonal).
    """
    tids = [i for i in np.unique(true) if i]
    pids = [j for j in np.unique(pred) if j]
    if not tids and not pids:
        return math.nan, math.nan, math.nan
    if not tids or not pids:
        return 0.0, 0.0, math.hypot(*true.shape)

    def pix(m, i):
        return np.argwhere(m == i)

    def haus(a, b):
        d = cdist(a, b)
        return max(d.min(axis=1).max(), d.min(axis=0).max())

    def partner(mask, other):
        vals = other[mask]
        vals = vals[vals > 0]
        if not vals.size:
            return None
        ids, counts = np.unique(vals, return_counts=True)
        return ids[np.argmax(counts)]  # first maximum: the lowest id

    tp = 0
    for j in pids:
        g = partner(pred == j, true)
        if g is not None and np.sum((pred == j) & (true == g)) > 0.5 * np.sum(true == g):
            tp += 1
    f1 = 2 * tp / (2 * tp + (len(pids) - tp) + (len(tids) - tp))

    def side(own, own_ids, other, other_ids):
        total = float(sum(np.sum(own == i) for i in own_ids))
        dice = hd = 0.0
        for i in own_ids:
            m = own == i
            o = partner(m, other)
            w = m.sum() / total
            if o is None:
                hd += w * min(haus(pix(own, i), pix(other, k)) for k in other_ids)
            else:
                dice += w * 2 * np.sum(m & (other == o)) / (m.sum() + np.sum(other == o))
                hd += w * haus(pix(own, i), pix(other, o))
        return dice, hd

    ds, hs = side(pred, pids, true, tids)
    dg, hg = side(true, tids, pred, pids)
    return f1, (ds + dg) / 2, (hs + hg) / 2


def random_map(rng, shape, n):
    m = np.zeros(shape, np.int32)
    for _ in range(n):
        y, x = rng.integers(0, shape[0] - 2), rng.integers(0, shape[1] - 2)
        h, w = rng.integers(2, 9, size=2)
        m[y:y + h, x:x + w] = rng.integers(1, 40)
    return m


@pytest.mark.parametrize("seed", range(12))
def test_agrees_with_brute_force_reference(seed):
    rng = np.random.default_rng(seed)
    shape = (int(rng.integers(12, 30)), int(rng.integers(12, 30)))
    true = random_map(rng, shape, int(rng.integers(0, 7)))
    pred = random_map(rng, shape, int(rng.integers(0, 7)))
    g = glas_metrics(true, pred)
    want = reference(true, pred)
    got = (g.f1, g.object_dice, g.object_hausdorff)
    np.testing.assert_allclose(got, want, rtol=1e-12, equal_nan=True)


# --- polygons ---------------------------------------------------------------------------

def test_polygons_give_the_map_values():
    tg, pg = polygons(TRUE), polygons(PRED)
    ov = overlap_from_polygons(tg, pg)
    g = glas_counts(ov, polygon_distances(tg, pg, ov))
    assert (g.tp, g.fp, g.fn) == (1, 2, 1)
    assert g.object_dice == pytest.approx(OBJECT_DICE)
    assert g.object_hausdorff == pytest.approx(OBJECT_HAUSDORFF)
    # A gland with a hole (a 2 x 2 lumen) against its filled outline: the ring lies
    # inside the filled square, and every hole pixel is 1 px from the ring.
    ring = np.array([shapely.Polygon(box(0, 0, 6, 6).exterior.coords,
                                     [box(2, 2, 4, 4).exterior.coords])], dtype=object)
    filled = np.array([box(0, 0, 6, 6)], dtype=object)
    ov = overlap_from_polygons(ring, filled)
    d_true, d_pred = polygon_distances(ring, filled, ov)
    assert d_true.tolist() == [1.0] and d_pred.tolist() == [1.0]
    ring_map = np.ones((6, 6), int)
    ring_map[2:4, 2:4] = 0
    assert glas_metrics(ring_map, np.ones((6, 6), int)).object_hausdorff == 1.0
    # One side empty: the diagonal of the objects' extent (rows 1-8, cols 1-8).
    d_true, _ = polygon_distances(tg, np.array([], dtype=object),
                                  overlap_from_polygons(tg, np.array([], dtype=object)))
    assert d_true.tolist() == [math.hypot(8, 8)] * 2


def gland_records(boxes, dy=0, dx=0, seed=0):
    rng = random.Random(seed)
    return [make_record(g, "gland", 1, "gland", 0.9, 0.25, uuid=rng)
            for g in polygons(boxes, dy, dx)]


def test_slide_objects_give_the_map_values(tmp_path):
    # Two 10 x 10 images side by side on one slide, the second a perfect match.
    truth = write_geoparquet(tmp_path / "s.truth.parquet",
                             gland_records(TRUE) + gland_records(TRUE, dx=100, seed=1))
    pred = write_geoparquet(tmp_path / "s.parquet",
                            gland_records(PRED, seed=2) + gland_records(TRUE, dx=100, seed=3))
    r = evaluate_slides([truth], [pred], "gland", ["glas"])
    row = r.per_image[0]
    a, b = glas_metrics(paint(TRUE), paint(PRED)), glas_metrics(paint(TRUE), paint(TRUE))
    pooled = a + b
    assert (row["object_tp"], row["object_fp"], row["object_fn"]) == (3, 2, 1)
    assert row["object_f1"] == pytest.approx(pooled.f1)
    assert row["object_dice"] == pytest.approx(pooled.object_dice)
    assert row["object_hausdorff"] == pytest.approx(pooled.object_hausdorff)
    assert "level-0 px" in r.settings["hausdorff"]


# --- folders and the CLI ----------------------------------------------------------------

def write_folders(tmp_path):
    """Two images: a = the hand-computed example, b = one gland found exactly."""
    gt, pr = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir(), pr.mkdir()
    one = [(4, 3, 7, 3, 7)]
    cv2.imwrite(str(gt / "a.png"), paint(TRUE))
    cv2.imwrite(str(pr / "a.png"), paint(PRED))
    cv2.imwrite(str(gt / "b.png"), paint(one))
    cv2.imwrite(str(pr / "b.png"), paint([(9, 3, 7, 3, 7)]))
    return gt, pr


def test_folder_values_and_all_for_glands(tmp_path):
    gt, pr = write_folders(tmp_path)
    r = evaluate(gt, pr, ["all"], "gland")
    per = {row["image"]: row for row in r.per_image}
    assert per["a"]["object_f1"] == pytest.approx(F1)
    assert per["a"]["object_dice"] == pytest.approx(OBJECT_DICE)
    assert per["a"]["object_hausdorff"] == pytest.approx(OBJECT_HAUSDORFF)
    assert (per["b"]["object_f1"], per["b"]["object_dice"], per["b"]["object_hausdorff"]) == \
        (1.0, 1.0, 0.0)
    # Overall: counts and areas pooled over the images (b: 16 px, one TP).
    assert r.overall["object_f1"] == pytest.approx(2 * 2 / (2 * 2 + 2 + 1))
    assert r.overall["object_precision"] == pytest.approx(2 / 4)
    assert r.overall["object_recall"] == pytest.approx(2 / 3)
    assert r.overall["object_dice"] == pytest.approx(
        ((108 / 7 + 16) / 41 + (144 / 7 + 16) / 44) / 2)
    # The per-image means are in the summary.
    assert r.image_summary("object_f1").mean == pytest.approx((F1 + 1) / 2)
    assert r.image_summary("object_hausdorff").mean == pytest.approx(OBJECT_HAUSDORFF / 2)
    assert "image diagonal" in r.settings["hausdorff"]
    # "all" holds the GlaS metrics for glands only; by name they work for any task.
    assert "object_f1" not in evaluate(gt, pr, ["all"], "nuclei").overall
    assert set(evaluate(gt, pr, ["object-dice"], "nuclei").overall) == {"object_dice"}
    assert instance_metric_names(["glas", "pq"], False) == [
        "pq", "object-f1", "object-dice", "object-hausdorff"]


def test_cli_glas_report(tmp_path):
    gt, pr = write_folders(tmp_path)
    out = tmp_path / "glas.json"
    res = CliRunner().invoke(main, ["evaluate", "--task", "gland", "-m", "glas",
                                    "--true", str(gt), "--pred", str(pr), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "object_hausdorff" in res.output and "object_dice" in res.output
    data = json.loads(out.read_text())
    assert data["metrics"] == ["object-f1", "object-dice", "object-hausdorff"]
    assert set(data["overall"]) == {"object_f1", "object_precision", "object_recall",
                                    "object_dice", "object_hausdorff"}
    assert data["overall"]["object_f1"] == pytest.approx(4 / 7)
    assert data["per_image_summary"]["object_f1"]["mean"] == pytest.approx((F1 + 1) / 2)
    a = next(row for row in data["per_image"] if row["image"] == "a")
    assert (a["object_tp"], a["object_fp"], a["object_fn"]) == (1, 2, 1)
    assert a["object_dice"] == pytest.approx(OBJECT_DICE)
    assert a["object_hausdorff"] == pytest.approx(OBJECT_HAUSDORFF)
    rows = list(csv.DictReader(open(tmp_path / "glas.csv")))
    assert {"image": "a", "class": "", "metric": "object_hausdorff",
            "value": repr(a["object_hausdorff"])} in rows


def test_cli_bad_input_is_one_line(tmp_path):
    gt, pr = write_folders(tmp_path)
    base = ["evaluate", "--task", "gland", "--true", str(gt), "--pred", str(pr)]
    res = CliRunner().invoke(main, base + ["-m", "object-hd"])
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "object-hd" in lines[0]
    cv2.imwrite(str(pr / "b.png"), np.zeros((8, 8), np.uint16))
    res = CliRunner().invoke(main, base + ["-m", "glas"])
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and "b.png: shape (8, 8) differs" in lines[0]


def test_counts_add_up():
    assert GlasCounts() + GlasCounts(tp=1, fn=2) == GlasCounts(tp=1, fn=2)


def test_polygon_raster_is_the_pixel_centre_rule():
    # A star with a hole, holding an island, beside a triangle: one MultiPolygon.
    t = np.linspace(0, 2 * np.pi, 23)[:-1]
    rad = np.where(np.arange(t.size) % 2, 9.3, 17.7)
    star = shapely.Polygon(np.c_[30.2 + rad * np.cos(t), 25.6 + rad * np.sin(t)],
                           [shapely.Point(30.2, 25.6).buffer(5.1).exterior.coords])
    island = shapely.Point(30.2, 25.6).buffer(2.3)
    tri = shapely.Polygon([(52.3, 3.7), (61.9, 14.2), (50.1, 20.8)])
    geom = shapely.MultiPolygon([star, island, tri])
    masks = PolygonMasks(np.array([geom], dtype=object))
    y0, x0, y1, x1 = masks.boxes[0].tolist()
    got = masks.crop(0, y0, x0, (y1 - y0, x1 - x0))
    rr, cc = np.mgrid[y0:y1, x0:x1]
    want = shapely.contains_xy(geom, cc + 0.5, rr + 0.5)
    assert got.sum() > 500 and np.array_equal(got, want)
    assert want.any(axis=1)[[0, -1]].all() and want.any(axis=0)[[0, -1]].all()  # tight box
    # Too thin for any pixel centre: the pixel under a point on its surface.
    sliver = PolygonMasks(np.array([box(3.6, 7.2, 3.9, 9.0)], dtype=object))
    assert sliver.boxes.tolist() == [[8, 3, 9, 4]]


def test_empty_outline_is_refused_naming_the_files(tmp_path):
    truth = write_geoparquet(tmp_path / "s.truth.parquet", gland_records(TRUE))
    rec = gland_records(PRED, seed=2)
    pred = write_geoparquet(tmp_path / "s.parquet", rec)
    frame = gpd.read_parquet(pred)
    frame.loc[1, "geometry"] = shapely.Polygon()
    frame.to_parquet(pred)
    with pytest.raises(InputError, match=r"s\.truth\.parquet vs .*s\.parquet: object 2 of 3 "
                                         r"has an empty outline"):
        evaluate_slides([truth], [pred], "gland", ["object-hausdorff"])
    # F1 and object Dice need no pixels: the empty object is a FP of area 0.
    r = evaluate_slides([truth], [pred], "gland", ["object-f1", "object-dice"])
    assert r.per_image[0]["object_fp"] == 2
