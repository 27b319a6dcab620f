"""Label-map ground truth against object-file predictions, and predictions scored in the
truth's own (coarser) classes: rasterising, pairing, class maps, CLI, the real CoNSeP crop."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from shapely.geometry import box

from cerberus_cli.cli import main
from cerberus_cli.core.errors import InputError
from cerberus_cli.core.records import make_record
from cerberus_cli.core.vocabulary import CONSEP_CLASSES, GLAND_TYPES, NUCLEUS_TYPES
from cerberus_cli.metrics.class_map import load_class_map
from cerberus_cli.metrics.evaluate import evaluate, evaluate_folders, evaluate_maps_objects
from cerberus_cli.metrics.polygons import rasterise_polygons
from cerberus_cli.outputs.geoparquet import write_geoparquet
from cerberus_cli.postprocess.polygons import label_polygons

DATA = Path(__file__).parent / "data"
FAST = ["--tile", "208", "--workers", "0", "--post-workers", "0", "--batch-size", "2",
        "--no-overlay"]
TYPES = [c.name for c in NUCLEUS_TYPES]
CONSEP_JSON = {str(i): n for i, n in enumerate(CONSEP_CLASSES)}
SHAPE = (64, 64)


def label_map(boxes: list[tuple[int, int, int, int, int]], shape=SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """(instances, classes) of boxes (class, y0, y1, x0, x1); instance k + 1 = box k."""
    inst = np.zeros(shape, np.uint16)
    cls = np.zeros(shape, np.uint8)
    for k, (c, y0, y1, x0, x1) in enumerate(boxes):
        inst[y0:y1, x0:x1] = k + 1
        cls[y0:y1, x0:x1] = c
    return inst, cls


def write_objects(path: Path, geoms, names: list[str], metadata: dict | None = None,
                  task: str = "nuclei") -> Path:
    """Objects as ``cerberus segment`` writes them (GeoParquet, level-0 px)."""
    rng = random.Random(0)
    ids = TYPES if task == "nuclei" else [c.name for c in GLAND_TYPES]
    records = [make_record(g, task, ids.index(n), n, 0.9, 0.25, uuid=rng)
               for g, n in zip(geoms, names)]
    return write_geoparquet(path, records, metadata, overwrite=True)


def traced(inst: np.ndarray) -> list:
    """The project's own tracing of every instance of a label map (as segment does)."""
    ids = np.unique(inst[inst > 0]).tolist()
    return label_polygons(inst.astype(np.int32), ids, simplify=0.0)


