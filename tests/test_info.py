"""`cerberus info` end to end, and the `slide_info` library function behind it."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from cerberus_cli.cli import main
from cerberus_cli.inference.describe import slide_info
from tests._slide_fixtures import REAL_SLIDE, he_tissue, write_variant


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    img, _ = he_tissue(1200, 1600, seed=5)
    root = tmp_path_factory.mktemp("info")
    return {
        "svs": write_variant(root / "a.svs", img, mpp=0.25, objective_power=40),
        "nompp": write_variant(root / "b.tif", img, layout="tiff", mpp=None),
    }


def test_slide_info_fields():
    info = slide_info(REAL_SLIDE)
    assert info["vendor"] == "aperio" and info["backend"] == "openslide"
    assert (info["width"], info["height"]) == (2220, 2967)
    assert info["mpp"] == pytest.approx(0.499) and info["objective_power"] == 20
    assert info["levels"] == [{"width": 2220, "height": 2967, "downsample": 1.0}]
    assert 0.2 < info["tissue_fraction"] < 0.5
    d, r = info["tiles"]["default"], info["tiles"]["reference"]
    assert (d["tile"], d["margin"], d["mpp"]) == (720, 152, 0.5)
    assert (r["tile"], r["margin"]) == (144, 152)
    # the grid is 2216 x 2962 at 0.5 um/px: at most 4 x 5 default tiles, 16 x 21 reference
    assert 0 < d["count"] <= 20 and 0 < r["count"] <= 16 * 21
    assert r["count"] > d["count"]
    json.dumps(info)  # JSON-serialisable as it is


def test_info_human_output(synthetic):
    res = CliRunner().invoke(main, ["info", str(synthetic["svs"]), "--backend", "tiffslide"])
    assert res.exit_code == 0, res.output
    for text in ("aperio", "tiffslide", "1,600 x 1,200 px", "0.25 um/px", "40x",
                 "400 x 300", "label, macro, thumbnail", "tissue fraction", "tiles (default)"):
        assert text in res.output


def test_info_json_many_slides_one_bad(synthetic, tmp_path):
    missing = tmp_path / "missing.svs"
    args = ["info", str(synthetic["svs"]), str(missing), str(REAL_SLIDE), "--json"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 1
    out = json.loads(res.stdout)
    assert [o["path"] for o in out] == [str(synthetic["svs"]), str(missing), str(REAL_SLIDE)]
    assert out[1] == {"path": str(missing), "error": f"{missing}: no such file"}
    assert out[0]["width"] == 1600 and out[2]["vendor"] == "aperio"
    assert f"error: {missing}: no such file" in res.stderr


def test_info_mpp_and_mask_options(synthetic, tmp_path):
    res = CliRunner().invoke(main, ["info", str(synthetic["nompp"])])
    assert res.exit_code == 1 and "no pixel size (mpp)" in res.stderr and "--mpp" in res.stderr
    mask = tmp_path / "half.png"
    m = np.zeros((120, 160), np.uint8)
    m[:, :80] = 255
    cv2.imwrite(str(mask), m)
    res = CliRunner().invoke(main, ["info", str(synthetic["nompp"]), "--mpp", "0.5",
                                    "--mask", str(mask), "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)[0]
    assert info["mpp"] == 0.5 and info["mpp_source"] == "--mpp"
    assert info["tissue_fraction"] == pytest.approx(0.5)
    assert info["tissue_mask"]["source"] == str(mask)


def test_info_subprocess_no_traceback(tmp_path):
    fake = tmp_path / "x.svs"
    ok, buf = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))
    fake.write_bytes(buf.tobytes())
    proc = subprocess.run([sys.executable, "-m", "cerberus_cli", "info", str(fake)],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (f"error: {fake}: the file is a PNG image but its extension "
                                   ".svs says TIFF; rename it to match its content")
