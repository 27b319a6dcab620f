"""Full-resolution overlay crops (`segment --overlay-crops N`) of the densest regions."""

from __future__ import annotations

import json

import cv2
import geopandas as gpd
import numpy as np
import pytest
import tiffslide
from click.testing import CliRunner
from shapely.geometry import box

from cerberus_cli.cli import main
from cerberus_cli.core.records import make_record
from cerberus_cli.core.vocabulary import class_color
from cerberus_cli.outputs.geojson import write_geojson
from cerberus_cli.outputs.geoparquet import write_geoparquet
from cerberus_cli.outputs.overlay import densest_cells
from cerberus_cli.outputs.read import read_objects

FAST = ["--tile", "208", "--workers", "0", "--post-workers", "0", "--batch-size", "2"]


def test_densest_cells_are_the_fullest_and_never_touch():
    counts = np.zeros((6, 6))
    counts[1, 1], counts[1, 2], counts[4, 4], counts[2, 5] = 9, 8, 5, 3
    assert densest_cells(counts, 3) == [(1, 1), (4, 4), (2, 5)]   # (1, 2) touches (1, 1)
    assert densest_cells(counts, 1) == [(1, 1)]
    assert densest_cells(np.zeros((3, 3)), 2) == []                 # no objects, no crop


@pytest.mark.parametrize("fmt", ["parquet", "geojson"])
def test_read_objects_within_a_box_keeps_centroids_inside(tmp_path, fmt):
    recs = [make_record(box(x, y, x + 4, y + 4), "nuclei", 6, "connective", 1.0, 0.5)
            for x in range(0, 100, 10) for y in range(0, 100, 10)]
    path = tmp_path / f"o.{fmt}"
    (write_geoparquet if fmt == "parquet" else write_geojson)(path, recs)
    got = read_objects(path, within=(20, 30, 50, 60))
    assert len(got) == 3 * 3
    assert got.centroid_x.between(20, 50).all() and got.centroid_y.between(30, 60).all()
    assert len(read_objects(path)) == 100


def test_segment_writes_crops_of_the_densest_regions(phantom_slide, tmp_path):
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["-q", "segment", str(phantom_slide), "-o", str(out), *FAST,
                                    "--overlay-crops", "2"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    record = json.loads((out / "phantom.run.json").read_text())
    # A 640 px slide at 0.5 um/px is a 2 x 2 grid of 200 um cells that all touch: one crop.
    assert record["outputs"]["overlay_crop_1"] == "phantom.crop-1.overlay.png"
    assert "overlay_crop_2" not in record["outputs"]
    assert "phantom.crop-1.overlay.png" in record["files"]
    crop = cv2.imread(str(out / "phantom.crop-1.overlay.png"))[:, :, ::-1]
    objects = gpd.read_parquet(out / "phantom.parquet")
    nuclei = objects[objects.task == "nuclei"]
    cells = np.zeros((2, 2))
    np.add.at(cells, ((nuclei.centroid_y // 400).astype(int), (nuclei.centroid_x // 400).astype(int)), 1)
    row, col = np.unravel_index(np.argmax(cells), cells.shape)
    x0, y0 = col * 400, row * 400
    w, h = min(400, 640 - x0), min(400, 640 - y0)
    assert crop.shape[0] >= h and crop.shape[1] == w + 250           # the slide region and the legend
    slide = np.asarray(tiffslide.TiffSlide(str(phantom_slide)).read_region((x0, y0), 0, (w, h)))[..., :3]
    region = crop[:h, :w]
    drawn = np.any(region != slide, axis=2)
    # Outlines at full resolution: the commonest nucleus class's colour is drawn, and
    # everything not drawn over is the slide's own pixels.
    top = nuclei.class_name.mode()[0]
    colour = class_color("nuclei", int(nuclei[nuclei.class_name == top].class_id.iloc[0]), top)
    assert (region[drawn] == colour).all(axis=1).sum() > 100
    assert 0.02 < drawn.mean() < 0.6
    # A rerun without crops drops them with the rest of the old set.
    res = CliRunner().invoke(main, ["-q", "segment", str(phantom_slide), "-o", str(out), *FAST,
                                    "--overwrite"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert not (out / "phantom.crop-1.overlay.png").exists()


@pytest.mark.parametrize("args, message", [(["--overlay-crops", "-1"], "--overlay-crops must be >= 0"),
                                           (["--overlay-crops", "2", "--no-overlay"],
                                            "--overlay-crops draws on the overlay")])
def test_bad_crop_options_are_refused(phantom_slide, tmp_path, args, message):
    res = CliRunner().invoke(main, ["segment", str(phantom_slide), "-o", str(tmp_path / "o"), *args])
    assert res.exit_code != 0 and message in res.output
    assert "Traceback" not in res.output and not (tmp_path / "o").exists()
