"""Phantom label rasters have the area of the polygons they come from.

Tiles train the model on rasters and slides are scored against polygons; when the
two disagree (a filled outline adds a pixel ring, about a fifth of a nucleus), a model
that is right on tiles is wrong on slides.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely

from cerberus_cli.synthetic.params import SLIDE_SCENE
from cerberus_cli.synthetic.scene import PhantomWorld
from cerberus_cli.synthetic.slide import write_phantom_slide

SIDE = 320


def _nucleus_polygons(lab) -> list:
    n = lab.nuclei
    polys = n.polygons()
    return [shapely.union_all([shapely.Polygon(polys[i, j]) for j in range(int(n.nlobes[i]))])
            for i in range(len(n))]


def test_each_nucleus_raster_has_its_polygon_area():
    lab = PhantomWorld(11).labels(0, 0, SIDE, SIDE)
    ids, counts = np.unique(lab.nucleus, return_counts=True)
    pixels = dict(zip(ids.tolist(), counts.tolist()))
    ratios, poly_total, raster_total = [], 0.0, 0
    for i, geom in enumerate(_nucleus_polygons(lab)):
        x0, y0, x1, y1 = geom.bounds
        if x0 < 1 or y0 < 1 or x1 > SIDE - 2 or y1 > SIDE - 2:
            continue   # cut by the window
        area = pixels.get(i + 1, 0)
        ratios.append(area / geom.area)
        poly_total += geom.area
        raster_total += area
    ratios_a = np.asarray(ratios)
    assert len(ratios_a) > 30
    assert abs(raster_total / poly_total - 1) < 0.02
    assert abs(np.median(ratios_a) - 1) < 0.02
    assert np.percentile(np.abs(ratios_a - 1), 95) < 0.08
    # Glands and lumina: the same rule.
    g = lab.glands
    for k in range(len(g)):
        lumen = shapely.Polygon(g.lumen_outline(k))
        x0, y0, x1, y1 = lumen.bounds
        if x0 > 1 and y0 > 1 and x1 < SIDE - 2 and y1 < SIDE - 2 and lumen.area > 100:
            assert abs(np.sum(lab.lumen == k + 1) / lumen.area - 1) < 0.05


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
