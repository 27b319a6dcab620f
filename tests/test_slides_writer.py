"""write_slide: refuses to overwrite, leaves nothing behind on failure."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from cerberus_cli.core.errors import InputError
from cerberus_cli.slides import open_slide, write_slide
from tests._slide_fixtures import smooth_image


def test_refuses_overwrite_and_cleans_up(tmp_path):
    img = smooth_image(300, 400)
    path = write_slide(tmp_path / "a.svs", img, 0.5, compression="zlib")
    before = path.read_bytes()
    with pytest.raises(InputError, match=r"a\.svs: already exists"):
        write_slide(path, img, 0.5)
    assert path.read_bytes() == before
    write_slide(path, img[:200], 0.5, compression="zlib", overwrite=True)
    assert open_slide(path).dimensions == (400, 200)
    with pytest.raises(ValueError, match="unknown layout"):
        write_slide(tmp_path / "b.tif", img, 0.5, layout="mrxs")
    with pytest.raises(ValueError, match="start with 1"):
        write_slide(tmp_path / "c.tif", img, 0.5, downsamples=(2, 4))
    with pytest.raises(ValueError, match="uint8"):
        write_slide(tmp_path / "d.tif", img.astype(np.float32), 0.5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.svs"]


def test_layout_metadata(tmp_path):
    img = smooth_image(300, 400)
    svs = write_slide(tmp_path / "a.svs", img, 0.2521, objective_power=40, compression="zlib")
    with tifffile.TiffFile(svs) as tf:
        assert tf.pages[0].description.startswith("Aperio Image Library")
        assert "MPP = 0.2521" in tf.pages[0].description
        assert not tf.pages[1].is_tiled  # stripped thumbnail second
    ome = write_slide(tmp_path / "a.ome.tif", img, 0.5, layout="ome", compression="zlib")
    with tifffile.TiffFile(ome) as tf:
        assert tf.is_ome and 'PhysicalSizeX="0.5"' in tf.ome_metadata
        assert len(tf.series[0].levels) == 3
