"""Reading label maps: formats, folder layouts and malformed files."""

import cv2
import numpy as np
import pytest
import scipy.io
import tifffile

from cerberus_cli.core.errors import InputError
from cerberus_cli.metrics.readers import list_maps, load_map, read_map, resolve_source
from cerberus_cli.metrics.samples import sample_from_maps

MAP = np.array([[0, 0, 300], [7, 7, 300], [0, 65535, 0]], np.uint16)


@pytest.mark.parametrize("suffix", [".png", ".tif", ".npy"])
def test_16_bit_maps_round_trip(tmp_path, suffix):
    p = tmp_path / f"m{suffix}"
    if suffix == ".png":
        cv2.imwrite(str(p), MAP)
    elif suffix == ".tif":
        tifffile.imwrite(p, MAP)
    else:
        np.save(p, MAP)
    m = read_map(p)
    assert np.array_equal(m.instances, MAP) and not m.has_classes


def test_grey_rgb_png_is_accepted(tmp_path):
    p = tmp_path / "m.png"
    cv2.imwrite(str(p), np.dstack([MAP.astype(np.uint8)] * 3))
    assert np.array_equal(read_map(p).instances, MAP.astype(np.uint8))


def test_mat_variants(tmp_path):
    scipy.io.savemat(tmp_path / "a.mat", {"inst_map": MAP.astype(np.int32),
                                          "type_map": (MAP > 0).astype(np.int32)})
    m = read_map(tmp_path / "a.mat")
    assert m.class_map is not None and m.class_map.sum() == 5
    scipy.io.savemat(tmp_path / "b.mat", {"labels": MAP})
    with pytest.raises(InputError, match="b.mat: no 'inst_map'"):
        read_map(tmp_path / "b.mat")
    hdr = b"MATLAB 7.3 MAT-file".ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM"
    (tmp_path / "c.mat").write_bytes(hdr + b"\x00" * 512)
    with pytest.raises(InputError, match="c.mat: MATLAB v7.3"):
        read_map(tmp_path / "c.mat")


def test_malformed_files(tmp_path):
    (tmp_path / "x.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match=r"x\.png: cannot read"):
        read_map(tmp_path / "x.png")
    np.save(tmp_path / "y.npy", np.zeros((2, 2, 3)))
    with pytest.raises(InputError, match=r"y\.npy: expected a 2-D label map"):
        read_map(tmp_path / "y.npy")
    np.save(tmp_path / "x.npy", MAP)
    with pytest.raises(InputError, match="two maps named 'x'"):
        list_maps(tmp_path)
    np.save(tmp_path / "cls.npy", np.zeros((4, 4)))
    with pytest.raises(InputError, match=r"cls\.npy: class map shape \(4, 4\) differs"):
        t = load_map(tmp_path / "x.npy", tmp_path / "cls.npy")
        sample_from_maps("x", t, t, 7)


def test_folder_layouts(tmp_path):
    (tmp_path / "gland" / "instances").mkdir(parents=True)
    (tmp_path / "gland" / "classes").mkdir()
    (tmp_path / "nuclei" / "labels").mkdir(parents=True)
    s = resolve_source(tmp_path, "gland")
    assert (s.instances, s.classes) == (tmp_path / "gland" / "instances", tmp_path / "gland" / "classes")
    assert resolve_source(tmp_path, "nuclei").instances == tmp_path / "nuclei" / "labels"
    assert resolve_source(tmp_path / "gland", "gland").classes == tmp_path / "gland" / "classes"
    flat = tmp_path / "flat"
    flat.mkdir()
    assert resolve_source(flat, "nuclei").instances == flat
    with pytest.raises(InputError, match="not a folder"):
        resolve_source(tmp_path / "missing", "nuclei")
