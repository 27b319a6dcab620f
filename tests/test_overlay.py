"""QC overlay: resolution choice, tissue-mask outline, tile grid and legend."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from shapely.geometry import box

from cerberus_cli.core.records import make_record
from cerberus_cli.outputs.overlay import (
    MASK_COLOR,
    TILE_COLOR,
    OverlayCanvas,
    overlay_mpp,
    write_overlay,
)


def test_overlay_resolution_is_about_1um_and_capped():
    assert overlay_mpp((4096, 4096), 0.5) == 1.0
    assert overlay_mpp((100_000, 80_000), 0.25) == pytest.approx(25_000 / 8192)
    assert overlay_mpp((1000, 1000), 2.0) == 2.0  # never finer than the slide
    assert overlay_mpp((4096, 4096), 0.5, max_side=1024) == 2.0


def test_overlay_draws_mask_tiles_objects_and_legend(tmp_path):
    thumb = np.full((200, 300, 3), 255, np.uint8)
    mask = np.zeros((50, 75), bool)  # 8 level-0 px per mask px (4 overlay px)
    mask[10:40, 10:60] = True
    nucleus = make_record(box(200, 200, 240, 240), "nuclei", 3, "lymphocyte", 1.0, 0.5)
    tiles = [(0, 0, 200, 200), (200, 0, 200, 200)]
    out = write_overlay(tmp_path / "o.png", thumb, [nucleus], scale=0.5, mask=mask, mask_scale=8.0,
                        tiles=tiles, mpp=1.0)
    img = cv2.imread(str(out), cv2.IMREAD_COLOR)[:, :, ::-1]
    assert img.shape[0] >= 200 and img.shape[1] > 300  # legend panel on the right
    assert tuple(img[42, 150]) == MASK_COLOR       # mask's top row 10: centre at 10.5 * 4
    assert tuple(img[120, 150]) == (255, 255, 255)  # inside the mask, untouched
    assert tuple(img[50, 100]) == TILE_COLOR        # tile border at x = 100 overlay px
    assert tuple(img[100, 110]) == (0, 0, 255)      # lymphocyte outline (x = 100..120)
    legend = img[:, 300:]
    assert (legend < 128).any() and (np.abs(legend.astype(int) - (0, 0, 255)).sum(axis=2) == 0).any()
    canvas = OverlayCanvas(thumb, 0.5)
    canvas.draw([nucleus])
    canvas.draw_mask(mask, 8.0)
    canvas.draw_tiles(tiles)
    assert list(canvas.legend) == ["nuclei: lymphocyte", "tissue mask", "processed tiles (2)"]
    assert canvas.rgb().shape == thumb.shape
