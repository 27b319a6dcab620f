"""End-to-end evaluation: folders of label maps, slide object files, tissue patches, CLI."""

import csv
import json
import uuid

import cv2
import geopandas as gpd
import numpy as np
import pytest
import scipy.io
import shapely
from click.testing import CliRunner

from cerberus_cli.cli import main
from cerberus_cli.core.errors import InputError
from cerberus_cli.metrics import aji, panoptic_quality
from cerberus_cli.metrics.evaluate import evaluate, evaluate_slides
from cerberus_cli.metrics.pairing import slide_key

# Boxes (id, class, y0, y1, x0, x1) of two small images; predictions miss, shift,
# mislabel and add objects.
TRUE = {
    "a": [(1, 2, 2, 10, 2, 10), (2, 3, 12, 20, 2, 10), (3, 2, 2, 10, 20, 30)],
    "b": [(7, 6, 5, 15, 5, 15), (9, 2, 20, 28, 20, 28)],
}
PRED = {
    "a": [(4, 2, 2, 10, 3, 10), (5, 2, 12, 20, 2, 10), (6, 3, 24, 30, 24, 30)],
    "b": [(1, 6, 5, 15, 6, 15), (2, 2, 20, 28, 21, 28), (3, 6, 0, 3, 0, 3)],
}
SHAPE = (32, 32)


def paint(boxes):
    inst = np.zeros(SHAPE, np.uint16)
    cls = np.zeros(SHAPE, np.uint8)
    for i, c, y0, y1, x0, x1 in boxes:
        inst[y0:y1, x0:x1] = i
        cls[y0:y1, x0:x1] = c
    return inst, cls


def write_folders(tmp_path):
    """GT as Lizard .mat files, predictions as 16-bit PNG + class-map PNG folders."""
    gt, pr, pc = (tmp_path / n for n in ("gt", "pred", "pred_cls"))
    for d in (gt, pr, pc):
        d.mkdir()
    for name, boxes in TRUE.items():
        inst, _ = paint(boxes)
        scipy.io.savemat(gt / f"{name}.mat", {
            "inst_map": inst.astype(np.int32),
            "id": np.array([[b[0]] for b in boxes]), "class": np.array([[b[1]] for b in boxes])})
    for name, boxes in PRED.items():
        inst, cls = paint(boxes)
        cv2.imwrite(str(pr / f"{name}.png"), inst)
        cv2.imwrite(str(pc / f"{name}.png"), cls)
    return gt, pr, pc


def test_folders_match_direct_computation(tmp_path):
    gt, pr, pc = write_folders(tmp_path)
    r = evaluate(gt, pr, ["all"], "nuclei", pred_classes=pc)
    per = {row["image"]: row for row in r.per_image}
    for name in TRUE:
        t, p = paint(TRUE[name])[0], paint(PRED[name])[0]
        assert per[name]["pq"] == pytest.approx(panoptic_quality(t, p).pq)
        assert per[name]["aji"] == pytest.approx(aji(t, p))
    assert r.overall["pq"] == pytest.approx(np.mean([per[n]["pq"] for n in TRUE]))
    # a: 2 TP (IoU 56/64, 1), FP 1, FN 1; b: 2 TP (IoU 0.9, 56/64), FP 1.
    assert (per["a"]["tp"], per["a"]["fp"], per["a"]["fn"]) == (2, 1, 1)
    assert per["a"]["pq"] == pytest.approx((2 / 3) * (56 / 64 + 1) / 2)
    # Classes: epithelial(2): a: TP 1 (box 1), FN 1 (box 3), plus a mislabelled
    # match (true 3 -> pred 2) = FP for 2, FN for 3; b: TP 1.
    pcs = r.per_class
    assert pcs["epithelial"]["n_true"] == 3 and pcs["epithelial"]["n_pred"] == 3
    assert pcs["lymphocyte"]["mpq"] == 0.0  # one true, never matched with its class
    assert pcs["neutrophil"]["n_true"] == 0 and pcs["neutrophil"]["mpq"] != pcs["neutrophil"]["mpq"]
    # connective(6): b: true 7 matched by pred 1 (IoU 0.9) + FP pred 3 -> DQ 2/3.
    assert pcs["connective"]["mpq+"] == pytest.approx((2 / 3) * 0.9)
    assert r.overall["f1_d"] == pytest.approx(2 * 4 / (2 * 4 + 2 + 1))


