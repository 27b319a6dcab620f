"""Phantom slides: readable by OpenSlide and tiffslide, seamless, truth matches labels."""

from __future__ import annotations

import json

import cv2
import geopandas as gpd
import numpy as np
import openslide
import pytest
import shapely
import tiffslide
from click.testing import CliRunner
from skimage.draw import polygon as draw_polygon

import cerberus_cli.synthetic.slide as slide_mod
from cerberus_cli.cli import main
from cerberus_cli.core.errors import InputError
from cerberus_cli.synthetic.params import KIND_SURFACE, SLIDE_SCENE
from cerberus_cli.synthetic.scene import PhantomWorld
from cerberus_cli.synthetic.slide import BLOCK, _Renderer, parse_size, write_phantom_slide

W, H = BLOCK + 180, 700   # two blocks wide: objects cross the seam


@pytest.fixture(scope="module")
def svs(tmp_path_factory):
    path = tmp_path_factory.mktemp("slide") / "phantom.svs"
    write_phantom_slide(path, (W, H), seed=5)
    return path


def test_blocks_stitch_exactly():
    r = _Renderer(5, SLIDE_SCENE, 1, 600, 400)
    whole, _ = r.block(0, 0, 600, 400)
    left, _ = r.block(0, 0, 256, 400)
    right, _ = r.block(256, 0, 344, 400)
    assert np.array_equal(whole, np.hstack([left, right]))


