"""Tissue detection on synthetic tissue of known area, and user masks."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import tifffile

from cerberus_cli.core.errors import InputError
from cerberus_cli.slides import (
    TissueMask,
    detect_tissue,
    load_mask,
    open_slide,
    tissue_from_rgb,
)
from tests._slide_fixtures import REAL_SLIDE, he_tissue, write_variant

H, W, MPP = 1500, 2000, 1.0


@pytest.fixture(scope="module")
def tissue_slide(tmp_path_factory):
    img, truth = he_tissue(H, W, seed=2)
    path = write_variant(tmp_path_factory.mktemp("tissue") / "tissue.svs", img, mpp=MPP,
                         objective_power=10)
    return path, truth


def test_detects_known_tissue_area_and_ignores_pen_and_dust(tissue_slide):
    path, truth = tissue_slide
    mask = detect_tissue(open_slide(path), mpp=8.0)
    assert mask.mpp == 8.0 and mask.mask.dtype == bool
    assert mask.mask.shape == (188, 250)  # ceil(1500 / 8), ceil(2000 / 8)
    # Stated tolerance: the fraction within 2 percentage points of the truth.
    assert mask.fraction == pytest.approx(truth.mean(), abs=0.02)
    full = cv2.resize(mask.mask.astype(np.uint8), (W, H), interpolation=cv2.INTER_NEAREST) > 0
    assert (full & ~truth).mean() < 0.01  # pen strokes and dust are not tissue
    assert mask.method == "od" and mask.warning is None
    assert (~full & truth).mean() < 0.02
    # the pen strokes' rows/columns carry no tissue at all
    assert not full[int(0.9 * H):, :].any()
    assert not full[: int(0.4 * H), int(0.9 * W):].any()
    assert not full[: int(0.08 * H), : int(0.5 * W)].any()  # black marker


def test_blank_glass_has_no_tissue():
    rng = np.random.default_rng(0)
    glass = np.clip(245 + rng.integers(-4, 5, (200, 300, 3)), 0, 255).astype(np.uint8)
    assert not tissue_from_rgb(glass, 8.0).any()


def test_all_tissue_is_all_tissue():
    rng = np.random.default_rng(0)
    pink = np.clip(np.array([220, 140, 185]) + rng.integers(-15, 15, (200, 300, 3)), 0, 255)
    assert tissue_from_rgb(pink.astype(np.uint8), 8.0).mean() > 0.99


def test_real_slide_has_plausible_tissue():
    slide = open_slide(REAL_SLIDE)
    mask = detect_tissue(slide)
    # A strip of skin over about 40% of the field (examples/real_slide_tissue_mask.png).
    assert mask.mpp == 4.0 and mask.method == "od" and mask.warning is None
    assert 0.3 < mask.fraction < 0.5
    assert mask.mask[200, 120]  # inside the tissue strip
    assert mask.mask[135, 30]  # the thin strand on its left
    assert not mask.mask[10, 10] and not mask.mask[-5, -5]  # glass corners
    assert not mask.mask[75, 260]  # a dust speck on the glass


def test_raster_mask_any_resolution(tissue_slide, tmp_path):
    path, truth = tissue_slide
    slide = open_slide(path)
    small = cv2.resize(truth.astype(np.uint8) * 255, (400, 300), interpolation=cv2.INTER_AREA)
    png = tmp_path / "mask.png"
    cv2.imwrite(str(png), small)
    m = load_mask(png, slide)
    assert m.mask.shape == (300, 400) and m.mpp == pytest.approx(MPP * W / 400)
    assert m.fraction == pytest.approx(truth.mean(), abs=0.01)
    tif = tmp_path / "mask.tif"
    tifffile.imwrite(tif, small > 0)
    assert load_mask(tif, slide).fraction == pytest.approx(m.fraction)
    wrong = tmp_path / "wrong.png"
    cv2.imwrite(str(wrong), np.zeros((100, 400), np.uint8))
    with pytest.raises(InputError, match=r"wrong\.png: mask is 400x100 but slide tissue\.svs is 2000x1500"):
        load_mask(wrong, slide)


def _square(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


def test_geojson_masks(tissue_slide, tmp_path):
    slide = open_slide(tissue_slide[0])
    # a 800 x 800 px square with a 400 x 400 hole, and a separate 400 x 400 square
    poly = {"type": "Polygon", "coordinates": [_square(100, 100, 900, 900), _square(300, 300, 700, 700)]}
    other = {"type": "MultiPolygon", "coordinates": [[_square(1200, 800, 1600, 1200)]]}
    expected = (800 * 800 - 400 * 400 + 400 * 400) / (W * H)
    collection = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": poly, "properties": {"objectType": "annotation"}},
        {"type": "Feature", "geometry": other, "properties": {}},
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [5, 5]}, "properties": {}},
    ]}
    qupath = [collection["features"][0], collection["features"][1]]  # QuPath: a bare list
    for name, doc in (("fc.geojson", collection), ("qupath.json", qupath)):
        f = tmp_path / name
        f.write_text(json.dumps(doc))
        m = load_mask(f, slide, mpp=4.0)
        assert isinstance(m, TissueMask) and m.mpp == 4.0 and m.mask.shape == (375, 500)
        assert m.fraction == pytest.approx(expected, rel=0.02)
        assert not m.mask[500 // 4, 500 // 4]  # the hole
        assert m.mask[150 // 4, 150 // 4]
    bad = tmp_path / "bad.geojson"
    bad.write_text("{not json")
    with pytest.raises(InputError, match=r"bad\.geojson: not valid JSON"):
        load_mask(bad, slide)
    points = tmp_path / "points.geojson"
    points.write_text(json.dumps({"type": "Point", "coordinates": [1, 2]}))
    with pytest.raises(InputError, match="no Polygon or MultiPolygon"):
        load_mask(points, slide)
    with pytest.raises(InputError, match="no such mask file"):
        load_mask(tmp_path / "absent.png", slide)
