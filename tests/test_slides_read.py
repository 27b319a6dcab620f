"""Readers: both slide backends give the same pixels, metadata and white outside."""

from __future__ import annotations

import multiprocessing as mp
import pickle

import cv2
import numpy as np
import pytest

from cerberus_cli.core.errors import InputError
from cerberus_cli.slides import (
    best_level,
    open_slide,
    read_scaled,
    scaled_size,
    thumbnail,
)
from tests._slide_fixtures import smooth_image, write_variant

# 1000 x 1300: not a multiple of the 256 px tile; level 2 (1/16) has a
# non-integer downsample (62 rows for 62.5).
H, W = 1000, 1300
VARIANTS = [
    ("svs", "jpeg", ".svs"),
    ("svs", "zlib", ".svs"),
    ("tiff", "jpeg", ".tif"),
    ("tiff", "lzw", ".tif"),
    ("ome", "zlib", ".ome.tif"),
]


@pytest.fixture(scope="module")
def source() -> np.ndarray:
    return smooth_image(H, W, seed=7)


@pytest.fixture(scope="module")
def slides(tmp_path_factory, source):
    root = tmp_path_factory.mktemp("slides")
    return {(lay, comp): write_variant(root / f"s_{lay}_{comp}{ext}", source, layout=lay,
                                       compression=comp)
            for lay, comp, ext in VARIANTS}


