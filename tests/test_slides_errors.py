"""Bad input: each gets a one-line InputError naming the file, or (bad tile) white + warning."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest
import tifffile

from cerberus_cli.core.errors import InputError
from cerberus_cli.slides import open_slide, read_scaled
from tests._slide_fixtures import (
    corrupt_tile,
    smooth_image,
    write_png_with_mpp,
    write_variant,
)


@pytest.fixture(scope="module")
def image():
    return smooth_image(600, 700, seed=11)


def test_missing_directory_empty(tmp_path):
    with pytest.raises(InputError, match=r"nope\.svs: no such file"):
        open_slide(tmp_path / "nope.svs")
    with pytest.raises(InputError, match="is a directory"):
        open_slide(tmp_path)
    empty = tmp_path / "empty.svs"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match=r"empty\.svs: file is empty"):
        open_slide(empty)


def test_png_renamed_svs(tmp_path, image):
    fake = tmp_path / "scan.svs"
    ok, buf = cv2.imencode(".png", image)
    fake.write_bytes(buf.tobytes())
    with pytest.raises(InputError, match=r"scan\.svs: the file is a PNG image but its extension \.svs"):
        open_slide(fake)


def test_garbage_and_truncated(tmp_path, image):
    junk = tmp_path / "junk.svs"
    junk.write_bytes(b"this is not a slide at all" * 10)
    with pytest.raises(InputError, match=r"junk\.svs: not a TIFF file"):
        open_slide(junk)
    mystery = tmp_path / "junk.xyz"
    mystery.write_bytes(b"\x00" * 100)
    with pytest.raises(InputError, match=r"junk\.xyz: not a readable slide"):
        open_slide(mystery)
    full = write_variant(tmp_path / "full.svs", image, compression="jpeg")
    data = full.read_bytes()
    cut = tmp_path / "cut.svs"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut\.svs: (truncated file|corrupt or truncated)"):
        open_slide(cut)
    header_only = tmp_path / "header.svs"
    header_only.write_bytes(data[:6])
    with pytest.raises(InputError, match=r"header\.svs: corrupt or truncated TIFF"):
        open_slide(header_only)


@pytest.mark.parametrize("backend", ["openslide", "tiffslide"])
def test_bad_tile_reads_white_with_warning(tmp_path, image, backend, caplog):
    path = write_variant(tmp_path / "bad.svs", image, compression="zlib")
    corrupt_tile(path, page=0, tile=0)  # level-0 tile (0, 0): pixels [0, 256)
    s = open_slide(path, backend=backend)
    with caplog.at_level(logging.WARNING):
        region = s.read_level(0, 128, 128, 256, 256)
    assert "1 of 4 tiles" in caplog.text and "bad.svs" in caplog.text
    assert (region[:128, :128] == 255).all()
    np.testing.assert_array_equal(region[128:, 128:], image[256:384, 256:384])
    np.testing.assert_array_equal(region[:128, 128:], image[128:256, 256:384])
    # the handle still works for the next, clean read
    np.testing.assert_array_equal(s.read_level(0, 300, 300, 50, 50), image[300:350, 300:350])
    # and the scaled hot path survives it too
    assert read_scaled(s, 0, 0, 100, 100, 0.5).shape == (100, 100, 3)


def test_no_mpp_needs_flag(tmp_path, image):
    path = write_variant(tmp_path / "nompp.tif", image, layout="tiff", compression="jpeg", mpp=None)
    with pytest.raises(InputError, match=r"nompp\.tif: no pixel size \(mpp\).*--mpp"):
        open_slide(path)
    s = open_slide(path, mpp=0.5)
    assert s.mpp == 0.5 and s.mpp_source == "--mpp"
    with pytest.raises(InputError, match="--mpp must be a positive number"):
        open_slide(path, mpp=-1.0)


def test_objective_power_only_warns(tmp_path, image, caplog):
    path = write_variant(tmp_path / "mag.svs", image, mpp=None, objective_power=20)
    with caplog.at_level(logging.WARNING):
        s = open_slide(path)
    assert s.mpp == pytest.approx(0.5)
    assert "assuming 0.5 um/px from the 20x objective power" in caplog.text
    assert s.objective_power == 20


def test_resolution_tags_and_implausible_dpi(tmp_path, image):
    inch = tmp_path / "inch.tif"
    tifffile.imwrite(inch, image, tile=(256, 256), resolution=(25400 / 0.5, 25400 / 0.5),
                     resolutionunit="INCH", metadata=None)
    assert open_slide(inch).mpp == pytest.approx(0.5)
    dpi72 = tmp_path / "dpi72.tif"
    tifffile.imwrite(dpi72, image, resolution=(72, 72), resolutionunit="INCH", metadata=None)
    with pytest.raises(InputError, match="no pixel size"):
        open_slide(dpi72)


def test_plain_images(tmp_path, image):
    png = write_png_with_mpp(tmp_path / "tile.png", image, 0.5)
    s = open_slide(png)
    assert s.backend == "image" and s.vendor == "png" and s.mpp == pytest.approx(0.5)
    np.testing.assert_array_equal(s.read_level(0, 10, 20, 100, 50), image[20:70, 10:110])
    jpg = tmp_path / "tile.jpg"
    cv2.imwrite(str(jpg), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 98])
    with pytest.raises(InputError, match="no pixel size"):
        open_slide(jpg)
    j = open_slide(jpg, mpp=0.5)
    assert j.dimensions == (700, 600)
    assert np.abs(j.read_level(0, 0, 0, 700, 600).astype(int) - image).mean() < 3
    # a plain stripped TIFF: tiffslide in auto mode, the image reader on request
    strip = tmp_path / "strip.tif"
    tifffile.imwrite(strip, image, rowsperstrip=32, compression="zlib", resolution=(2e4, 2e4),
                     resolutionunit="CENTIMETER", metadata=None)
    auto = open_slide(strip)
    plain = open_slide(strip, backend="image")
    assert auto.backend == "tiffslide" and plain.backend == "image"
    assert plain.mpp == pytest.approx(0.5) and plain.tile_sizes == ((700, 32),)
    np.testing.assert_array_equal(plain.read_level(0, 5, 100, 300, 40), image[100:140, 5:305])
    np.testing.assert_array_equal(auto.read_level(0, 0, 0, 64, 64),
                                  image[:64, :64])
    with pytest.raises(InputError, match="unknown backend"):
        open_slide(strip, backend="pil")
    with pytest.raises(InputError, match="openslide: "):
        open_slide(png, backend="openslide")


def test_large_jpeg_has_reduced_levels(tmp_path):
    from cerberus_cli.slides import thumbnail

    big = smooth_image(3001, 4099, seed=4)
    jpg = tmp_path / "big.jpg"
    cv2.imwrite(str(jpg), cv2.cvtColor(big, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    s = open_slide(jpg, mpp=0.5)
    assert s.level_dimensions == ((4099, 3001), (2050, 1501), (1025, 751), (513, 376))
    th = thumbnail(s, 4.0)  # 8x: decoded straight from the 1/8 level
    assert th.shape == (376, 513, 3)
    assert s._handle._pixels.keys() == {3}  # level 0 never decoded
    assert s.level_downsamples == (1.0, 2.0, 4.0, 8.0)
    # level pixel i averages level-0 pixels [8i, 8i + 8): compare whole blocks
    want = cv2.resize(big[:3000, :4096], (512, 375), interpolation=cv2.INTER_AREA).astype(int)
    assert np.abs(th[:375, :512].astype(int) - want).mean() < 6


def test_corrupt_png_data_is_an_input_error(tmp_path, image):
    ok, buf = cv2.imencode(".png", image)
    data = bytearray(buf.tobytes())
    data[200:-20] = bytes(len(data) - 220)  # header intact, pixel data zeroed
    bad = tmp_path / "bad.png"
    bad.write_bytes(bytes(data))
    s = open_slide(bad, mpp=0.5)
    with pytest.raises(InputError, match=r"bad\.png: cannot decode the PNG image data"):
        s.read_level(0, 0, 0, 10, 10)
