"""Real patch tasks: ``cerberus patches`` on instance layouts (generated here, and the real
CoNSeP crop in tests/data) through ``features`` and ``probe``; the class-folder case and
its grouping warning; the refusals. Every layout is built in the test (no shared data)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from cerberus_cli.cli import main
from cerberus_cli.transfer.featurefile import read_features, write_features

DATA = Path(__file__).parent / "data"
CONSEP_CLASSES = {"0": "background", "1": "other", "2": "inflammatory", "3": "epithelial",
                  "4": "spindle-shaped"}
FAST = ["--seeds", "1", "--folds", "2", "--c-grid", "1e-2", "--bootstrap", "0",
        "--no-knn-baseline"]


def run(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(res, name: str) -> None:
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and name in lines[0], res.output
    assert "Traceback" not in res.output


def nothing_left(out: Path) -> None:
    assert not out.exists()
    assert not list(out.parent.glob(f"{out.name}*.partial"))


def layout(root: Path, names: list[str], mpp: float, size: int = 96, classes: bool = True,
           seed: int = 0) -> Path:
    """An instance layout: discs on a pink background, class k darker with k; the first
    nucleus of the first image is 70 % class 3, 30 % class 2 (majority: epithelial)."""
    rng = np.random.default_rng(seed)
    for sub in ("images", "instances") + (("classes",) if classes else ()):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for n, name in enumerate(names):
        img = np.full((size, size, 3), (230, 190, 220), np.uint8)
        inst = np.zeros((size, size), np.uint16)
        cls = np.zeros((size, size), np.uint8)
        yy, xx = np.indices((size, size))
        oid = 0
        for cy in range(12, size - 6, 24):
            for cx in range(12, size - 6, 24):
                oid += 1
                k = 1 + (oid + n) % 4
                disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= 36
                inst[disc] = oid
                cls[disc] = k
                img[disc] = np.clip(np.array([150, 90, 170]) - 25 * k + rng.integers(0, 10, 3), 0, 255)
                if n == 0 and oid == 1:
                    cls[disc] = 3
                    cls[disc & (yy > cy + 1)] = 2
        cv2.imwrite(str(root / "images" / f"{name}.png"), img[..., ::-1])
        cv2.imwrite(str(root / "instances" / f"{name}.png"), inst)
        if classes:
            cv2.imwrite(str(root / "classes" / f"{name}.png"), cls)
    (root / "dataset.json").write_text(json.dumps({"mpp": mpp}))
    if classes:
        (root / "classes.json").write_text(json.dumps(CONSEP_CLASSES))
    return root


def glas_layout(root: Path, rows: list[tuple[str, int, str]]) -> Path:
    """A GlaS-style folder (0.62 um/px) with grade.csv (name, patient_id, grade)."""
    layout(root, [r[0] for r in rows], 0.62005, size=80, classes=False)
    pd.DataFrame(rows, columns=["name", "patient_id", "grade"]).to_csv(root / "grade.csv", index=False)
    return root


def test_nuclei_type_patches_features_probe(tmp_path, tiny_model):
    train = layout(tmp_path / "consep-train", ["train_1", "train_2", "train_3"], 0.25)
    test = layout(tmp_path / "consep-test", ["test_1", "test_2"], 0.25, seed=1)
    out = tmp_path / "types"
    res = run("patches", f"train={train}", f"test={test}", "-o", out, "--patch-um", "16")
    assert res.exit_code == 0, res.output
    assert "wrote" in res.output and "warning" not in res.output
    table = pd.read_csv(out / "patches.csv")
    assert {"path", "label", "group", "split", "task", "mpp", "x", "y", "object", "padded"} <= set(table)
    assert len(table) == 5 * 16 and set(table["split"]) == {"train", "test"}
    assert set(table["group"]) == {"train_1", "train_2", "train_3", "test_1", "test_2"}
    assert set(table["label"]) == {"other", "inflammatory", "epithelial", "spindle-shaped"}
    assert (table["task"] == "nuclei-type").all() and (table["mpp"] == 0.5).all()
    first = table[(table["group"] == "train_1") & (table["object"] == 1)].iloc[0]
    assert first["label"] == "epithelial"  # the majority over its pixels
    assert first["x"] == pytest.approx(12, abs=0.6) and first["y"] == pytest.approx(12.3, abs=0.6)
    patch = cv2.imread(str(out / first["path"]))
    assert patch.shape == (32, 32, 3)  # 16 um at 0.5 um/px
    assert table["padded"].any() and not table["padded"].all()
    meta = json.loads((out / "patches.json").read_text())
    assert meta["kind"] == "nuclei-type" and meta["patch_px"] == 32 and meta["warnings"] == []
    assert [s["split"] for s in meta["sources"]] == ["train", "test"]

    feats = tmp_path / "types.parquet"
    res = run("features", out / "patches.csv", "-o", feats, "--model", tiny_model, "--workers", "0")
    assert res.exit_code == 0, res.output
    columns, X, _ = read_features(feats)
    assert len(columns) == len(table) and np.isfinite(X).all()
    res = run("probe", feats, "-o", tmp_path / "probe", *FAST)
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "probe" / "report.json").read_text())
    assert report["n_test"] == int((table["split"] == "test").sum())
    assert report["warnings"] == [] and "test split" in report["protocol"]


def consep_crop_layouts(tmp_path: Path) -> None:
    """The real CoNSeP crop cut into quadrants: two train images (``tmp_path/train``), two
    test images (``tmp_path/test``)."""
    img = cv2.imread(str(DATA / "consep_test10_crop.jpg"))
    inst = cv2.imread(str(DATA / "consep_test10_crop.instances.png"), cv2.IMREAD_UNCHANGED)
    cls = cv2.imread(str(DATA / "consep_test10_crop.classes.png"), cv2.IMREAD_UNCHANGED)
    for split, rows in (("train", 0), ("test", 1)):
        root = tmp_path / split
        for sub in ("images", "instances", "classes"):
            (root / sub).mkdir(parents=True)
        for q in (0, 1):
            win = np.s_[rows * 240:(rows + 1) * 240, q * 240:(q + 1) * 240]
            cv2.imwrite(str(root / "images" / f"crop_{rows}{q}.png"), img[win])
            cv2.imwrite(str(root / "instances" / f"crop_{rows}{q}.png"), inst[win])
            cv2.imwrite(str(root / "classes" / f"crop_{rows}{q}.png"), cls[win])
        (root / "dataset.json").write_text(json.dumps({"mpp": 0.25}))
        (root / "classes.json").write_text(json.dumps(CONSEP_CLASSES))


def test_real_consep_crop_end_to_end(tmp_path, tiny_model):
    """The real CoNSeP crop's quadrants: patches, features, probe."""
    consep_crop_layouts(tmp_path)
    out = tmp_path / "crop"
    res = run("patches", f"train={tmp_path / 'train'}", f"test={tmp_path / 'test'}", "-o", out,
              "--patch-um", "16")
    assert res.exit_code == 0, res.output
    table = pd.read_csv(out / "patches.csv")
    # Nuclei cut by the quadrant borders count once per quadrant they reach.
    assert 302 <= len(table) <= 360
    assert set(table["label"]) == {"inflammatory", "epithelial", "spindle-shaped"}
    for _, row in table.sample(20, random_state=0).iterrows():  # label = majority class
        q = tmp_path / row["split"] / "classes" / f"{row['group']}.png"
        c = cv2.imread(str(q), cv2.IMREAD_UNCHANGED)
        m = cv2.imread(str(q).replace("classes", "instances"), cv2.IMREAD_UNCHANGED) == row["object"]
        assert CONSEP_CLASSES[str(np.bincount(c[m]).argmax())] == row["label"]
    assert cv2.imread(str(out / table["path"][0])).shape == (32, 32, 3)
    feats = tmp_path / "crop.parquet"
    res = run("features", out / "patches.csv", "-o", feats, "--model", tiny_model, "--workers", "0")
    assert res.exit_code == 0, res.output
    res = run("probe", feats, "-o", tmp_path / "probe", *FAST)
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "probe" / "report.json").read_text())
    assert report["n_test"] == int((table["split"] == "test").sum())
    assert 0.0 <= report["balanced_accuracy"] <= 1.0