def test_synthetic_dataset_layout_is_read_directly(tmp_path):
    from cerberus_cli.synthetic.dataset import write_tile_dataset
    root = tmp_path / "ph"
    write_tile_dataset(root, count=2, size=96, seed=3, tasks=("nuclei", "gland"))
    r = evaluate(root, root / "nuclei", ["pq", "mpq", "mpq+"], "nuclei")
    assert r.overall == {"pq": 1.0, "dq": 1.0, "sq": 1.0, "mpq": 1.0, "mpq+": 1.0}
    # Predictions: the gland instances with one gland removed, as NPY.
    pred = tmp_path / "pred"
    pred.mkdir()
    for f in sorted((root / "gland" / "instances").iterdir()):
        m = cv2.imread(str(f), cv2.IMREAD_UNCHANGED)
        ids = np.unique(m[m > 0])
        np.save(pred / f"{f.stem}.npy", np.where(m == ids[-1], 0, m).astype(np.int64))
    r = evaluate(root, pred, ["pq"], "gland")
    for row in r.per_image:
        n = row["n_true"]
        assert (row["tp"], row["fn"], row["fp"]) == (n - 1, 1, 0)
        assert row["pq"] == pytest.approx((n - 1) / (n - 0.5))


def test_unpaired_shape_and_class_errors(tmp_path):
    gt, pr, pc = write_folders(tmp_path)
    (pr / "b.png").unlink()
    with pytest.raises(InputError, match=r"b\.mat has no prediction .*--allow-missing"):
        evaluate(gt, pr, ["pq"], "nuclei")
    r = evaluate(gt, pr, ["pq"], "nuclei", allow_missing=True)
    assert r.settings["unpaired"]["true_only"] == ["b"] and len(r.per_image) == 1
    cv2.imwrite(str(pr / "a.png"), np.zeros((8, 8), np.uint16))
    with pytest.raises(InputError, match=r"a\.png: shape \(8, 8\) differs"):
        evaluate(gt, pr, ["pq"], "nuclei", allow_missing=True)
    cv2.imwrite(str(pr / "a.png"), paint(PRED["a"])[0])
    with pytest.raises(InputError, match="mpq needs classes"):
        evaluate(gt, pr, ["mpq"], "nuclei", allow_missing=True)
    # "all" without prediction classes quietly leaves out the class metrics.
    assert "mpq" not in evaluate(gt, pr, ["all"], "nuclei", allow_missing=True).overall
    with pytest.raises(InputError, match="no class map for a.png"):
        (tmp_path / "no_classes").mkdir()
        evaluate(gt, pr, ["pq"], "nuclei", pred_classes=tmp_path / "no_classes", allow_missing=True)
    cv2.imwrite(str(pr / "a.png"), np.dstack([paint(PRED["a"])[0].astype(np.uint8)] * 2 + [np.zeros(SHAPE, np.uint8)]))
    with pytest.raises(InputError, match="colour image"):
        evaluate(gt, pr, ["pq"], "nuclei", allow_missing=True)


def test_hovernet_mat_and_conic_npy(tmp_path):
    gt, pr = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir(), pr.mkdir()
    inst, cls = paint(TRUE["a"])
    # HoVer-Net/CoNSeP style: inst_type ordered by id 1..N.
    scipy.io.savemat(gt / "a.mat", {"inst_map": inst.astype(np.int32),
                                    "inst_type": np.array([[2], [3], [2]])})
    np.save(pr / "a.npy", np.dstack([inst, cls]).astype(np.int32))  # CoNIC: ids + classes
    r = evaluate(gt, pr, ["mpq", "mpq+"], "nuclei")
    assert r.overall["mpq"] == 1.0 and r.overall["mpq+"] == 1.0


def record_frame(boxes, task="nuclei", offset=(0, 0)):
    """Objects in the read_objects layout: boxes as polygons in level-0 px."""
    oy, ox = offset
    rows = []
    for _, c, y0, y1, x0, x1 in boxes:
        g = shapely.box(x0 + ox, y0 + oy, x1 + ox, y1 + oy)
        rows.append({"uuid": str(uuid.uuid4()), "task": task, "class_id": c, "class_name": f"c{c}",
                     "probability": 1.0, "centroid_x": g.centroid.x, "centroid_y": g.centroid.y,
                     "area_um2": g.area * 0.25, "perimeter_um": g.length * 0.5,
                     "parent_uuid": None, "geometry": g})
    gdf = gpd.GeoDataFrame(rows, geometry="geometry", crs=None)
    return gdf.astype({"class_id": "int16", "probability": "float32"})