def write_dataset(root: Path, truths: dict[str, list], classes_json: dict | None) -> Path:
    """A dataset root: instances/NAME.png (16-bit), classes/NAME.png, classes.json."""
    for sub in ("images", "instances", "classes"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for name, boxes in truths.items():
        inst, cls = label_map(boxes)
        cv2.imwrite(str(root / "instances" / f"{name}.png"), inst)
        cv2.imwrite(str(root / "classes" / f"{name}.png"), cls)
        cv2.imwrite(str(root / "images" / f"{name}.png"), np.zeros((*SHAPE, 3), np.uint8))
    if classes_json is not None:
        (root / "classes.json").write_text(json.dumps(classes_json))
    return root


# --- rasterising -------------------------------------------------------------------------

def test_traced_outlines_rasterise_back_to_their_pixels():
    rng = np.random.default_rng(3)
    inst = np.zeros((120, 140), np.int32)
    for k in range(1, 40):
        y, x = rng.integers(4, 116), rng.integers(4, 136)
        m = np.zeros(inst.shape, np.uint8)
        cv2.ellipse(m, (int(x), int(y)), (int(rng.integers(1, 8)), int(rng.integers(1, 8))),
                    float(rng.integers(0, 180)), 0, 360, 1, -1)
        inst[(m > 0) & (inst == 0)] = k
    inst[90:110, 100:120] = 50          # a ring: the hole must stay empty
    inst[95:105, 105:115] = 0
    inst[5, 10:60] = 51                 # one pixel wide
    inst[60, 0:3] = 52                  # on the map's edge
    inst[119, 139] = 53                 # the last pixel
    inst[30:32, 30] = 54                # two parts touching at a corner
    inst[32, 31] = 54
    ids = np.unique(inst[inst > 0])
    raster = rasterise_polygons(np.array(label_polygons(inst, ids.tolist(), simplify=0.0),
                                         dtype=object), inst.shape)
    back = np.where(raster > 0, ids[np.maximum(raster, 1) - 1], 0)
    assert np.array_equal(back, inst)


def test_rasterising_overlaps_and_bounds():
    big, small = box(0, 0, 10, 10), box(2, 2, 4, 4)
    raster = rasterise_polygons(np.array([small, big], dtype=object), (12, 12))
    assert (raster == 1).sum() == 4 and (raster == 2).sum() == 96  # the smaller keeps its pixels
    # An outline just past the edge holds no further pixel centre: it fits.
    assert rasterise_polygons(np.array([box(0, 0, 12.3, 5)], dtype=object), (12, 12)).sum() == 60
    with pytest.raises(InputError, match=r"object 2 of 2 covers pixels x 10\.\.12, .* outside "
                                         r"the 12 x 12 px map"):
        rasterise_polygons(np.array([big, box(10, 0, 13, 2)], dtype=object), (12, 12))


# --- known values ------------------------------------------------------------------------

def test_known_pq_of_hand_built_polygons(tmp_path):
    # Truth: three 10 x 10 boxes. Predictions: one of 10 x 8 inside the first (IoU 0.8),
    # the second exact, the third missed, and one false positive.
    inst, _ = label_map([(2, 0, 10, 0, 10), (2, 20, 30, 20, 30), (2, 40, 50, 40, 50)])
    cv2.imwrite(str(tmp_path / "a.png"), inst)
    pred = write_objects(tmp_path / "a.parquet",
                         [box(0, 0, 10, 8), box(20, 20, 30, 30), box(50, 0, 60, 6)],
                         ["epithelial"] * 3)
    r = evaluate(tmp_path / "a.png", pred, ["pq", "dice", "object-f1"], "nuclei")
    row = r.per_image[0]
    assert (row["tp"], row["fp"], row["fn"]) == (2, 1, 1)
    assert row["dq"] == pytest.approx(2 / 3) and row["sq"] == pytest.approx(0.9)
    assert row["pq"] == pytest.approx(0.6)
    assert row["dice"] == pytest.approx(2 * 180 / (300 + 240))
    assert r.overall["object_f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert r.settings["matching"].startswith("predicted polygons rasterised")


def test_objects_score_as_the_maps_they_were_traced_from(tmp_path):
    """Maps vs maps and maps vs the same objects as polygons give the same report."""
    rng = np.random.default_rng(5)
    truth = tmp_path / "truth"
    pmaps, pcls, objects = (tmp_path / n for n in ("pred_maps", "pred_classes", "objects"))
    for d in (truth / "instances", truth / "classes", pmaps, pcls, objects):
        d.mkdir(parents=True)
    for name in ("img_0", "img_1"):
        boxes, pboxes = [], []
        for k in range(12):
            y0, x0 = 20 * (k // 4) + 2, 16 * (k % 4) + 2
            h, w = int(rng.integers(6, 14)), int(rng.integers(6, 12))
            c = int(rng.integers(1, 7))
            boxes.append((c, y0, y0 + h, x0, x0 + w))
            if k % 5:  # every fifth missed; the rest shifted, some relabelled
                dy, dx = int(rng.integers(-2, 3)), int(rng.integers(-2, 3))
                pc = c if rng.random() < 0.7 else int(rng.integers(1, 7))
                pboxes.append((pc, max(y0 + dy, 0), y0 + h + dy, max(x0 + dx, 0), x0 + w + dx))
        pboxes.append((3, 60, 64, 60, 64))  # a false positive in the corner
        ti, tc = label_map(boxes)
        pi, pcm = label_map(pboxes)
        cv2.imwrite(str(truth / "instances" / f"{name}.png"), ti)
        cv2.imwrite(str(truth / "classes" / f"{name}.png"), tc)
        cv2.imwrite(str(pmaps / f"{name}.png"), pi)
        cv2.imwrite(str(pcls / f"{name}.png"), pcm)
        write_objects(objects / f"{name}.parquet", traced(pi), [TYPES[b[0]] for b in pboxes])
    (objects / "img_0.overlay.png").write_bytes(b"")  # segment's other outputs are ignored
    metrics = ["all", "glas"]
    maps = evaluate_folders(truth, pmaps, "nuclei", metrics, pred_classes=pcls)
    mixed = evaluate(truth, objects, metrics, "nuclei")
    assert set(mixed.overall) == set(maps.overall) >= {"pq", "mpq", "mpq+", "aji+", "f1_d",
                                                       "object_f1", "object_hausdorff"}
    for key, value in maps.overall.items():
        assert mixed.overall[key] == pytest.approx(value, nan_ok=True), key
    assert list(mixed.per_class) == list(maps.per_class)
    for name, values in maps.per_class.items():
        assert mixed.per_class[name] == pytest.approx(values, nan_ok=True), name
    for a, b in zip(mixed.per_image, maps.per_image):
        assert a == pytest.approx(b, nan_ok=True)
    assert 0 < maps.overall["pq"] < 1
    # One object file against a folder of maps pairs by name; the other map is unpaired.
    with pytest.raises(InputError, match=r"img_0\.png has no prediction in .*img_1\.parquet"):
        evaluate(truth, objects / "img_1.parquet", ["pq"], "nuclei")
    alone = evaluate(truth, objects / "img_1.parquet", ["pq"], "nuclei", allow_missing=True)
    assert [row["image"] for row in alone.per_image] == ["img_1"]
    assert alone.per_image[0]["pq"] == pytest.approx(maps.per_image[1]["pq"])
    assert alone.settings["unpaired"]["true_only"] == ["img_0"]
    # One map file and one object file pair whatever their names.
    one = evaluate_maps_objects(truth / "instances" / "img_0.png", objects / "img_1.parquet",
                                "nuclei", ["pq", "mpq"], true_classes=truth / "classes" / "img_0.png")
    assert one.per_image[0]["image"] == "img_0"
    assert one.per_image[0]["n_pred"] == maps.per_image[1]["n_pred"]


def test_glas_metrics_of_segment_objects_against_bmp_annotations(tmp_path):
    """GlaS-style truth (8-bit BMP instance maps) against gland objects, by name."""
    truth, out = tmp_path / "truth", tmp_path / "out"
    truth.mkdir(), out.mkdir()
    inst = np.zeros((40, 60), np.uint8)
    inst[2:20, 2:20], inst[22:38, 30:58] = 1, 2
    cv2.imwrite(str(truth / "testA_1.bmp"), inst)
    # Gland 1 found exactly (as surface epithelium: classes do not count), gland 2 half.
    write_objects(out / "testA_1.parquet", [box(2, 2, 20, 20), box(30, 22, 44, 38)],
                  ["surface epithelium", "gland"], task="gland")
    write_objects(out / "testA_1.mask.parquet", [box(0, 0, 60, 40)], ["gland"], task="gland")
    r = evaluate(truth, out, ["glas"], "gland")
    # Gland 2's half (224 of 448 px) is not more than half: FP, and gland 2 FN.
    assert (r.per_image[0]["object_tp"], r.per_image[0]["object_fp"],
            r.per_image[0]["object_fn"]) == (1, 1, 1)
    assert r.overall["object_f1"] == pytest.approx(0.5)
    dice_2 = 2 * 224 / (448 + 224)
    assert r.overall["object_dice"] == pytest.approx(
        0.5 * ((324 + 448 * dice_2) / 772 + (324 + 224 * dice_2) / 548))
    assert r.overall["object_hausdorff"] == pytest.approx(
        0.5 * (448 * 14 / 772 + 224 * 14 / 548))


# --- class maps --------------------------------------------------------------------------

#: CoNSeP truth (class, y0, y1, x0, x1) and predictions (fine class, box).
CONSEP_TRUTH = [(2, 0, 8, 0, 8), (2, 0, 8, 20, 28), (3, 20, 28, 0, 8), (4, 20, 28, 20, 28),
                (1, 40, 48, 0, 8)]
CONSEP_PRED = [("lymphocyte", box(0, 0, 8, 6)),    # inflammatory, IoU 0.75
               ("plasma", box(20, 0, 28, 8)),      # inflammatory, exact
               ("epithelial", box(0, 20, 8, 28)),  # epithelial, exact
               ("lymphocyte", box(20, 20, 28, 28)),  # spindle-shaped read as inflammatory
               ("epithelial", box(0, 40, 8, 48))]  # "other": no prediction can be other


def consep_case(tmp_path: Path, classes_json: dict | None = CONSEP_JSON) -> tuple[Path, Path]:
    root = write_dataset(tmp_path / "consep", {"t1": CONSEP_TRUTH}, classes_json)
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    write_objects(out / "t1.parquet", [g for _, g in CONSEP_PRED], [n for n, _ in CONSEP_PRED])
    return root, out


def test_consep_class_map_scores_in_the_truth_classes(tmp_path):
    root, out = consep_case(tmp_path)
    r = evaluate(root, out, ["pq", "mpq", "mpq+", "detection"], "nuclei", class_map="consep")
    pc = r.per_class
    assert list(pc) == ["other", "inflammatory", "epithelial", "spindle-shaped"]
    # inflammatory: TP 2 (IoU 0.75, 1), FP 1 -> DQ 2/2.5, SQ 0.875; epithelial: TP 1,
    # FP 1 (the "other" nucleus) -> DQ 2/3; spindle-shaped: FN 1; other: FN 1.
    assert pc["inflammatory"]["mpq"] == pytest.approx(0.8 * 0.875)
    assert pc["epithelial"]["mpq"] == pytest.approx(2 / 3)
    assert pc["spindle-shaped"]["mpq"] == 0.0 and pc["other"]["mpq"] == 0.0
    assert pc["inflammatory"]["mpq+"] == pytest.approx(0.7)
    assert (pc["other"]["n_true"], pc["other"]["n_pred"]) == (1, 0)
    assert pc["inflammatory"]["n_pred"] == 3
    assert r.overall["mpq"] == pytest.approx((0.7 + 2 / 3) / 4)
    assert r.overall["mpq_predictable"] == pytest.approx((0.7 + 2 / 3) / 3)
    assert r.overall["mpq+_predictable"] == pytest.approx((0.7 + 2 / 3) / 3)
    assert r.overall["pq"] == pytest.approx((0.75 + 4) / 5)  # classes aside: 5 TP
    cm = r.settings["class_map"]
    assert cm["unpredictable"] == ["other"] and cm["unmapped_pred"] == []
    assert cm["pred_to_truth"] == {"neutrophil": "inflammatory", "epithelial": "epithelial",
                                   "lymphocyte": "inflammatory", "plasma": "inflammatory",
                                   "eosinophil": "inflammatory", "connective": "spindle-shaped"}
    # A JSON file of the same map (train --class-map's format) scores the same.
    spec = tmp_path / "map.json"
    spec.write_text(json.dumps({"1": None, "2": ["neutrophil", "lymphocyte", "plasma", "eosinophil"],
                                "3": "epithelial", "4": ["connective"]}))
    r2 = evaluate(root, out, ["mpq", "mpq+"], "nuclei", class_map=str(spec))
    for name, values in r2.per_class.items():
        assert values == pytest.approx({m: pc[name][m] for m in values}), name
    assert r2.overall["mpq"] == pytest.approx(r.overall["mpq"])


def test_class_map_applies_to_label_map_predictions_too(tmp_path):
    root, _ = consep_case(tmp_path)
    pm, pcm = tmp_path / "pm", tmp_path / "pc"
    pm.mkdir(), pcm.mkdir()
    raster = rasterise_polygons(np.array([g for _, g in CONSEP_PRED], dtype=object), SHAPE)
    lut = np.array([0] + [TYPES.index(n) for n, _ in CONSEP_PRED], np.uint8)
    cv2.imwrite(str(pm / "t1.png"), raster.astype(np.uint16))
    cv2.imwrite(str(pcm / "t1.png"), lut[raster])
    r = evaluate(root, pm, ["mpq"], "nuclei", pred_classes=pcm, class_map="consep")
    assert r.per_class["inflammatory"]["mpq"] == pytest.approx(0.7)
    assert r.overall["mpq_predictable"] == pytest.approx((0.7 + 2 / 3) / 3)
    # One map file against another, whatever their names.
    (pm / "t1.png").rename(pm / "other_name.png")
    single = evaluate(root / "instances" / "t1.png", pm / "other_name.png", ["mpq"], "nuclei",
                      true_classes=root / "classes" / "t1.png", pred_classes=pcm / "t1.png",
                      class_map="consep")
    assert single.overall == pytest.approx(r.overall)
    with pytest.raises(InputError, match="not a class map file"):
        evaluate(root / "instances" / "t1.png", pm / "other_name.png", ["pq"], "nuclei",
                 true_classes=root / "classes")


def test_class_map_refusals(tmp_path):
    root, out = consep_case(tmp_path)
    # CoNSeP's ids read as cerberus' would be wrong: refused without a map ...
    with pytest.raises(InputError, match=r"classes\.json: the ground truth names class 1 'other'.*"
                                         r"--class-map"):
        evaluate(root, out, ["mpq"], "nuclei")
    assert evaluate(root, out, ["pq"], "nuclei").overall["pq"] > 0  # ... unless classes are unused
    bad = {"0": "background", "1": "tumour", "2": "inflammatory"}
    (root / "classes.json").write_text(json.dumps(bad))
    with pytest.raises(InputError, match=r"names class 1 'tumour', but the consep class map"):
        evaluate(root, out, ["mpq"], "nuclei", class_map="consep")
    with pytest.raises(InputError, match="neither a preset"):
        load_class_map("lizard", "nuclei")
    with pytest.raises(InputError, match="a nuclei class map, not one for gland"):
        load_class_map("consep", "gland")
    ambiguous = tmp_path / "amb.json"
    ambiguous.write_text(json.dumps({"1": "epithelial", "2": "epithelial"}))
    with pytest.raises(InputError, match="'epithelial' lies in truth classes"):
        load_class_map(str(ambiguous), "nuclei")
    unknown = tmp_path / "unk.json"
    unknown.write_text(json.dumps({"1": "tumour"}))
    with pytest.raises(InputError, match="unknown nuclei class"):
        load_class_map(str(unknown), "nuclei")
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"1": "epithelial", "2": ["lymphocyte", "plasma"]}))
    tc = load_class_map(str(partial), "nuclei")
    assert tc.names == ("background", "class 1", "class 2")
    assert tc.unmapped == ("neutrophil", "eosinophil", "connective")