def test_real_crop_pretraining_pool_and_paired_compare(tmp_path, tiny_model):
    """The leave-one-task-out path on real patches: pre-train a pool (the real crop's
    nucleus types and a phantom task), probe the task both on the start and on the
    pre-trained encoder, and compare them paired on the same test rows."""
    consep_crop_layouts(tmp_path)
    crop = tmp_path / "crop"
    assert run("patches", f"train={tmp_path / 'train'}", f"test={tmp_path / 'test'}", "-o", crop,
               "--patch-um", "16").exit_code == 0
    assert run("synth", "nuclei", "-o", tmp_path / "ph", "--count", "40", "--size", "32",
               "--seed", "3").exit_code == 0
    pre = tmp_path / "pre"
    res = run("pretrain", "-o", pre, "--init", tiny_model, "--data", f"consep={crop / 'patches.csv'}",
              "--data", f"ph_nuclei={tmp_path / 'ph' / 'nuclei.csv'}", "--steps", "4", "--warmup", "1",
              "--batch-size", "8", "--patch-px", "32", "--val-every", "4", "--save-every", "4",
              "--log-every", "2", "--device", "cpu")
    assert res.exit_code == 0, res.output
    records = [json.loads(line) for line in (pre / "metrics.jsonl").read_text().splitlines()]
    assert {"loss/consep", "loss/ph_nuclei"} <= set(records[0])
    feats = {}
    for name, model in (("start", tiny_model), ("pooled", pre / "checkpoints" / "last.pt")):
        feats[name] = tmp_path / f"crop.{name}.parquet"
        res = run("features", crop / "patches.csv", "-o", feats[name], "--model", model,
                  "--workers", "0")
        assert res.exit_code == 0, res.output
    res = run("probe", feats["start"], feats["pooled"], "--compare", "-o", tmp_path / "cmp",
              "--seeds", "1", "--folds", "2", "--c-grid", "1e-2", "--bootstrap", "50",
              "--no-knn-baseline")
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "cmp" / "report.json").read_text())
    diff = rep["differences"]
    assert diff["baseline"] == "crop.start"
    ba = diff["configurations"]["crop.pooled"]["all"]["balanced_accuracy"]
    pooled, start = (rep["comparison"][c]["all"]["balanced_accuracy"] for c in ("crop.pooled", "crop.start"))
    assert ba["difference"] == pytest.approx(pooled - start, abs=1e-9)
    assert ba["ci"][0] <= ba["difference"] <= ba["ci"][1]


