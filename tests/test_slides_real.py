"""A real scanner-written slide (Aperio, CC0; see tests/data/cmu_small_region.LICENSE.md)."""

from __future__ import annotations

import numpy as np
import pytest

from cerberus_cli.slides import open_slide, read_scaled, scaled_size


@pytest.mark.parametrize("backend", ["auto", "openslide", "tiffslide"])
def test_real_aperio_metadata(backend, real_slide):
    s = open_slide(real_slide, backend=backend)
    assert s.vendor == "aperio"
    assert s.dimensions == (2220, 2967) and s.level_count == 1
    assert s.mpp == pytest.approx(0.499)
    assert s.objective_power == 20
    assert {"label", "macro", "thumbnail"} <= set(s.associated_images)
    assert s.associated_image("macro").ndim == 3


def test_real_backends_read_identical_pixels(real_slide):
    o = open_slide(real_slide, backend="openslide")
    t = open_slide(real_slide, backend="tiffslide")
    for x, y, w, h in ((0, 0, 2220, 2967), (1000, 1500, 333, 257), (2100, 2900, 300, 300)):
        np.testing.assert_array_equal(o.read_level(0, x, y, w, h), t.read_level(0, x, y, w, h))
    a = read_scaled(o, 100, 100, 300, 200, 0.5)
    b = read_scaled(t, 100, 100, 300, 200, 0.5)
    np.testing.assert_array_equal(a, b)
    # 0.499 -> 0.5 um/px shrinks the grid by 0.2 %
    assert scaled_size(o, 0.5) == (2216, 2962)
