"""Tissue-map outputs (zarr, PNG, region polygons) and the QC overlay."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
import shapely
from shapely.geometry import Point, box

from cerberus_cli.core.errors import CerberusError
from cerberus_cli.core.records import make_record, make_records
from cerberus_cli.core.vocabulary import NUCLEUS_TYPES, TISSUE_TYPES
from cerberus_cli.outputs.overlay import OverlayCanvas, write_overlay
from cerberus_cli.outputs.tissue_map import colorize, read_tissue_map, write_tissue_map
from cerberus_cli.postprocess.tissue_regions import tissue_regions


def _tissue() -> np.ndarray:
    c = np.zeros((50, 60), np.uint8)
    c[5:30, 5:40] = 5          # stroma ...
    c[10:20, 10:20] = 1        # ... around a tumour island
    c[40:48, 45:58] = 8        # adipose
    c[2, 55] = 6               # one-cell speck (below min_cells)
    return c


def test_tissue_map_zarr_and_png(tmp_path):
    c = _tissue()
    zp, pp = write_tissue_map(tmp_path / "s.tissue.zarr", tmp_path / "s.tissue.png", c, 8.0)
    classes, attrs = read_tissue_map(zp)
    assert classes.dtype == np.uint8 and attrs["mpp"] == 8.0
    assert [d["name"] for d in attrs["classes"]] == [s.name for s in TISSUE_TYPES]
    assert (classes == c).all() and attrs["classes"][5]["color"] == [255, 170, 200]
    png = cv2.imread(str(pp), cv2.IMREAD_COLOR)[:, :, ::-1]
    assert (png == colorize(c)).all()
    assert tuple(png[15, 15]) == TISSUE_TYPES[1].color
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.tissue.png", "s.tissue.zarr"]
    with pytest.raises(CerberusError, match="already exists"):
        write_tissue_map(zp, tmp_path / "other.png", c, 8.0)
    assert not (tmp_path / "other.png").exists()
    with pytest.raises(ValueError, match="class id 20 beyond"):
        write_tissue_map(tmp_path / "b.zarr", tmp_path / "b.png", c + 12, 8.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.tissue.png", "s.tissue.zarr"]


def test_tissue_regions_are_polygons_with_holes_in_level0():
    c = _tissue()
    recs = tissue_regions(c, scale=32.0, mpp=0.25)
    by_name = {r.class_name: r for r in recs}
    assert set(by_name) == {"stroma", "abnormal epithelium", "adipose"}
    stroma = by_name["stroma"]
    assert stroma.task == "tissue" and stroma.class_id == 5
    assert len(stroma.geometry.interiors) == 1
    cell_um2 = (32 * 0.25) ** 2
    assert stroma.area_um2 == pytest.approx((c == 5).sum() * cell_um2, rel=0.01)
    assert by_name["adipose"].geometry.bounds == pytest.approx(
        (45 * 32, 40 * 32, 58 * 32, 48 * 32), abs=8.1)
    assert stroma.geometry.contains(Point(7 * 32, 7 * 32))
    assert not stroma.geometry.contains(Point(15 * 32, 15 * 32))
    conf = np.full(c.shape, 0.5)
    assert all(r.probability == 0.5 for r in tissue_regions(c, 32.0, 0.25, confidence=conf))
    again = tissue_regions(c, 32.0, 0.25)
    assert [r.uuid for r in again] == [r.uuid for r in recs]


def _records(n: int, extent: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    geoms = shapely.buffer(shapely.points(rng.uniform(0, extent, (n, 2))), 12, quad_segs=4)
    cls = rng.integers(1, 7, n)
    return make_records(list(geoms), "nuclei", cls, [NUCLEUS_TYPES[c].name for c in cls],
                        np.ones(n), 0.25, [str(i) for i in range(n)])


def test_overlay_draws_class_coloured_outlines(tmp_path):
    thumb = np.full((100, 120, 3), 255, np.uint8)
    gland = box(400, 400, 1600, 1200).difference(box(800, 700, 1200, 900))
    recs = [make_record(gland, "gland", 1, "gland", 1.0, 0.25),
            make_record(box(2000, 200, 2200, 400), "nuclei", 2, "epithelial", 1.0, 0.25)]
    out = write_overlay(tmp_path / "o.png", thumb, recs, scale=0.05)
    img = cv2.imread(str(out), cv2.IMREAD_COLOR)[:, :, ::-1]
    assert tuple(img[20, 50]) == (0, 200, 0)       # gland exterior, top edge
    assert tuple(img[35, 50]) == (0, 200, 0)       # gland hole, top edge
    assert tuple(img[30, 50]) == (255, 255, 255)   # inside stays thumbnail
    assert tuple(img[15, 100]) == (255, 0, 0)      # epithelial nucleus, red
    assert (thumb == 255).all()                    # caller's array untouched
    with pytest.raises(CerberusError, match="already exists"):
        write_overlay(out, thumb, recs, 0.05)
    with pytest.raises(ValueError, match="RGB"):
        OverlayCanvas(np.zeros((10, 10), np.uint8), 1.0)


def test_overlay_of_many_objects_is_fast():
    recs = _records(100_000, 40_000)
    canvas = OverlayCanvas(np.zeros((1000, 1000, 3), np.uint8), scale=1 / 40)
    t0 = time.perf_counter()
    canvas.draw(recs)
    assert time.perf_counter() - t0 < 10.0  # measured ~1.5 s on a shared 2-core CPU
    assert (canvas.rgb().sum(axis=2) > 0).mean() > 0.2
    assert shapely.get_num_coordinates(recs[0].geometry) == 17