def test_gland_grade_patches(tmp_path):
    train = glas_layout(tmp_path / "glas-train", [("train_1", 1, "benign"), ("train_2", 2, "malignant"),
                                                  ("train_3", 1, "benign")])
    test = glas_layout(tmp_path / "glas-testA", [("testA_1", 2, "malignant"), ("testA_2", 4, "benign")])
    out = tmp_path / "glas"
    res = run("patches", f"train={train}", f"test={test}", "--kind", "gland-grade",
              "--patch-um", "40", "-o", out)
    assert res.exit_code == 0, res.output
    table = pd.read_csv(out / "patches.csv")
    assert set(table["group"]) == {"patient-1", "patient-2", "patient-4"}
    assert set(table.loc[table["group"] == "patient-2", "split"]) == {"train", "test"}
    assert dict(zip(table["group"], table["label"]))["patient-1"] == "benign"
    assert cv2.imread(str(out / table["path"][0])).shape == (80, 80, 3)
    # The official split shares patient 2: said on the console and in patches.json.
    assert "warning: group(s) patient-2" in res.output
    assert "patient-2" in json.loads((out / "patches.json").read_text())["warnings"][0]
    # Bare folders: all train, for a patient-grouped cross-validation; no warning.
    res = run("patches", train, test, "--kind", "gland-grade", "--patch-um", "40", "-o", tmp_path / "cv")
    assert res.exit_code == 0 and "warning" not in res.output, res.output
    assert set(pd.read_csv(tmp_path / "cv" / "patches.csv")["split"]) == {"train"}


def test_organ_patches_need_an_organ_table(tmp_path):
    src = layout(tmp_path / "monuseg", ["TCGA-AA-0001", "TCGA-BB-0002"], 0.25, size=120, classes=False)
    res = run("patches", src, "--kind", "organ", "-o", tmp_path / "o")
    one_line_error(res, "organs.csv")
    assert "not recorded" in res.output
    nothing_left(tmp_path / "o")
    organs = tmp_path / "organs.csv"
    organs.write_text("name,organ\nTCGA-AA-0001,breast\nTCGA-BB-0002,kidney\n")
    res = run("patches", src, "--kind", "organ", "--organs", organs, "--patch-um", "10", "-o", tmp_path / "o")
    assert res.exit_code == 0, res.output
    table = pd.read_csv(tmp_path / "o" / "patches.csv")
    assert len(table) == 2 * 9  # 120 px at 0.25 -> 60 px at 0.5: a 3 x 3 grid of 20 px
    assert dict(zip(table["group"], table["label"])) == {"TCGA-AA-0001": "breast", "TCGA-BB-0002": "kidney"}
    assert not table["padded"].any()
    (src / "organs.csv").write_text("name,organ\nTCGA-AA-0001,breast\n")
    res = run("patches", src, "--kind", "organ", "-o", tmp_path / "o2")
    one_line_error(res, "organs.csv")
    assert "TCGA-BB-0002" in res.output


