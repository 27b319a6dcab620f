"""The bundled model on real H&E: floors under the figures recorded in models/default.md.

A 512 px crop of real ovarian-carcinoma stroma with 40 nucleus polygons from another
model (tests/data/hgsc_crop.LICENSE.md), and the real Aperio slide of tests/data, whose
dermis-like fibres the first phantom-trained model traced as nuclei of up to 9000 um^2.
The model is still far from good on real tissue; the floors are the levels it reaches
with --stain-norm macenko, so a change that makes real tissue worse fails.
"""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
from click.testing import CliRunner

from cerberus_cli.cli import main

DATA = Path(__file__).parent / "data"
FAST = ["--tile", "208", "--workers", "0", "--post-workers", "0", "--batch-size", "2", "--no-overlay"]
#: Measured 0.110 (none: 0.099; the first model 0.071 and 0.058); see models/default.md, "Real H&E".
PQ_FLOOR = 0.10


def test_real_crop_nuclei_pq_floor(tmp_path):
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["-q", "segment", str(DATA / "hgsc_crop.jpg"), "--mpp", "0.5",
                                    "-o", str(out), "--stain-norm", "macenko", *FAST],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    report = tmp_path / "pq.json"
    res = CliRunner().invoke(main, ["evaluate", "--task", "nuclei", "-m", "pq",
                                    "--true", str(DATA / "hgsc_crop.truth.parquet"),
                                    "--pred", str(out / "hgsc_crop.parquet"), "-o", str(report)],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    pq = json.loads(report.read_text())["overall"]["pq"]
    assert pq >= PQ_FLOOR, pq


#: Measured with --stain-norm macenko: none over 150 um^2 (the first model: 26, up to 1259 um^2).
GIANT_UM2 = 150.0
MAX_GIANT = 3
MAX_AREA_UM2 = 300.0
#: Gland area on the same run: 0.106 mm^2, nearly all "surface epithelium" on the dermis's
#: fibres; a blur-trained gland decoder (models/default.md, stage gland_blur) drew 0.216.
MAX_GLAND_MM2 = 0.15


def test_aperio_fibres_are_not_traced_as_giant_nuclei_or_glands(tmp_path):
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["-q", "segment", str(DATA / "cmu_small_region.svs"), "-o", str(out),
                                    "--stain-norm", "macenko", *FAST], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    objects = gpd.read_parquet(out / "cmu_small_region.parquet")
    nuclei = objects[objects.task == "nuclei"]
    assert len(nuclei) > 1000
    giant = nuclei.area_um2[nuclei.area_um2 > GIANT_UM2]
    assert len(giant) <= MAX_GIANT and nuclei.area_um2.max() < MAX_AREA_UM2, giant.sort_values().tolist()
    glands_mm2 = objects.area_um2[objects.task == "gland"].sum() / 1e6
    assert glands_mm2 < MAX_GLAND_MM2, glands_mm2
