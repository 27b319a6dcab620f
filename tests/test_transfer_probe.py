"""cerberus features + cerberus probe end to end on phantom tissue patches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from cerberus_cli.cli import main
from cerberus_cli.transfer.featurefile import read_features, write_features

FAST = ["--seeds", "1", "--folds", "3", "--c-grid", "1e-3,1e-2,1e-1", "--bootstrap", "100"]


def run(*args: str) -> object:
    res = CliRunner().invoke(main, [str(a) for a in args])
    return res


@pytest.fixture(scope="module")
def phantom_table(tmp_path_factory) -> Path:
    """Train (seed 1) and held-out test (seed 2) phantom tissue patches in one table."""
    root = tmp_path_factory.mktemp("phantom")
    rows = []
    for split, seed, count in (("train", 1, 54), ("test", 2, 36)):
        res = run("synth", "tiles", "-o", root / split, "--count", count, "--tasks", "tissue",
                  "--seed", seed)
        assert res.exit_code == 0, res.output
        for img in sorted((root / split / "tissue").glob("*/*.png")):
            rows.append({"path": str(img.relative_to(root)), "label": img.parent.name,
                         "group": f"{split}-{img.stem}", "split": split})
    table = root / "patches.csv"
    pd.DataFrame(rows).to_csv(table, index=False)
    return table


@pytest.fixture(scope="module")
def bundled_features(phantom_table, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("feats") / "bundled.parquet"
    res = run("features", phantom_table, "-o", out, "--workers", "0", "--patch-px", "224")
    assert res.exit_code == 0, res.output
    return out


def test_features_file_and_provenance(bundled_features, phantom_table):
    columns, X, meta = read_features(bundled_features)
    assert X.shape == (len(pd.read_csv(phantom_table)), 128 + 256 + 512)
    assert X.dtype == np.float32 and np.isfinite(X).all()
    assert {"path", "label", "group", "split"} <= set(columns.columns)
    assert meta["layers"] == ["layer2", "layer3", "layer4"]
    assert meta["level_dims"] == {"layer2": 128, "layer3": 256, "layer4": 512}
    assert meta["input_px"] == 224 and meta["input_um"] == pytest.approx(112.0)
    assert len(meta["model_sha256"]) == 64 and meta["normalisation"] == "rgb/255"
    # Same provenance: skipped; other provenance: refused without --overwrite.
    res = run("features", phantom_table, "-o", bundled_features, "--workers", "0",
              "--patch-px", "224")
    assert res.exit_code == 0 and "skipped" in res.output
    res = run("features", phantom_table, "-o", bundled_features, "--workers", "0")
    assert res.exit_code == 2 and "other provenance" in res.output


def test_probe_bundled_beats_random(bundled_features, phantom_table, tmp_path):
    rnd = tmp_path / "random.parquet"
    res = run("features", phantom_table, "-o", rnd, "--workers", "0", "--patch-px", "224",
              "--random-init", "0")
    assert res.exit_code == 0, res.output
    out = tmp_path / "probe"
    res = run("probe", bundled_features, "-o", out, *FAST)
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    for m in ("accuracy", "balanced_accuracy", "macro_f1", "roc_auc"):
        assert isinstance(report[m], float)
        lo, hi = report[f"{m}_ci"]
        assert lo <= report[m] + 1e-9 and report[m] <= hi + 1e-9
    assert report["balanced_accuracy"] >= 0.9, report["balanced_accuracy"]
    assert report["n_test"] == 36 and report["baselines"]["knn"]["accuracy"] > 0.5
    assert (out / "report.csv").read_text().startswith("configuration,task,classifier")
    out_r = tmp_path / "probe_random"
    res = run("probe", rnd, "-o", out_r, *FAST, "--no-knn-baseline")
    assert res.exit_code == 0, res.output
    random_ba = json.loads((out_r / "report.json").read_text())["balanced_accuracy"]
    assert report["balanced_accuracy"] >= random_ba + 0.1, (report["balanced_accuracy"], random_ba)
    # Both at once: comparison and mean rank.
    res = run("probe", bundled_features, rnd, "--compare", "-o", tmp_path / "cmp", *FAST,
              "--no-knn-baseline")
    assert res.exit_code == 0, res.output
    cmp = json.loads((tmp_path / "cmp" / "report.json").read_text())
    assert cmp["mean_rank"]["bundled"] < cmp["mean_rank"]["random"]
    # Paired on the same test rows: random minus bundled, with its interval.
    diff = cmp["differences"]
    assert diff["baseline"] == "bundled"
    ba = diff["configurations"]["random"]["all"]["balanced_accuracy"]
    assert ba["difference"] == pytest.approx(random_ba - report["balanced_accuracy"], abs=1e-9)
    assert ba["ci"][0] <= ba["difference"] <= ba["ci"][1] and ba["ci"][1] < 0
    assert ba["share_ahead"] < 0.05
    # The saved probe predicts new features (skops, not pickle).
    assert (out / "probe.skops").is_file()
    res = run("probe", bundled_features, "--predict", out, "-o", tmp_path / "pred")
    assert res.exit_code == 0, res.output
    pred = pd.read_parquet(tmp_path / "pred" / "predictions.parquet")
    test = pred[pred["split"] == "test"]
    assert (test["prediction"] == test["label"]).mean() >= 0.85


def test_outer_cv_without_test_split(tmp_path):
    rng = np.random.default_rng(0)
    n = 60
    labels = np.repeat(["a", "b", "c"], n // 3)
    onehot = (labels[:, None] == np.array(["a", "b", "c"])).astype(float)
    X = rng.normal(size=(n, 8)) + 3 * np.hstack([onehot, onehot[:, :2], onehot])
    cols = pd.DataFrame({"label": labels, "group": [f"p{i // 2}" for i in range(n)]})
    f = write_features(tmp_path / "f.parquet", cols, X, {"kind": "patches", "layers": ["x"]})
    res = run("probe", f, "-o", tmp_path / "p", *FAST)
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "p" / "report.json").read_text())
    assert "outer 3-fold" in report["protocol"] and report["n_test"] == n
    assert report["accuracy"] > 0.9


def test_compare_pairs_only_the_same_rows(tmp_path):
    """A configuration probed on other rows gets no paired difference, and the report says why."""
    rng = np.random.default_rng(1)
    n = 40
    labels = np.repeat(["a", "b"], n // 2)
    cols = pd.DataFrame({"path": [f"p{i}.png" for i in range(n)], "label": labels,
                         "group": [f"g{i // 4}" for i in range(n)],
                         "split": ["train" if (i // 4) % 2 == 0 else "test" for i in range(n)]})
    X = rng.normal(size=(n, 4)) + 2 * (labels == "a")[:, None]
    one = write_features(tmp_path / "one.parquet", cols, X, {"kind": "patches", "layers": ["x"]})
    same = write_features(tmp_path / "same.parquet", cols, X, {"kind": "patches", "layers": ["x"]})
    moved = cols.assign(path=[f"q{i}.png" for i in range(n)])
    other = write_features(tmp_path / "other.parquet", moved, X, {"kind": "patches", "layers": ["x"]})
    res = run("probe", one, same, other, "--compare", "-o", tmp_path / "cmp", *FAST)
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "cmp" / "report.json").read_text())
    paired = rep["differences"]["configurations"]
    # The same features on the same rows: no difference, an interval of zero width.
    assert paired["same"]["all"]["balanced_accuracy"]["difference"] == 0
    assert paired["same"]["all"]["balanced_accuracy"]["ci"] == [0, 0]
    assert "other" not in paired
    assert any(w.startswith("other/all: no paired difference against one (the test rows")
               for w in rep["warnings"]), rep["warnings"]
