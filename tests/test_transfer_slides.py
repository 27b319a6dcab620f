"""Grid and object features on a small phantom slide."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from cerberus_cli.cli import main
from cerberus_cli.outputs.read import read_objects
from cerberus_cli.transfer.featurefile import read_features


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    root = tmp_path_factory.mktemp("slide")
    res = run("synth", "slide", root / "s.svs", "--size", "1024x1024", "--seed", 3)
    assert res.exit_code == 0, res.output
    return root / "s.svs"


def test_grid_features(slide, tmp_path):
    res = run("features", slide, "--kind", "grid", "--patch-um", "64", "-o", tmp_path, "--workers", "0")
    assert res.exit_code == 0, res.output
    columns, X, meta = read_features(tmp_path / "s.features.parquet")
    assert 0 < len(columns) <= (1024 // 128) ** 2 and X.shape[1] == 896
    assert {"slide", "uuid", "task", "class_name", "x", "y"} <= set(columns.columns)
    assert meta["kind"] == "grid" and meta["input_px"] == 128 and columns["uuid"].is_unique
    res = run("features", slide, "--kind", "grid", "--patch-um", "64", "-o", tmp_path, "--workers", "0")
    assert res.exit_code == 0 and "skipped" in res.output


def test_object_features_one_row_per_nucleus(slide, tmp_path):
    truth = slide.with_name("s.truth.parquet")
    res = run("features", slide, "--kind", "objects", "--objects", truth, "--tasks", "nuclei",
              "--pooling", "avgmax", "--layers", "layer1,layer2", "-o", tmp_path)
    assert res.exit_code == 0, res.output
    columns, X, meta = read_features(tmp_path / "s.features.parquet")
    nuclei = read_objects(truth).query("task == 'nuclei'")
    assert len(columns) == len(nuclei) and X.shape[1] == 2 * (64 + 128)
    assert set(columns["uuid"]) == set(nuclei["uuid"]) and np.isfinite(X).all()
    assert meta["kind"] == "objects" and meta["objects"]["tasks"] == ["nuclei"]
    # Nuclei of different classes get different features (pooled under their own masks).
    means = columns.assign(f=list(X[:, :64])).groupby("label")["f"].apply(lambda s: np.mean(np.stack(s), 0))
    assert len(means) >= 3 and np.linalg.norm(means.iloc[0] - means.iloc[1]) > 1e-3
