"""Tile plan: which tiles of the model-resolution grid the network must see.

The slide is covered by a grid of square *output* tiles of ``tile`` px at the model
resolution. The network sees each tile with ``margin`` px of context on every side
(input side ``tile + 2 * margin``) and only the centre ``tile`` px are kept, so every
kept pixel has the same context whatever the tile size. Only tiles whose output
box touches tissue are planned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

#: Kept output side and context margin of the default and reference geometries.
DEFAULT_TILE = 720
REFERENCE_TILE = 144
DEFAULT_MARGIN = 152


class _SlideLike(Protocol):
    @property
    def dimensions(self) -> tuple[int, int]: ...

    mpp: float


class _MaskLike(Protocol):
    mask: np.ndarray
    mpp: float


@dataclass(frozen=True)
class Tile:
    """One output tile on the model-resolution grid (pixels at the model mpp)."""

    x: int
    y: int
    size: int
    margin: int

    @property
    def input_box(self) -> tuple[int, int, int, int]:
        """(x, y, w, h) of the region the network reads, context included."""
        side = self.size + 2 * self.margin
        return self.x - self.margin, self.y - self.margin, side, side


def grid_size(slide: _SlideLike, mpp: float) -> tuple[int, int]:
    """Size (w, h) of the slide on the grid at ``mpp`` um/px."""
    w0, h0 = slide.dimensions
    s = slide.mpp / mpp
    return math.ceil(w0 * s), math.ceil(h0 * s)


def network_work_ratio(tile: int, margin: int) -> float:
    """Network input pixels per kept output pixel for a geometry."""
    return ((tile + 2 * margin) / tile) ** 2


def plan_tiles(
    slide: _SlideLike, mask: _MaskLike | None, mpp: float, tile: int = DEFAULT_TILE,
    margin: int = DEFAULT_MARGIN,
) -> list[Tile]:
    """Tiles (row-major order) whose output box touches tissue in ``mask``.

    ``mask`` pixel (i, j) covers the grid region from (j, i) * mask.mpp / mpp; with
    ``mask=None`` the whole slide is planned.
    """
    if tile <= 0 or margin < 0:
        raise ValueError(f"tile must be > 0 and margin >= 0 (got {tile}, {margin})")
    width, height = grid_size(slide, mpp)
    ny, nx = math.ceil(height / tile), math.ceil(width / tile)
    if mask is None:
        keep = np.ones((ny, nx), bool)
    else:
        keep = _tiles_touching(mask.mask, mpp / mask.mpp, tile, nx, ny)
    return [Tile(int(c) * tile, int(r) * tile, tile, margin) for r, c in zip(*np.nonzero(keep))]


def _tiles_touching(mask: np.ndarray, grid_to_mask: float, tile: int, nx: int, ny: int) -> np.ndarray:
    # Summed-area table: each tile is tested with four lookups, not a slice scan.
    sat = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), np.int64)
    sat[1:, 1:] = np.cumsum(np.cumsum(mask.astype(np.int64), 0), 1)
    edges_x = np.arange(nx + 1) * tile * grid_to_mask
    edges_y = np.arange(ny + 1) * tile * grid_to_mask
    x0 = np.clip(np.floor(edges_x[:-1]).astype(int), 0, mask.shape[1])
    x1 = np.clip(np.ceil(edges_x[1:]).astype(int), 0, mask.shape[1])
    y0 = np.clip(np.floor(edges_y[:-1]).astype(int), 0, mask.shape[0])
    y1 = np.clip(np.ceil(edges_y[1:]).astype(int), 0, mask.shape[0])
    total = (sat[y1][:, x1] - sat[y0][:, x1] - sat[y1][:, x0] + sat[y0][:, x0])
    return total > 0
