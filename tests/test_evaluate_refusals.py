"""``evaluate`` refuses predictions that lack what the task needs, naming the file."""

from __future__ import annotations

import random

import pytest
from shapely.geometry import Point, box

from cerberus_cli.core.errors import InputError
from cerberus_cli.core.records import make_record
from cerberus_cli.metrics.evaluate import evaluate
from cerberus_cli.outputs.geoparquet import write_geoparquet
from cerberus_cli.outputs.options import WriterOptions


def _nuclei(n: int = 20, seed: int = 0, prob: float = 0.9) -> list:
    rng = random.Random(seed)
    return [make_record(Point(50 * i + 10, 40).buffer(8), "nuclei", 1 + i % 6, "epithelial",
                        prob, 0.25, uuid=rng) for i in range(n)]


def _glands(seed: int = 1) -> list:
    rng = random.Random(seed)
    return [make_record(box(0, 100, 300, 400), "gland", 1, "gland", 0.8, 0.25, uuid=rng)]


def _tissue(seed: int = 2) -> list:
    rng = random.Random(seed)
    return [make_record(box(0, 0, 1000, 1000), "tissue", 5, "stroma", 1.0, 0.25, uuid=rng)]


def test_tissue_task_without_tissue_regions_is_refused(tmp_path):
    true = write_geoparquet(tmp_path / "s.truth.parquet", _nuclei() + _tissue())
    pred_dir = tmp_path / "pred"
    pred_dir.mkdir()
    pred = write_geoparquet(pred_dir / "s.parquet", _nuclei() + _glands())
    with pytest.raises(InputError, match="--tissue-polygons") as info:
        evaluate(true, pred, ["all"], "tissue")
    assert str(info.value).startswith(f"{pred}: prediction has no tissue objects (it holds gland, "
                                      "nuclei)")
    # With the tissue regions beside it, the folder is scored.
    write_geoparquet(pred_dir / "s.tissue.parquet", _tissue())
    assert evaluate(true, pred_dir, ["accuracy"], "tissue").overall["accuracy"] == 1.0


def test_instance_task_missing_from_prediction_is_refused(tmp_path):
    true = write_geoparquet(tmp_path / "t.parquet", _nuclei() + _glands())
    pred = write_geoparquet(tmp_path / "p.parquet", _nuclei())
    with pytest.raises(InputError, match=r"p.parquet: prediction has no gland objects \(it holds "
                                         r"nuclei\)"):
        evaluate(true, pred, ["pq"], "gland")
    empty = write_geoparquet(tmp_path / "empty.parquet", [])
    assert evaluate(true, empty, ["pq"], "gland").overall["pq"] == 0.0  # empty: scored, not refused


def test_nan_probabilities_and_point_objects_are_refused(tmp_path):
    true = write_geoparquet(tmp_path / "t.parquet", _nuclei())
    for value in (float("nan"), float("inf")):
        pred = write_geoparquet(tmp_path / "p.parquet", _nuclei(prob=value), overwrite=True)
        with pytest.raises(InputError, match="p.parquet: 20 nuclei objects have a NaN or infinite"):
            evaluate(true, pred, ["pq"], "nuclei")
    points = write_geoparquet(tmp_path / "points.parquet", _nuclei(),
                              options=WriterOptions(nuclei_geometry="point"))
    with pytest.raises(InputError, match="points.parquet: 20 nuclei objects are points"):
        evaluate(true, points, ["pq"], "nuclei")


def test_patch_table_with_nan_probability_is_refused(tmp_path):
    true = tmp_path / "true"
    (true / "STR").mkdir(parents=True)
    (true / "STR" / "p1.png").write_bytes(b"")
    pred = tmp_path / "pred.csv"
    probs = ",".join(f"prob_{k}" for k in range(9))
    pred.write_text(f"image,{probs}\np1,{','.join(['0.1'] * 4 + ['nan'] + ['0.1'] * 4)}\n")
    with pytest.raises(InputError, match=r"pred.csv: line 2: prob_4 is nan; probabilities must "
                                         r"be finite"):
        evaluate(true, pred, ["all"], "tissue")
