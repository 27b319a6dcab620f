"""Bad input to features and probe: one-line errors that name the file; nothing partial left."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from cerberus_cli.cli import main
from cerberus_cli.core.errors import InputError
from cerberus_cli.transfer.featurefile import write_features
from cerberus_cli.transfer.table import read_patch_table, table_from_folders

FAST = ["--seeds", "1", "--folds", "2", "--c-grid", "1e-2", "--bootstrap", "0", "--no-knn-baseline"]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(res, name: str) -> None:
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and name in lines[0], res.output


def feats(path: Path, labels, groups, splits=None, dim: int = 4, nan: bool = False,
          layers=("x",)) -> Path:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(len(labels), dim))
    if nan:
        X[1, 0] = np.nan
    cols = pd.DataFrame({"label": labels, "group": groups})
    if splits is not None:
        cols["split"] = splits
    return write_features(path, cols, X, {"kind": "patches", "layers": list(layers)})


def _png(path: Path) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((32, 32, 3), 200, np.uint8))


def test_folder_tree_with_splits_and_groups(tmp_path):
    for split in ("train", "test"):
        for cls in ("A", "B"):
            _png(tmp_path / split / cls / f"{split}pat{cls}_1.png")
    table = table_from_folders(tmp_path)
    assert set(table["split"]) == {"train", "test"} and set(table["label"]) == {"A", "B"}
    assert set(table["group"]) == {"trainpatA", "trainpatB", "testpatA", "testpatB"}
    table = table_from_folders(tmp_path, r"pat(\w)_")
    assert set(table["group"]) == {"A", "B"}
    with pytest.raises(InputError, match="appears in splits"):
        read_patch_table(_csv(tmp_path / "t.csv", table))
    assert len(read_patch_table(_csv(tmp_path / "t.csv", table), allow_group_overlap=True)) == 4


def _csv(path: Path, table: pd.DataFrame) -> Path:
    table.to_csv(path, index=False)
    return path


def test_feature_errors(tmp_path):
    out = tmp_path / "feats.parquet"
    bad = _csv(tmp_path / "bad.csv", pd.DataFrame({"image": ["a.png"], "label": ["x"]}))
    one_line_error(run("features", bad, "-o", out, "--workers", "0"), "bad.csv")
    _png(tmp_path / "imgs" / "a.png")
    (tmp_path / "imgs" / "b.png").write_bytes(b"not an image")
    table = _csv(tmp_path / "t.csv", pd.DataFrame({"path": ["imgs/a.png", "imgs/b.png"],
                                                   "label": ["x", "y"]}))
    one_line_error(run("features", table, "-o", out, "--workers", "0"), "b.png")
    one_line_error(run("features", table, "-o", out, "--layers", "layer9"), "layer9")
    assert not out.exists() and not list(tmp_path.glob("*.partial"))


def test_probe_errors(tmp_path):
    ok = feats(tmp_path / "ok.parquet", ["a", "b"] * 6, [f"g{i}" for i in range(12)])
    one_line_error(run("probe", feats(tmp_path / "one.parquet", ["a"] * 6, list("abcdef")),
                       "-o", tmp_path / "o1", *FAST), "one.parquet")
    one_line_error(run("probe", feats(tmp_path / "nan.parquet", ["a", "b"] * 3, list("abcdef"),
                                      nan=True), "-o", tmp_path / "o2", *FAST), "nan.parquet")
    one_line_error(run("probe", ok, feats(tmp_path / "wide.parquet", ["a", "b"] * 3, list("abcdef"),
                                          dim=5), "-o", tmp_path / "o3", *FAST), "wide.parquet")
    one_line_error(run("probe", ok, feats(tmp_path / "other.parquet", ["a", "b"] * 3, list("abcdef"),
                                          layers=("y",)), "-o", tmp_path / "o4", *FAST),
                   "other.parquet")
    split = ["train"] * 8 + ["test"] * 4
    one_line_error(run("probe", feats(tmp_path / "unk.parquet", ["a", "b"] * 4 + ["c"] * 4,
                                      [f"g{i}" for i in range(12)], split),
                       "-o", tmp_path / "o5", *FAST), "unk.parquet")
    one_line_error(run("probe", feats(tmp_path / "leak.parquet", ["a", "b"] * 6,
                                      ["g0"] + [f"g{i}" for i in range(1, 11)] + ["g0"], split),
                       "-o", tmp_path / "o6", *FAST), "leak.parquet")
    cols = pd.DataFrame({"y": ["a", "b"]})
    nolabel = write_features(tmp_path / "nolabel.parquet", cols, np.zeros((2, 3)), {"kind": "patches"})
    one_line_error(run("probe", nolabel, "-o", tmp_path / "o7", *FAST), "nolabel.parquet")
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 8))
    assert not list(tmp_path.glob("*.partial"))


def test_probe_refuses_a_feature_file_with_repeated_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    good = feats(tmp_path / "good.parquet", ["a", "b"] * 6, [f"g{i}" for i in range(12)])
    table = pq.read_table(good)
    twice = table.append_column("label", pa.array(["x"] * table.num_rows))
    pq.write_table(twice.replace_schema_metadata(table.schema.metadata), tmp_path / "twice.parquet")
    one_line_error(run("probe", tmp_path / "twice.parquet", "-o", tmp_path / "o", *FAST), "twice.parquet")
    assert not (tmp_path / "o").exists()