def write_slide(path, boxes_by_image, extra_task=None):
    """One slide holding both images side by side (b shifted right by 100 px)."""
    parts = [record_frame(boxes_by_image["a"]), record_frame(boxes_by_image["b"], offset=(0, 100))]
    if extra_task:
        parts.append(record_frame(boxes_by_image["a"], task=extra_task, offset=(200, 0)))
    gdf = gpd.GeoDataFrame(np.concatenate([p.values for p in parts]), columns=parts[0].columns,
                           geometry="geometry", crs=None).astype(parts[0].dtypes.to_dict())
    if path.suffix == ".parquet":
        gdf.to_parquet(path)
    else:
        path.write_text(gdf.to_json())
    return path


def test_slide_polygons_agree_with_rasters(tmp_path):
    t = write_slide(tmp_path / "s1.truth.parquet", TRUE, extra_task="lumen")
    p = write_slide(tmp_path / "s1.parquet", PRED)
    r = evaluate_slides([t], [p], "nuclei", ["all"])
    # The same boxes as one raster image: pixel-aligned boxes give identical IoUs.
    big_t = np.zeros((32, 132), np.int32)
    big_p = np.zeros((32, 132), np.int32)
    big_t[:, :32], big_t[:, 100:] = paint(TRUE["a"])[0], paint(TRUE["b"])[0] + 10 * (paint(TRUE["b"])[0] > 0)
    big_p[:, :32], big_p[:, 100:] = paint(PRED["a"])[0], paint(PRED["b"])[0] + 10 * (paint(PRED["b"])[0] > 0)
    c = panoptic_quality(big_t, big_p)
    row = r.per_image[0]
    assert (row["tp"], row["fp"], row["fn"]) == (c.tp, c.fp, c.fn)
    assert row["pq"] == pytest.approx(c.pq) and row["aji"] == pytest.approx(aji(big_t, big_p))
    assert row["dice"] == pytest.approx(2 * np.sum((big_t > 0) & (big_p > 0)) / ((big_t > 0).sum() + (big_p > 0).sum()))
    assert r.per_class["connective"]["mpq+"] == pytest.approx((2 / 3) * 0.9)
    # GeoJSON predictions in a folder, paired by slide name with the truth.
    pdir = tmp_path / "out"
    pdir.mkdir()
    write_slide(pdir / "s1.geojson", PRED)
    write_slide(pdir / "s1.tissue.parquet", TRUE)  # segment's tissue regions: not objects of s1
    cv2.imwrite(str(pdir / "s1.overlay.png"), np.zeros((4, 4, 3), np.uint8))
    (pdir / "s1.run.json").write_text("{}")
    tdir = tmp_path / "gt"
    tdir.mkdir()
    t.rename(tdir / t.name)
    write_slide(tdir / "s2.truth.parquet", PRED)
    write_slide(pdir / "s2.parquet", PRED)
    r2 = evaluate(tdir, pdir, ["pq", "mpq+"], "nuclei")
    per = {row["image"]: row for row in r2.per_image}
    assert set(per) == {"s1", "s2"} and per["s2"]["pq"] == 1.0
    assert per["s1"]["pq"] == pytest.approx(r.per_image[0]["pq"])
    (pdir / "s2.parquet").unlink()
    with pytest.raises(InputError, match=r"s2\.truth\.parquet has no prediction"):
        evaluate(tdir, pdir, ["pq"], "nuclei")
    lum = evaluate_slides([tdir / "s1.truth.parquet"], [tdir / "s1.truth.parquet"], "lumen", ["pq"])
    assert lum.overall["pq"] == 1.0 and lum.per_image[0]["n_true"] == 3
    assert slide_key(tdir / "x.y.truth.parquet") == "x.y"
    assert slide_key(pdir / "x.y.geojson.gz") == "x.y"