@pytest.mark.parametrize("layout,compression", [(v[0], v[1]) for v in VARIANTS])
def test_backends_agree_on_metadata_and_pixels(slides, source, layout, compression):
    path = slides[(layout, compression)]
    ts = open_slide(path, backend="tiffslide")
    assert ts.dimensions == (W, H)
    assert ts.level_dimensions == ((W, H), (W // 4, H // 4), (W // 16, H // 16))
    assert ts.mpp == pytest.approx(0.25)
    if layout == "ome":
        # OpenSlide does not read SubIFD pyramids: auto must pick tiffslide.
        assert open_slide(path).backend == "tiffslide"
        others = [open_slide(path, backend="openslide")]
        assert others[0].level_count == 1
    else:
        others = [open_slide(path, backend="openslide"), open_slide(path)]
        assert others[1].backend == "openslide"
    for osl in others:
        assert osl.dimensions == ts.dimensions
        assert osl.mpp == pytest.approx(ts.mpp)
        for level in range(osl.level_count):
            assert osl.level_dimensions[level] == ts.level_dimensions[level]
            lw, lh = ts.level_dimensions[level]
            a = osl.read_level(level, 0, 0, lw, lh)
            b = ts.read_level(level, 0, 0, lw, lh)
            assert a.dtype == np.uint8 and a.shape == (lh, lw, 3)
            ds = ts.level_downsamples[level]
            if ds == int(ds):
                np.testing.assert_array_equal(a, b)
            else:
                # OpenSlide interpolates the sub-pixel part of x * downsample.
                assert np.abs(a.astype(int) - b).max() <= 3
            # a region that straddles tile edges, inside the level
            np.testing.assert_array_equal(
                ts.read_level(level, lw // 3, lh // 5, lw // 2, lh // 2),
                b[lh // 5:lh // 5 + lh // 2, lw // 3:lw // 3 + lw // 2])
    level0 = ts.read_level(0, 0, 0, W, H)
    if compression == "jpeg":
        # JPEG at quality 95 with chroma subsampling of saturated colours
        assert np.abs(level0.astype(int) - source).mean() < 4.0
    else:
        np.testing.assert_array_equal(level0, source)


@pytest.mark.parametrize("backend", ["openslide", "tiffslide"])
def test_outside_the_slide_is_white(slides, source, backend):
    s = open_slide(slides[("svs", "zlib")], backend=backend)
    region = s.read_region(W - 50, H - 30, 0, 100, 100)
    assert region.shape == (100, 100, 3)
    np.testing.assert_array_equal(region[:30, :50], source[H - 30:, W - 50:])
    assert (region[30:] == 255).all() and (region[:, 50:] == 255).all()
    left = s.read_region(-20, -10, 0, 40, 40)
    assert (left[:10] == 255).all() and (left[:, :20] == 255).all()
    with pytest.raises(InputError, match="outside the slide"):
        s.read_region(W + 10, 0, 0, 50, 50)
    with pytest.raises(InputError, match="level 5 does not exist"):
        s.read_region(0, 0, 5, 10, 10)


def test_read_region_level_coordinates(slides):
    s = open_slide(slides[("svs", "zlib")], backend="tiffslide")
    full = s.read_level(1, 0, 0, *s.level_dimensions[1])
    np.testing.assert_array_equal(s.read_region(400, 200, 1, 30, 20), full[50:70, 100:130])


def test_read_scaled_matches_area_resize(slides, source):
    s = open_slide(slides[("svs", "zlib")])
    assert s.mpp == pytest.approx(0.25)
    # 0.5 um/px is 2x level 0: one exact area average of the level-0 pixels
    got = read_scaled(s, 100, 50, 200, 150, 0.5)
    want = cv2.resize(source[100:400, 200:600], (200, 150), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(got, want)
    # tiles of a grid stitch to the same pixels as one large read
    big = read_scaled(s, 0, 0, 256, 256, 0.5)
    tiles = np.vstack([np.hstack([read_scaled(s, x, y, 128, 128, 0.5) for x in (0, 128)]) for y in (0, 128)])
    np.testing.assert_array_equal(tiles, big)
    # the edge of the grid is white beyond the slide
    gw, gh = scaled_size(s, 0.5)
    assert (gw, gh) == (650, 500)
    edge = read_scaled(s, gw - 10, gh - 10, 20, 20, 0.5)
    assert (edge[10:] == 255).all() and (edge[:, 10:] == 255).all()
    assert not (edge[:10, :10] == 255).all()


def test_level_choice_and_thumbnail(slides):
    s = open_slide(slides[("svs", "jpeg")])
    assert best_level(s, 2.0) == 0
    assert best_level(s, 4.0) == 1
    assert best_level(s, 3.97) == 1  # within the 1 % slack
    assert best_level(s, 3.9) == 0
    assert best_level(s, 100.0) == 2
    assert best_level(s, 0.5) == 0
    th = thumbnail(s, 8.0)
    assert th.shape == (32, 41, 3) and th.dtype == np.uint8
    # enlarging (finer than level 0) interpolates
    assert read_scaled(s, 0, 0, 40, 30, 0.125).shape == (30, 40, 3)


def _read_in_child(slide):
    return read_scaled(slide, 10, 10, 64, 64, 0.5)


@pytest.mark.parametrize("backend", ["openslide", "tiffslide"])
def test_slide_pickles_and_reads_in_worker_processes(slides, backend):
    s = open_slide(slides[("svs", "jpeg")], backend=backend, mpp=0.26)
    want = _read_in_child(s)
    clone = pickle.loads(pickle.dumps(s))
    assert clone.mpp == 0.26 and clone.backend == backend and clone._handle is None
    np.testing.assert_array_equal(_read_in_child(clone), want)
    for method in ("spawn", "fork"):
        with mp.get_context(method).Pool(1) as pool:
            np.testing.assert_array_equal(pool.apply(_read_in_child, (s,)), want)
    s.close()
    np.testing.assert_array_equal(_read_in_child(s), want)  # reopens lazily


def test_context_manager_and_repr(slides):
    with open_slide(slides[("tiff", "jpeg")]) as s:
        assert s.vendor == "generic-tiff"
        assert repr(s).startswith("Slide(") and "openslide" in repr(s)
    assert s._handle is None


def test_associated_images(slides):
    for backend in ("openslide", "tiffslide"):
        s = open_slide(slides[("svs", "jpeg")], backend=backend)
        assert {"label", "macro", "thumbnail"} <= set(s.associated_images)
        label = s.associated_image("label")
        assert label.shape == (60, 50, 3) and label.dtype == np.uint8
        with pytest.raises(InputError, match="no associated image"):
            s.associated_image("barcode")


def test_openslide_fast_path_matches_public_api_and_composites_white(slides):
    from cerberus_cli.slides.backends import OpenSlideBackend, to_rgb

    b = OpenSlideBackend(slides[("svs", "zlib")])
    # straddles the slide's top-left corner: OpenSlide returns transparent pixels there
    fast = b._read_raw(-40, -30, 0, 100, 80)
    public = to_rgb(np.asarray(b._osr.read_region((-40, -30), 0, (100, 80))))
    np.testing.assert_array_equal(fast, public)
    assert (fast[:30] == 255).all() and (fast[:, :40] == 255).all()
    assert not (fast[30:, 40:] == 255).all()
    b.close()


def test_to_rgb_normalises_pixel_layouts():
    from cerberus_cli.slides.backends import to_rgb

    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = [[255, 0], [128, 255]]
    out = to_rgb(rgba)
    assert out.tolist()[0] == [[200, 0, 0], [255, 255, 255]]
    assert out[1, 0].tolist() == [227, 127, 127]  # 200 * 128/255 + 255 * 127/255
    grey16 = np.full((2, 3), 65535, np.uint16)
    assert (to_rgb(grey16) == 255).all() and to_rgb(grey16).shape == (2, 3, 3)


def test_non_integer_ratio_stays_aligned(tmp_path, source):
    from cerberus_cli.slides import write_slide

    path = write_slide(tmp_path / "frac.tif", source, 0.3, layout="tiff", compression="zlib")
    s = open_slide(path)
    assert scaled_size(s, 0.5) == (780, 600)
    ref = cv2.resize(source, (780, 600), interpolation=cv2.INTER_AREA)  # one global resize
    for x, y in ((100, 100), (333, 217), (517, 401)):
        want = ref[y:y + 150, x:x + 150].astype(int)
        err = np.abs(read_scaled(s, x, y, 150, 150, 0.5).astype(int) - want).mean()
        shifted = np.abs(read_scaled(s, x + 1, y, 150, 150, 0.5).astype(int) - want).mean()
        # within half a level pixel: far closer than a one-pixel shift
        assert err < 7 and shifted > 2 * err


def test_large_reads_are_banded(slides, monkeypatch):
    from cerberus_cli.slides import scale

    s = open_slide(slides[("svs", "zlib")])
    whole = read_scaled(s, 0, 0, 650, 500, 0.5)
    monkeypatch.setattr(scale, "_BAND_PIXELS", 50_000)  # forces ~30 bands
    np.testing.assert_array_equal(read_scaled(s, 0, 0, 650, 500, 0.5), whole)
