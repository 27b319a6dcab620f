"""The bundled real-data model on real H&E: floors under the figures of models/default.md.

Three real inputs of tests/data, each with its licence note: 480 px of CoNSeP test image
10 (colorectal adenocarcinoma, 0.25 um/px, hand-drawn instance and class maps); 512 px of
ovarian-carcinoma stroma with 40 nucleus polygons from another model; the real Aperio
slide, whose dermis fibres the first phantom-trained model traced as nuclei of up to
9000 um^2 and as "surface epithelium" glands. The floors sit a little under what the
shipped model measures with these exact settings, so a change that makes real tissue
worse fails.
"""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
from click.testing import CliRunner

from cerberus_cli.cli import main

DATA = Path(__file__).parent / "data"
FAST = ["--tile", "208", "--workers", "0", "--post-workers", "0", "--batch-size", "2", "--no-overlay"]


def _segment(image: Path, out: Path, *args: str) -> None:
    res = CliRunner().invoke(main, ["-q", "segment", str(image), "-o", str(out), *args, *FAST],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output


def _evaluate(true: Path, pred: Path, report: Path, *args: str) -> dict:
    res = CliRunner().invoke(main, ["evaluate", "--task", "nuclei", "--true", str(true), "--pred", str(pred),
                                    "-o", str(report), *args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    overall = json.loads(report.read_text())["overall"]
    print(true.name, overall)
    return overall


#: Measured with these settings PQ 0.414, mPQ over the 3 predictable classes 0.292 (the
#: phantom model: PQ 0.342, mPQ 0.024).
CONSEP_PQ_FLOOR = 0.38
CONSEP_MPQ_FLOOR = 0.25


def test_consep_crop_nuclei_and_types(tmp_path):
    crop = DATA / "consep_test10_crop"
    _segment(crop.with_suffix(".jpg"), tmp_path / "out", "--mpp", "0.25", "--tissue-method", "all")
    overall = _evaluate(crop.with_suffix(".instances.png"), tmp_path / "out/consep_test10_crop.parquet",
                        tmp_path / "r.json", "--class-map", "consep", "-m", "pq", "-m", "mpq")
    assert overall["pq"] >= CONSEP_PQ_FLOOR, overall
    assert overall["mpq_predictable"] >= CONSEP_MPQ_FLOOR, overall


#: Measured 0.032: worse than the phantom model's 0.099 (models/default.md, "Where it falls
#: short"); the floor keeps it from falling further.
STROMA_PQ_FLOOR = 0.025


def test_stroma_crop_nuclei_pq_floor(tmp_path):
    _segment(DATA / "hgsc_crop.jpg", tmp_path / "out", "--mpp", "0.5")
    overall = _evaluate(DATA / "hgsc_crop.truth.parquet", tmp_path / "out/hgsc_crop.parquet", tmp_path / "r.json",
                        "-m", "pq")
    assert overall["pq"] >= STROMA_PQ_FLOOR, overall


#: Measured with these settings: no nucleus over 150 um^2 of 2237 (the first model: 26, up to
#: 1259 um^2), the largest 108 um^2; glands 0.247 mm^2 (32), more than the phantom model's
#: 0.116 (models/default.md, "Where it falls short"); epithelial share 0.23 (phantom model 0.62).
GIANT_UM2 = 150.0
MAX_GIANT = 3
MAX_AREA_UM2 = 200.0
MAX_GLAND_MM2 = 0.28
MAX_EPITHELIAL_SHARE = 0.35


def test_aperio_fibres_are_not_giant_nuclei_or_glands(tmp_path):
    _segment(DATA / "cmu_small_region.svs", tmp_path / "out")
    objects = gpd.read_parquet(tmp_path / "out/cmu_small_region.parquet")
    nuclei = objects[objects.task == "nuclei"]
    assert len(nuclei) > 1000
    giant = nuclei.area_um2[nuclei.area_um2 > GIANT_UM2]
    assert len(giant) <= MAX_GIANT and nuclei.area_um2.max() < MAX_AREA_UM2, giant.sort_values().tolist()
    glands_mm2 = objects.area_um2[objects.task == "gland"].sum() / 1e6
    assert glands_mm2 < MAX_GLAND_MM2, glands_mm2
    epithelial = float((nuclei.class_name == "epithelial").mean())
    print("aperio:", len(nuclei), "nuclei,", len(giant), "over 150 um^2, largest", nuclei.area_um2.max(),
          "um^2; glands", glands_mm2, "mm^2; epithelial share", epithelial)
    assert epithelial <= MAX_EPITHELIAL_SHARE, epithelial