def test_svs_opens_with_size_and_mpp(svs):
    with openslide.OpenSlide(str(svs)) as s:
        assert s.dimensions == (W, H)
        assert s.properties["openslide.vendor"] == "aperio"
        assert float(s.properties["openslide.mpp-x"]) == 0.5
        thumb = np.asarray(s.associated_images["thumbnail"].convert("RGB"))
        assert abs(thumb.shape[0] - H // 4) <= 1 and abs(thumb.shape[1] - W // 4) <= 1
        assert thumb.std() > 10
        region = np.asarray(s.read_region((0, 0), 0, (W, H)).convert("RGB"))
    with tiffslide.TiffSlide(str(svs)) as t:
        assert t.dimensions == (W, H)
        assert float(t.properties["tiffslide.mpp-x"]) == 0.5
        region2 = np.asarray(t.read_region((0, 0), 0, (W, H)).convert("RGB"))
    assert np.abs(region.astype(int) - region2.astype(int)).mean() < 2
    # Stained tissue and white glass, not a blank image.
    assert region.std() > 20


def test_truth_matches_the_label_rasters(svs):
    """Truth polygons, filled back into pixels, reproduce the labels of the slide."""
    truth = gpd.read_parquet(svs.with_name("phantom.truth.parquet"))
    assert truth["uuid"].is_unique
    assert truth.geometry.is_valid.all()
    xmin, ymin, xmax, ymax = truth.total_bounds
    assert xmin >= 0 and ymin >= 0 and xmax <= W and ymax <= H
    assert set(truth["task"]) == {"nuclei", "gland", "lumen", "tissue"}
    # A margin: cv2 clips polygons at a raster's own border slightly differently.
    m = 8
    lab = PhantomWorld(5, SLIDE_SCENE).labels(-m, -m, W + 2 * m, H + 2 * m)
    inner = (slice(m, m + H), slice(m, m + W))
    for task, ref in (("nuclei", lab.nucleus[inner] > 0),
                      ("gland", ((lab.gland > 0) & (lab.gland_kind != KIND_SURFACE))[inner]),
                      ("lumen", lab.lumen[inner] > 0)):
        sel = truth[truth.task == task]
        if task == "gland":
            sel = sel[sel.class_id == 1]  # closed glands; surface bands are raster-derived
        mask = np.zeros((H, W), np.uint8)
        for geom in sel.geometry:
            for poly in getattr(geom, "geoms", [geom]):
                # Pixel outlines: the pixels whose centres they hold (holes left open).
                xy = np.asarray(poly.exterior.coords) - 0.5   # pixel centres at integers
                rr, cc = draw_polygon(xy[:, 1], xy[:, 0], mask.shape)
                mask[rr, cc] = 1
        inter = np.sum((mask > 0) & ref)
        union = np.sum((mask > 0) | ref)
        assert inter / union > 0.999, task
        # Truth area is label area (what the image shows), to the pixel.
        assert abs(sel.geometry.area.sum() - np.sum(ref)) < 1e-3, task
    # Nuclei: one record per raster object, no duplicates across the block seam.
    n_raster = len(np.unique(lab.nucleus[inner])) - 1
    n_truth = int(np.sum(truth.task == "nuclei"))
    assert abs(n_truth - n_raster) <= 2
    # Lumina point at the gland that encloses them.
    glands = truth[truth.task == "gland"].set_index("uuid")
    for _, lum in truth[truth.task == "lumen"].iterrows():
        assert shapely.contains(glands.geometry[lum.parent_uuid].buffer(1), lum.geometry)


def test_truth_side_files(svs):
    info = json.loads(svs.with_name("phantom.truth.json").read_text())
    assert info["seed"] == 5 and info["mpp"] == 0.5 and info["width"] == W
    assert info["tissue_map"]["mpp"] == 8.0
    assert set(info["counts"]["nuclei"]) <= {"neutrophil", "epithelial", "lymphocyte", "plasma",
                                             "eosinophil", "connective"}
    assert sum(info["counts"]["nuclei"].values()) > 100
    tmap = cv2.imread(str(svs.with_name("phantom.tissue.png")), cv2.IMREAD_UNCHANGED)
    assert tmap.dtype == np.uint8 and tmap.shape == (-(-H // 16), -(-W // 16))
    assert tmap.max() <= 8
    gj = json.loads(svs.with_name("phantom.truth.geojson").read_text())
    assert gj["type"] == "FeatureCollection"
    types = {f["properties"]["objectType"] for f in gj["features"]}
    assert types <= {"detection", "annotation"}
    # Our own fields sit under properties.metadata (QuPath keeps them there).
    assert sum(info["counts"]["nuclei"].values()) == sum(
        f["properties"].get("metadata", f["properties"])["task"] == "nuclei" for f in gj["features"])


def test_same_seed_gives_identical_files(svs, tmp_path):
    again = tmp_path / "phantom.svs"
    write_phantom_slide(again, (W, H), seed=5)
    for suffix in (".svs", ".truth.parquet", ".truth.geojson", ".tissue.png", ".truth.json"):
        a = svs.with_name("phantom" + suffix).read_bytes()
        b = again.with_name("phantom" + suffix).read_bytes()
        assert a == b, suffix


def test_tiff_at_40x_with_pyramid(tmp_path, monkeypatch):
    # Force the on-disk buffer for the reduced level (used for very large slides).
    monkeypatch.setattr(slide_mod, "IN_MEMORY_LEVEL_BYTES", 1000)
    path = tmp_path / "p40.tiff"
    info = write_phantom_slide(path, (2600, 600), seed=2, mpp=0.25, truth=False)
    assert len(info["levels"]) == 2
    with openslide.OpenSlide(str(path)) as s:
        assert s.dimensions == (2600, 600)
        assert s.level_count == 2
        assert abs(float(s.properties["openslide.mpp-x"]) - 0.25) < 1e-6
        full = np.asarray(s.read_region((0, 0), 0, (2600, 600)).convert("RGB"))
        dims1 = s.level_dimensions[1]
        small = np.asarray(s.read_region((0, 0), 1, dims1).convert("RGB"))
    # The reduced level is the 4x reduction of level 0.
    expect = cv2.resize(full, dims1, interpolation=cv2.INTER_AREA)
    assert np.abs(expect.astype(int) - small.astype(int)).mean() < 4
    with tiffslide.TiffSlide(str(path)) as t:
        assert t.dimensions == (2600, 600)
        assert abs(float(t.properties["tiffslide.mpp-x"]) - 0.25) < 1e-6
    assert not path.with_name("p40.truth.parquet").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p40.tiff"]


def test_parse_size():
    assert parse_size("8192x4096") == (8192, 4096)
    assert parse_size("512") == (512, 512)
    for bad in ("12x", "axb", "100x100"):
        with pytest.raises(InputError):
            parse_size(bad)


def test_cli_slide_and_refusals(tmp_path):
    out = tmp_path / "s.svs"
    args = ["synth", "slide", str(out), "--size", "512x384", "--seed", "1"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert out.is_file() and (tmp_path / "s.truth.parquet").is_file()
    before = out.read_bytes()
    r = CliRunner().invoke(main, args + ["--seed", "2"])
    assert r.exit_code == 2 and "error:" in r.output and "exists" in r.output
    assert out.read_bytes() == before
    r = CliRunner().invoke(main, ["synth", "slide", str(tmp_path / "x.png"), "--size", "512"])
    assert r.exit_code == 2 and "svs or tiff" in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["s.svs", "s.truth.parquet", "s.truth.geojson", "s.tissue.png", "s.truth.json"])


@pytest.mark.parametrize("mpp", [0.5, 0.25])
def test_truth_lies_on_the_slide_pixels(tmp_path, mpp):
    """Nuclei polygons (level-0 px) cover dark pixels of the written image, at 20x and 40x."""
    path = tmp_path / "t.svs"
    w, h = 900, 700
    write_phantom_slide(path, (w, h), seed=3, mpp=mpp)
    with openslide.OpenSlide(str(path)) as s:
        img = np.asarray(s.read_region((0, 0), 0, (w, h)).convert("RGB")).astype(float)
    grey = img.mean(axis=2)
    truth = gpd.read_parquet(tmp_path / "t.truth.parquet")
    mask = np.zeros((h, w), np.uint8)
    for geom in truth[truth.task == "nuclei"].geometry:
        for poly in getattr(geom, "geoms", [geom]):
            pts = np.round((np.asarray(poly.exterior.coords) - 0.5) * 16).astype(np.int32)
            cv2.fillPoly(mask, [pts], 1, shift=4)
    nuc = mask > 0
    tissue = (grey < 225) & ~cv2.dilate(mask, np.ones((5, 5), np.uint8)).astype(bool)
    assert nuc.sum() > 2000
    assert grey[nuc].mean() < grey[tissue].mean() - 40
    # Shifting the polygons by a few pixels loses the match: the coordinates are exact.
    shifted = np.roll(nuc, 6, axis=1)
    assert grey[shifted].mean() > grey[nuc].mean() + 20
