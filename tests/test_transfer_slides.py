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


def test_object_features_with_decoder_levels_line_up_with_the_objects(slide, tmp_path):
    truth = slide.with_name("s.truth.parquet")
    layers = "layer4,nuclei_type.dec3,nuclei_type.hidden"
    res = run("features", slide, "--kind", "objects", "--objects", truth, "--tasks", "nuclei",
              "--layers", layers, "-o", tmp_path)
    assert res.exit_code == 0, res.output
    columns, X, meta = read_features(tmp_path / "s.features.parquet")
    nuclei = read_objects(truth).query("task == 'nuclei'").reset_index(drop=True)
    assert meta["layers"] == layers.split(",") and X.shape == (len(nuclei), 512 + 64 + 96)
    assert meta["level_dims"] == {"layer4": 512, "nuclei_type.dec3": 64, "nuclei_type.hidden": 96}
    assert meta["objects"]["mask"] == "pixel centres inside the polygon"
    # One row per object, in the object file's order.
    assert columns["uuid"].tolist() == nuclei["uuid"].astype(str).tolist()
    assert np.allclose(columns[["x", "y"]].to_numpy(), nuclei[["centroid_x", "centroid_y"]].to_numpy())
    # The type head's own layer separates the phantom's commonest classes.
    hidden = X[:, -96:]
    means = columns.assign(f=list(hidden)).groupby("label")["f"].apply(lambda s: np.mean(np.stack(s), 0))
    assert len(means) >= 3 and np.linalg.norm(means.iloc[0] - means.iloc[1]) > 1e-2


def test_object_default_layers_and_bad_decoder_level(slide, tmp_path):
    truth = slide.with_name("s.truth.parquet")
    res = run("features", slide, "--kind", "objects", "--objects", truth, "--tasks", "lumen",
              "-o", tmp_path)
    assert res.exit_code == 0, res.output
    _, X, meta = read_features(tmp_path / "s.features.parquet")
    assert meta["layers"] == ["nuclei_type.hidden", "gland_type.hidden", "layer3", "layer4"]
    assert X.shape[1] == sum(meta["level_dims"].values())
    res = run("features", slide, "--kind", "objects", "--objects", truth, "--layers",
              "lumen_type.hidden", "-o", tmp_path / "bad")
    assert res.exit_code != 0 and "no head lumen_type" in res.output
    assert not (tmp_path / "bad" / "s.features.parquet").exists()
