"""Map store: the slide's output maps on disk, in tile-aligned zarr chunks.

Memory stays bounded whatever the slide size: tiles are written as they come from
the network (one zarr chunk per tile, so writers never share a chunk) and
post-processing reads back only one chunk window at a time. Probabilities are
stored as uint8 (1/255 steps, far below any threshold's sensitivity) and types as
uint8 class ids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from cerberus_cli.inference.tiles import Tile
from cerberus_cli.model.config import ModelConfig

_CODEC = BloscCodec(cname="lz4", clevel=1, shuffle="bitshuffle")


def subarray(group: zarr.Group, name: str) -> zarr.Array:
    """The array ``name`` of a map store (zarr types a member as array or group)."""
    return cast(zarr.Array, group[name])


def subgroup(group: zarr.Group, name: str) -> zarr.Group:
    """The group ``name`` of a map store (zarr types a member as array or group)."""
    return cast(zarr.Group, group[name])


@dataclass(frozen=True)
class Box:
    x0: int
    y0: int
    x1: int
    y1: int

    def intersects(self, other: Box) -> bool:
        return self.x0 < other.x1 and other.x0 < self.x1 and self.y0 < other.y1 and other.y0 < self.y1


@dataclass(frozen=True)
class Chunk:
    """A post-processing unit: it owns ``core`` and reads ``window`` (core + margin)."""

    index: int
    core: Box
    window: Box


class MapStore:
    """Per-slide zarr group of instance probabilities and type maps."""

    def __init__(self, path: str | Path, group: zarr.Group) -> None:
        self.path = Path(path)
        self.group = group
        attrs: dict[str, Any] = dict(group.attrs)
        self.tile = int(attrs["tile"])
        self.width = int(attrs["width"])
        self.height = int(attrs["height"])
        self.mpp = float(attrs["mpp"])
        self.instance_heads = sorted(subgroup(group, "prob").array_keys()) if "prob" in group else []
        self.type_heads = sorted(subgroup(group, "type").array_keys()) if "type" in group else []

    @classmethod
    def create(cls, path: str | Path, config: ModelConfig, width: int, height: int,
               tile: int) -> MapStore:
        """A new store for a ``width`` x ``height`` grid, padded to whole tiles."""
        group = zarr.open_group(str(path), mode="w")
        w, h = math.ceil(width / tile) * tile, math.ceil(height / tile) * tile
        for head in config.heads_of_kind("instance"):
            group.create_array(f"prob/{head.name}", shape=(2, h, w), chunks=(2, tile, tile),
                               dtype="uint8", fill_value=0, compressors=_CODEC)
        for head in config.heads_of_kind("type"):
            group.create_array(f"type/{head.name}", shape=(h, w), chunks=(tile, tile),
                               dtype="uint8", fill_value=0, compressors=_CODEC)
        group.attrs.update({"tile": tile, "width": w, "height": h, "mpp": config.mpp})
        return cls(path, group)

    @classmethod
    def open(cls, path: str | Path) -> MapStore:
        """An existing store, for reading (e.g. in a post-processing worker)."""
        return cls(path, zarr.open_group(str(path), mode="r"))

    def write(self, tile: Tile, prob: dict[str, np.ndarray], types: dict[str, np.ndarray]) -> None:
        """Store one tile's maps (each exactly one zarr chunk)."""
        ys, xs = slice(tile.y, tile.y + tile.size), slice(tile.x, tile.x + tile.size)
        for name, arr in prob.items():
            subarray(self.group, f"prob/{name}")[:, ys, xs] = arr
        for name, arr in types.items():
            subarray(self.group, f"type/{name}")[ys, xs] = arr

    def read(self, box: Box) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Probabilities and types inside ``box`` (must lie within the store)."""
        ys, xs = slice(box.y0, box.y1), slice(box.x0, box.x1)
        prob = {n: cast(np.ndarray, subarray(self.group, f"prob/{n}")[:, ys, xs])
                for n in self.instance_heads}
        types = {n: cast(np.ndarray, subarray(self.group, f"type/{n}")[ys, xs]) for n in self.type_heads}
        return prob, types


class ChunkTracker:
    """Knows which chunks become complete as tiles arrive.

    A chunk is processed once every planned tile that overlaps its window has been
    stored; chunks whose core holds no planned tile are never processed.
    """

    def __init__(self, tiles: list[Tile], width: int, height: int, chunk: int, margin: int) -> None:
        self.chunks: list[Chunk] = []
        self._waiting: dict[int, int] = {}
        self._by_tile: dict[tuple[int, int], list[int]] = {}
        planned = {(t.x, t.y) for t in tiles}
        size = tiles[0].size if tiles else chunk
        for cy in range(0, height, chunk):
            for cx in range(0, width, chunk):
                core = Box(cx, cy, min(cx + chunk, width), min(cy + chunk, height))
                window = Box(max(0, core.x0 - margin), max(0, core.y0 - margin),
                             min(width, core.x1 + margin), min(height, core.y1 + margin))
                if not tiles_in(core, size, planned):
                    continue
                index = len(self.chunks)
                self.chunks.append(Chunk(index, core, window))
                needed = tiles_in(window, size, planned)
                self._waiting[index] = len(needed)
                for k in needed:
                    self._by_tile.setdefault(k, []).append(index)

    def tile_done(self, tile: Tile) -> list[Chunk]:
        """Record a stored tile; return the chunks that just became complete."""
        ready = []
        for index in self._by_tile.get((tile.x, tile.y), ()):
            self._waiting[index] -= 1
            if self._waiting[index] == 0:
                ready.append(self.chunks[index])
        return ready


def tiles_in(box: Box, size: int, planned: set[tuple[int, int]]) -> list[tuple[int, int]]:
    """Planned tiles (by origin) of a ``size`` grid that overlap ``box``."""
    xs = range(box.x0 // size * size, box.x1, size)
    ys = range(box.y0 // size * size, box.y1, size)
    return [(x, y) for y in ys for x in xs if (x, y) in planned]


class TissueMap:
    """Dense tissue-type probabilities assembled on a grid of ``stride`` px cells.

    Each network tile classifies windows of ``crop * stride`` px; a grid cell takes
    the window whose centre is nearest its own, from the tile that owns the cell.
    """

    def __init__(self, width: int, height: int, stride: int, crop: int, grid_mpp: float) -> None:
        self.stride = stride
        self.crop = crop
        #: um/px of one cell of the tissue map.
        self.mpp = stride * grid_mpp
        self.shape = (math.ceil(height / stride), math.ceil(width / stride))
        self.classes = np.zeros(self.shape, np.uint8)
        self.confidence = np.zeros(self.shape, np.float16)

    def add(self, tile: Tile, probs: np.ndarray) -> None:
        """Place one tile's dense probabilities (C, h, w) over its kept region."""
        s = self.stride
        c0, c1 = tile.x // s, min(self.shape[1], -(-(tile.x + tile.size) // s))
        r0, r1 = tile.y // s, min(self.shape[0], -(-(tile.y + tile.size) // s))
        # Cells are owned by the tile holding their centre.
        cols = np.arange(c0, c1)
        rows = np.arange(r0, r1)
        cols = cols[(cols * s + s / 2 >= tile.x) & (cols * s + s / 2 < tile.x + tile.size)]
        rows = rows[(rows * s + s / 2 >= tile.y) & (rows * s + s / 2 < tile.y + tile.size)]
        if not len(cols) or not len(rows):
            return
        half = self.crop * s / 2
        ix = np.clip(np.round((cols * s + s / 2 - tile.x + tile.margin - half) / s).astype(int),
                     0, probs.shape[2] - 1)
        iy = np.clip(np.round((rows * s + s / 2 - tile.y + tile.margin - half) / s).astype(int),
                     0, probs.shape[1] - 1)
        p = probs[:, iy][:, :, ix]
        self.classes[np.ix_(rows, cols)] = p.argmax(0)
        self.confidence[np.ix_(rows, cols)] = p.max(0)
