"""Phantom slide truth has the area of the label rasters tiles are made of.

Tiles train the model on rasters and slides are scored against truth polygons; when the
two disagree (cv2 fills every pixel a polygon's outline touches, about a fifth of a
nucleus, a pixel all round a gland or lumen), a model that is right on tiles is wrong on
slides. Nuclei, gland and lumen truth is therefore traced from the rasters.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely

from cerberus_cli.synthetic.params import SLIDE_SCENE
from cerberus_cli.synthetic.scene import PhantomWorld
from cerberus_cli.synthetic.slide import write_phantom_slide
from cerberus_cli.synthetic.truth import TruthCollector, raster_outlines

SIDE = 320


def test_each_nucleus_outline_holds_exactly_its_raster_pixels():
    lab = PhantomWorld(11).labels(5, 7, SIDE, SIDE)
    n = lab.nuclei
    ids = np.arange(1, len(n) + 1)
    outlines = raster_outlines(lab.nucleus, ids, n.polygons(), lab.x0, lab.y0)
    counts = np.bincount(lab.nucleus.ravel(), minlength=len(n) + 1)[1:]
    assert (counts > 0).sum() > 30
    areas = shapely.area(outlines)
    assert np.array_equal(areas, counts.astype(float))
    assert shapely.is_valid(outlines).all()
    ys, xs = np.mgrid[0:SIDE, 0:SIDE]
    for i in np.flatnonzero(counts)[:40]:
        # The pixel centres (world coordinates) each outline holds are its raster.
        held = shapely.contains_xy(outlines[i], xs + lab.x0, ys + lab.y0)
        assert np.array_equal(held, lab.nucleus == i + 1), i
    # The polygons the rasters come from are smaller: the gap the truth must not have.
    polys = n.polygons()
    def local(k: int) -> np.ndarray:
        return polys[k, :int(n.nlobes[k])] - (lab.x0, lab.y0)

    whole = [k for k in np.flatnonzero(counts) if local(k).min() > 2 and local(k).max() < SIDE - 3]
    vec = [shapely.union_all([shapely.Polygon(polys[k, j]) for j in range(int(n.nlobes[k]))]).area
           for k in whole]
    assert 1.1 < counts[whole].sum() / np.sum(vec) < 1.35


@pytest.mark.parametrize("mpp", [0.5, 0.25])
def test_slide_truth_agrees_with_the_tile_labels(tmp_path, mpp):
    """Nucleus areas in um^2: slide truth polygons vs the label raster of the same world."""
    scale = int(round(0.5 / mpp))
    path = tmp_path / "p.svs"
    write_phantom_slide(path, (SIDE * scale, SIDE * scale), seed=4, mpp=mpp)
    truth = gpd.read_parquet(path.with_name("p.truth.parquet"))
    nuc = truth[truth.task == "nuclei"]
    inside = nuc.geometry.bounds
    keep = ((inside.minx > 2 * scale) & (inside.miny > 2 * scale)
            & (inside.maxx < (SIDE - 2) * scale) & (inside.maxy < (SIDE - 2) * scale))
    truth_um2 = nuc.geometry[keep].area.to_numpy() * mpp * mpp
    lab = PhantomWorld(4, SLIDE_SCENE).labels(0, 0, SIDE, SIDE)
    ids, counts = np.unique(lab.nucleus[2:-2, 2:-2], return_counts=True)
    raster_um2 = counts[ids > 0] * 0.25
    assert len(truth_um2) > 30
    assert abs(len(np.unique(lab.nucleus)) - 1 - len(nuc)) <= 2
    assert abs(np.median(truth_um2) / np.median(raster_um2) - 1) < 0.05
    total_um2 = nuc.geometry.area.sum() * mpp * mpp   # every nucleus, clipped to the slide
    assert abs(total_um2 / (np.sum(lab.nucleus > 0) * 0.25) - 1) < 0.03


def test_gland_and_lumen_truth_hold_exactly_their_raster_pixels():
    """Each gland and lumen of the slide truth covers the pixels its label raster holds."""
    # Glands are owned by the inner window and reach up to 135 px beyond it.
    side = 3 * SIDE
    lab = PhantomWorld(5).labels(0, 0, side, side)
    recs = TruthCollector(5, side, side, 0.5).collect(lab, 160, 160, side - 320, side - 320)
    ys, xs = np.mgrid[0:side, 0:side] + 0.5        # level-0 pixel centres
    checked = {"gland": 0, "lumen": 0}
    for rec in recs:
        if rec.task not in checked:
            continue
        raster = lab.gland if rec.task == "gland" else lab.lumen
        held = shapely.contains_xy(rec.geometry, xs, ys)
        ids, counts = np.unique(raster[held], return_counts=True)
        label = ids[np.argmax(counts)]
        assert label > 0
        assert np.array_equal(held, raster == label), (rec.task, label)
        assert rec.geometry.area == held.sum()
        checked[rec.task] += 1
    assert checked["gland"] >= 4 and checked["lumen"] >= 4, checked