def tissue_fixture(tmp_path):
    true = tmp_path / "kather"
    for folder, names in {"TUM": ["p1", "p2"], "STR": ["p3"], "ADI": ["p4"]}.items():
        (true / folder).mkdir(parents=True)
        for n in names:
            cv2.imwrite(str(true / folder / f"{n}.png"), np.zeros((4, 4, 3), np.uint8))
    pred = tmp_path / "pred.csv"
    probs = {"p1": (1, 0.9), "p2": (5, 0.9), "p3": (5, 0.8), "p4": (8, 0.7)}
    with open(pred, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image", "class_id"] + [f"prob_{k}" for k in range(9)])
        for n, (c, p) in probs.items():
            row = [(1 - p) / 8] * 9
            row[c] = p
            w.writerow([n, c] + row)
    return true, pred


def test_tissue_patches(tmp_path):
    true, pred = tissue_fixture(tmp_path)
    r = evaluate(true, pred, ["all"], "tissue")
    assert r.overall["accuracy"] == 0.75
    # F1: abnormal epithelium (TUM) 2/3, stroma 2/3, adipose 1 -> mean over 3 classes.
    assert r.overall["mean_f1"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    # AP: TUM scores p1 .9 (+), p4 .0375, p3 .025, p2 .0125 (+): P 1 at R .5, 2/4 at R 1.
    assert r.per_class["abnormal epithelium"]["ap"] == pytest.approx(0.5 + 0.5 * 0.5)
    assert r.confusion[1][5] == 1 and r.confusion[5][5] == 1


def test_cli_end_to_end(tmp_path):
    gt, pr, pc = write_folders(tmp_path)
    out = tmp_path / "report.json"
    args = ["evaluate", "--task", "nuclei", "--true", str(gt), "--pred", str(pr),
            "--pred-classes", str(pc), "-m", "pq", "-m", "mpq+", "-o", str(out)]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "mpq+" in res.output and "epithelial" in res.output
    data = json.loads(out.read_text())
    assert data["metrics"] == ["pq", "mpq+"] and set(data["overall"]) == {"pq", "dq", "sq", "mpq+"}
    rows = list(csv.DictReader(open(tmp_path / "report.csv")))
    assert {"image": "", "class": "", "metric": "pq", "value": repr(data["overall"]["pq"])} in rows
    before = out.read_text()
    res = CliRunner().invoke(main, args)  # never replaces a report silently
    assert res.exit_code == 2 and "already exists" in res.output and out.read_text() == before
    (pr / "a.png").unlink()
    res = CliRunner().invoke(main, args[:-2])
    assert res.exit_code == 2 and "error:" in res.output and "a.mat has no prediction" in res.output
    res = CliRunner().invoke(main, args[:-2] + ["--allow-missing"])
    assert res.exit_code == 0 and "skipped 1 unpaired" in res.output
    true, pred = tissue_fixture(tmp_path)
    res = CliRunner().invoke(main, ["evaluate", "--task", "tissue", "--true", str(true),
                                    "--pred", str(pred), "-m", "all"])
    assert res.exit_code == 0 and "confusion" in res.output and "0.7500" in res.output


def test_empty_images_are_undefined_and_reported(tmp_path):
    gt, pr, pc = write_folders(tmp_path)
    scipy.io.savemat(gt / "c.mat", {"inst_map": np.zeros(SHAPE, np.int32),
                                    "id": np.zeros((0, 1)), "class": np.zeros((0, 1))})
    cv2.imwrite(str(pr / "c.png"), np.zeros(SHAPE, np.uint16))
    cv2.imwrite(str(pc / "c.png"), np.zeros(SHAPE, np.uint8))
    r = evaluate(gt, pr, ["all"], "nuclei", pred_classes=pc)
    per = {row["image"]: row for row in r.per_image}
    assert per["c"]["pq"] != per["c"]["pq"] and per["c"]["dice"] != per["c"]["dice"]  # NaN
    assert r.settings["n_both_empty"] == 1 and r.image_summary("pq").n == 2
    assert r.overall["pq"] == pytest.approx((per["a"]["pq"] + per["b"]["pq"]) / 2)
    data = json.loads(r.to_json())
    assert data["per_image"][2]["pq"] is None and data["per_image_summary"]["pq"]["n"] == 2
    # Without prediction classes, "all" reports what it left out.
    r = evaluate(gt, pr, ["all"], "nuclei")
    assert "mpq" not in r.overall and "no classes" in r.settings["not_computed"]


def test_overlapping_polygons_and_option_errors(tmp_path):
    from cerberus_cli.metrics.polygons import overlap_from_polygons, polygon_dice
    from cerberus_cli.metrics.pq import pq_counts
    true = np.array([shapely.box(0, 0, 10, 10)])
    # Two overlapping predictions both above IoU 0.5: only the better one matches.
    pred = np.array([shapely.box(0, 0, 9, 10), shapely.box(0, 0, 10, 10)])
    c = pq_counts(overlap_from_polygons(true, pred))
    assert (c.tp, c.fp, c.fn, c.iou_sum) == (1, 1, 0, 1.0)
    assert polygon_dice(true, pred) == 1.0  # union of overlapping predictions
    bowtie = shapely.Polygon([(0, 0), (10, 10), (10, 0), (0, 10)])  # invalid: self-crossing
    assert pq_counts(overlap_from_polygons(np.array([bowtie]), np.array([bowtie]))).pq == 1.0
    t = write_slide(tmp_path / "s.truth.parquet", TRUE)
    with pytest.raises(InputError, match="threshold"):
        evaluate_slides([t], [t], "nuclei", ["pq"], threshold=1.0)
    with pytest.raises(InputError, match="radius"):
        evaluate(t, t, ["pq"], "nuclei", radius=-1)


def region_frame(regions):
    """Tissue regions (class, x0, y0, x1, y1) in the read_objects layout."""
    frame = record_frame([(0, c, y0, y1, x0, x1) for c, x0, y0, x1, y1 in regions], task="tissue")
    return frame


def test_tissue_regions_by_area(tmp_path):
    # Truth: tumour [0,10)x[0,10) and stroma [10,20)x[0,10). Prediction: tumour
    # [0,12)x[0,10) (20 px² of it over stroma), nothing else, plus adipose outside.
    region_frame([(1, 0, 0, 10, 10), (5, 10, 0, 20, 10)]).to_parquet(tmp_path / "s.truth.parquet")
    out = tmp_path / "out"
    out.mkdir()
    region_frame([(1, 0, 0, 12, 10), (8, 30, 0, 35, 2)]).to_parquet(out / "s.tissue.parquet")
    record_frame(TRUE["a"]).to_parquet(out / "s.parquet")  # the nuclei file is not used
    r = evaluate(tmp_path / "s.truth.parquet", out, ["all"], "tissue")
    cm = np.array(r.confusion)
    assert cm[1, 1] == 100 and cm[5, 1] == 20 and cm[5, 0] == 80 and cm[0, 8] == 10
    assert r.overall["accuracy"] == pytest.approx(100 / 210)
    # F1 tumour = 2*100 / (2*100 + 20 + 0); stroma 0; adipose 0.
    assert r.per_class["abnormal epithelium"]["f1"] == pytest.approx(200 / 220)
    assert r.overall["mean_f1"] == pytest.approx((200 / 220) / 3)
    assert "map" not in r.metrics
    with pytest.raises(InputError, match="mAP needs per-patch probabilities"):
        evaluate(tmp_path / "s.truth.parquet", out, ["map"], "tissue")
    res = CliRunner().invoke(main, ["evaluate", "--task", "tissue", "--true",
                                    str(tmp_path / "s.truth.parquet"), "--pred", str(out)])
    assert res.exit_code == 0, res.output
    assert "0.4762" in res.output and "confusion" in res.output


def test_phantom_slide_truth(tmp_path):
    from cerberus_cli.synthetic.slide import write_phantom_slide as write_phantom
    write_phantom(tmp_path / "ph.svs", size=(320, 320), seed=4)
    truth = tmp_path / "ph.truth.parquet"
    # The folder holds ph.truth.parquet and ph.truth.geojson: GeoParquet is used.
    r = evaluate(tmp_path, tmp_path / "ph.truth.geojson", ["all"], "nuclei")
    assert r.settings["true"] == [str(truth)]
    # The GeoJSON copy keeps coordinates to 0.01 px (QuPath's precision): IoU just under 1.
    assert r.overall["pq"] == pytest.approx(1.0, abs=2e-3) and r.overall["f1_d"] == 1.0
    assert r.overall["mpq+"] == pytest.approx(1.0, abs=2e-3)
    # Predictions: every fourth nucleus missed, the rest exact.
    gdf = gpd.read_parquet(truth)
    nuclei = np.flatnonzero((gdf["task"] == "nuclei").to_numpy())
    dropped = nuclei[::4]
    out = tmp_path / "seg"
    out.mkdir()
    gdf.drop(index=dropped).to_parquet(out / "ph.parquet")
    res = CliRunner().invoke(main, ["evaluate", "--true", str(truth), "--pred", str(out),
                                    "-m", "pq", "-m", "mpq+", "-o", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    row = json.loads((tmp_path / "r.json").read_text())["per_image"][0]
    n, k = nuclei.size, dropped.size
    assert (row["tp"], row["fn"], row["fp"]) == (n - k, k, 0)
    assert row["pq"] == pytest.approx((n - k) / (n - k / 2))
