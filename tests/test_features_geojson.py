"""``cerberus features --objects`` reads segment's outputs in every object format."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from cerberus_cli.cli import main
from cerberus_cli.outputs.read import read_objects
from cerberus_cli.transfer.featurefile import read_features

FAST = ["--tile", "208", "--workers", "0", "--post-workers", "0", "--batch-size", "2",
        "--no-overlay", "--model", "phantom"]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def segmented(phantom_slide, tmp_path_factory):
    """The phantom slide segmented to GeoParquet and to QuPath GeoJSON (full precision)."""
    outs = {}
    for fmt in ("parquet", "geojson"):
        out = tmp_path_factory.mktemp(fmt)
        res = run("-q", "segment", phantom_slide, "-o", out, *FAST, "--format", fmt,
                  "--geojson-decimals", -1)
        assert res.exit_code == 0, res.output
        outs[fmt] = out
    return outs


def test_geojson_outputs_feed_object_features(phantom_slide, segmented, tmp_path):
    feats = {}
    for fmt, out in segmented.items():
        dest = tmp_path / fmt
        # A segment output folder: the slide's object file is found in either format.
        res = run("features", phantom_slide, "--kind", "objects", "--objects", out,
                  "--tasks", "nuclei", "--layers", "layer3,layer4", "--workers", 0, "-o", dest)
        assert res.exit_code == 0, res.output
        feats[fmt] = read_features(dest / "phantom.features.parquet")
    (pq_rows, pq_x, _), (gj_rows, gj_x, gj_meta) = feats["parquet"], feats["geojson"]
    objects = read_objects(segmented["geojson"] / "phantom.geojson")
    nuclei = objects[objects.task == "nuclei"]
    assert len(nuclei) > 20
    assert gj_meta["inputs"]["objects"].endswith("phantom.geojson")
    assert list(gj_rows["uuid"]) == list(nuclei["uuid"])
    # The same objects (GeoParquet rows are in Hilbert order), the same features.
    assert sorted(gj_rows["uuid"]) == sorted(pq_rows["uuid"])
    order = {u: i for i, u in enumerate(pq_rows["uuid"])}
    assert np.array_equal(gj_x, pq_x[[order[u] for u in gj_rows["uuid"]]])
    assert np.isfinite(gj_x).all() and gj_x.any()


def test_a_folder_without_the_slides_object_file_is_one_line(phantom_slide, tmp_path):
    res = run("features", phantom_slide, "--kind", "objects", "--objects", tmp_path,
              "--workers", 0, "-o", tmp_path / "f")
    assert res.exit_code == 2
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "phantom.parquet or phantom.geoparquet or phantom.geojson" in lines[0]
    assert not (tmp_path / "f" / "phantom.features.parquet").exists()