def _refusal_case(tmp_path: Path, case: str) -> tuple[list[object], str]:
    consep = layout(tmp_path / "consep", ["a", "b"], 0.25)
    if case == "missing folder":
        return [tmp_path / "nope"], "nope"
    if case == "unknown kind":
        return [consep, "--kind", "tissue"], "--kind"
    if case == "unknown split":
        return [f"holdout={consep}"], "holdout"
    if case == "no grade.csv":
        return [consep, "--kind", "gland-grade"], "grade.csv"
    if case == "grade.csv misses an image":
        glas = glas_layout(tmp_path / "glas", [("g1", 1, "benign"), ("g2", 2, "malignant")])
        pd.DataFrame([("g1", 1, "benign")], columns=["name", "patient_id", "grade"]).to_csv(
            glas / "grade.csv", index=False)
        return [glas, "--kind", "gland-grade"], "grade.csv"
    if case == "no classes":
        bare = layout(tmp_path / "bare", ["a"], 0.25, classes=False)
        return [bare], "classes"
    if case == "no mpp":
        (consep / "dataset.json").unlink()
        return [consep], "dataset.json"
    if case == "image without instances":
        (consep / "instances" / "b.png").unlink()
        return [consep], "b.png"
    if case == "bad map size (after the first image)":
        cv2.imwrite(str(consep / "instances" / "b.png"), np.zeros((10, 10), np.uint16))
        return [consep], "b.png"
    raise AssertionError(case)


@pytest.mark.parametrize("case", [
    "missing folder", "unknown kind", "unknown split", "no grade.csv", "grade.csv misses an image",
    "no classes", "no mpp", "image without instances", "bad map size (after the first image)",
])
def test_refusals_are_one_line_and_leave_nothing(tmp_path, case):
    args, name = _refusal_case(tmp_path, case)
    out = tmp_path / "out"
    res = run("patches", *args, "-o", out)
    one_line_error(res, name)
    nothing_left(out)


def test_existing_output_is_kept(tmp_path):
    src = layout(tmp_path / "consep", ["a"], 0.25)
    out = tmp_path / "out"
    assert run("patches", src, "-o", out).exit_code == 0
    assert json.loads((out / "patches.json").read_text())["patch_px"] == 64  # 32 um by default
    before = (out / "patches.csv").read_bytes()
    one_line_error(run("patches", src, "-o", out, "--patch-um", "20"), "already exists")
    assert (out / "patches.csv").read_bytes() == before
    res = run("patches", src, "-o", out, "--patch-um", "20", "--overwrite")
    assert res.exit_code == 0, res.output
    assert json.loads((out / "patches.json").read_text())["patch_px"] == 40


def test_class_folders_probe_with_a_grouping_warning(tmp_path, tiny_model):
    """The issue's sequence (synth tiles -> features -> probe), small: it used to stop at
    'a single group'; now one group per patch, and the report says what that leaks."""
    res = run("synth", "tiles", "-o", tmp_path / "ph", "--count", "12", "--size", "96", "--seed", "808",
              "--tasks", "tissue")
    assert res.exit_code == 0, res.output
    feats = tmp_path / "t.parquet"
    res = run("features", tmp_path / "ph" / "tissue", "-o", feats, "--model", tiny_model, "--workers", "0")
    assert res.exit_code == 0, res.output
    columns, _, _ = read_features(feats)
    assert columns["group"].nunique() == len(columns)  # not the shared prefix 'phantom'
    assert columns["group"].str.contains("/").all()
    res = run("probe", feats, "-o", tmp_path / "p")
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "p" / "report.json").read_text())
    leak = [w for w in report["warnings"] if "each patch is its own group" in w]
    assert leak and "inflates the scores" in leak[0]
    assert "warning: each patch is its own group" in res.output
    assert report["balanced_accuracy"] is not None and "outer" in report["protocol"]
    # Classes with a single patch cannot be trained and tested by a grouped CV: left out.
    assert any("left out" in w for w in report["warnings"])
    assert report["n_test"] < len(columns)


def _features(path: Path, groups: list[str] | None, n: int = 24) -> Path:
    rng = np.random.default_rng(0)
    labels = np.array(["a", "b"] * (n // 2))
    X = rng.normal(size=(n, 4)) + 3 * (labels == "a")[:, None]
    cols = pd.DataFrame({"label": labels})
    if groups is not None:
        cols["group"] = groups
    return write_features(path, cols, X, {"kind": "patches", "layers": ["x"]})


@pytest.mark.parametrize(("groups", "said"), [
    (None, "no 'group' column"),
    (["slide"] * 24, "'group' is 'slide' on every row"),
    ([f"p{i}" for i in range(24)], "'group' differs on every row"),
    ([f"s{i // 4}" for i in range(24)], None),
])
def test_probe_groups_rule_and_warning(tmp_path, groups, said):
    f = _features(tmp_path / "f.parquet", groups)
    res = run("probe", f, "-o", tmp_path / "p", *FAST)
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "p" / "report.json").read_text())
    if said is None:
        assert report["warnings"] == [] and "warning" not in res.output
    else:
        assert len(report["warnings"]) == 1 and said in report["warnings"][0]
        assert "each patch is its own group" in report["warnings"][0]
    assert report["n_test"] == 24 and report["accuracy"] > 0.8