# --- CLI ---------------------------------------------------------------------------------

def test_cli_consep_report(tmp_path):
    root, out = consep_case(tmp_path)
    (out / "t1.run.json").write_text("{}")
    report = tmp_path / "r.json"
    res = CliRunner().invoke(main, ["evaluate", "--true", str(root), "--pred", str(out),
                                    "--class-map", "consep", "-m", "pq", "-m", "mpq",
                                    "-o", str(report)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    for name in ("other", "inflammatory", "epithelial", "spindle-shaped", "mpq_predictable"):
        assert name in text
    assert "no predicted class maps to other (the truth holds 1)" in text
    assert "lymphocyte, plasma, eosinophil -> inflammatory" in text
    data = json.loads(report.read_text())
    assert set(data["per_class"]) == {"other", "inflammatory", "epithelial", "spindle-shaped"}
    assert data["overall"]["mpq"] == pytest.approx((0.7 + 2 / 3) / 4)


@pytest.mark.parametrize("case", ["beyond", "size", "class", "pred_classes", "foreign",
                                  "preset", "unpaired", "reversed"])
def test_cli_bad_inputs_are_one_line_errors(tmp_path, case):
    root, out = consep_case(tmp_path)
    truth = root / "instances" / "t1.png"
    pred = out / "t1.parquet"
    extra: list[str] = ["--class-map", "consep"]
    expect = ""
    if case == "beyond":
        write_objects(pred, [box(60, 60, 70, 64)], ["epithelial"])
        expect = f"{pred} does not fit the ground truth {truth}: object 1 of 1 covers pixels x 60..69"
    elif case == "size":
        write_objects(pred, [box(0, 0, 4, 4)], ["epithelial"],
                      {"slide": {"width": 1000, "height": 1000}})
        expect = f"{pred}: objects of a 1000 x 1000 px image, but the ground truth {truth} is 64 x 64 px"
    elif case == "class":
        rng = random.Random(1)
        write_geoparquet(pred, [make_record(box(0, 0, 4, 4), "nuclei", 9, "tumour", 0.9, 0.25,
                                            uuid=rng)], overwrite=True)
        expect = f"{pred}: class 'tumour' is not a nuclei class"
    elif case == "pred_classes":
        extra += ["--pred-classes", str(root / "classes")]
        expect = "--pred-classes applies to label maps"
    elif case == "foreign":
        extra = ["-m", "mpq"]
        expect = "the ground truth names class 1 'other'"
    elif case == "preset":
        extra = ["--class-map", "pannuke"]
        expect = "--class-map pannuke: neither a preset (consep) nor a file"
    elif case == "unpaired":
        pred.rename(out / "t2.parquet")
        expect = "t1.png has no prediction"
    elif case == "reversed":
        root, out = out, root  # objects as truth, maps as predictions
        extra = []
        expect = "the predictions must be object files too"
    res = CliRunner().invoke(main, ["evaluate", "--true", str(root), "--pred", str(out), *extra])
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert expect in lines[0] and "Traceback" not in res.output


# --- the real CoNSeP crop ----------------------------------------------------------------

def test_real_consep_crop_truth_as_objects_scores_one(tmp_path):
    """The crop's own nuclei, traced and named in cerberus' types, score PQ 1 in CoNSeP's
    classes (the "other" class is absent from this crop)."""
    inst = cv2.imread(str(DATA / "consep_test10_crop.instances.png"), cv2.IMREAD_UNCHANGED)
    cls = cv2.imread(str(DATA / "consep_test10_crop.classes.png"), cv2.IMREAD_UNCHANGED)
    ids = np.unique(inst[inst > 0])
    fine = {2: "lymphocyte", 3: "epithelial", 4: "connective"}
    names = [fine[int(np.bincount(cls[inst == i]).argmax())] for i in ids]
    pred = write_objects(tmp_path / "crop.parquet",
                         label_polygons(inst.astype(np.int32), ids.tolist(), simplify=0.0), names)
    r = evaluate(DATA / "consep_test10_crop.instances.png", pred, ["pq", "mpq", "mpq+"], "nuclei",
                 class_map="consep")
    assert r.settings["true_classes"].endswith("consep_test10_crop.classes.png")
    assert r.overall["pq"] == 1.0 and r.overall["mpq"] == 1.0 and r.overall["mpq+"] == 1.0
    assert r.per_class["inflammatory"]["n_true"] == 150 and r.per_image[0]["tp"] == ids.size


def test_real_consep_crop_after_segment(tmp_path, tiny_model):
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["-q", "segment", str(DATA / "consep_test10_crop.jpg"),
                                    "--mpp", "0.25", "--model", str(tiny_model), "-o", str(out),
                                    *FAST], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    report = tmp_path / "consep.json"
    res = CliRunner().invoke(main, ["evaluate", "--true",
                                    str(DATA / "consep_test10_crop.instances.png"),
                                    "--pred", str(out / "consep_test10_crop.parquet"),
                                    "--class-map", "consep", "-m", "pq", "-m", "mpq",
                                    "-m", "mpq+", "-o", str(report)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    data = json.loads(report.read_text())
    assert list(data["per_class"]) == ["other", "inflammatory", "epithelial", "spindle-shaped"]
    assert math.isfinite(data["overall"]["pq"]) and math.isfinite(data["overall"]["mpq"])
    assert data["settings"]["class_map"]["unpredictable"] == ["other"]
