"""Map store: the slide's output maps on disk, in tile-aligned zarr chunks.

Memory stays bounded whatever the slide size: tiles are written as they come from
the network (one zarr chunk per tile, so writers never share a chunk) and
post-processing reads back only one chunk window at a time. Probabilities are
stored as uint8 (1/255 steps, far below any threshold's sensitivity) and types as
uint8 class ids. Chunks are compressed with LZ4 without a shuffle filter: on uint8
maps bit-shuffling costs twice the CPU for larger chunks (benchmarks/replay.md).

Whole tiles are whole zarr chunks, so the store writes and reads them as chunk
files in the Zarr v3 layout itself (:class:`ChunkFiles`): zarr's own indexing
costs ~4 ms of CPU per chunk written, twenty times the encoding. Anything
reading the store through zarr (``--save-maps``) sees the same array.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numcodecs
import numpy as np
import zarr
from zarr.codecs import BloscCodec, BytesCodec
from zarr.storage import LocalStore

from cerberus_cli.core.vocabulary import TISSUE_TYPES, ClassSpec
from cerberus_cli.inference.tile_plan import Tile
from cerberus_cli.model.config import ModelConfig

_CODEC = BloscCodec(cname="lz4", clevel=1, shuffle="noshuffle")
#: The same compression for chunk files written directly (uint8: type size 1).
_BLOSC = numcodecs.Blosc(cname="lz4", clevel=1, shuffle=numcodecs.Blosc.NOSHUFFLE)


def subarray(group: zarr.Group, name: str) -> zarr.Array:
    """The array ``name`` of a map store (zarr types a member as array or group)."""
    return cast(zarr.Array, group[name])


def subgroup(group: zarr.Group, name: str) -> zarr.Group:
    """The group ``name`` of a map store (zarr types a member as array or group)."""
    return cast(zarr.Group, group[name])


class ChunkFiles:
    """Whole chunks of one zarr v3 array of a local store, as files.

    Only for uint8 arrays whose codecs are exactly bytes + Blosc (what
    :meth:`MapStore.create` makes); :meth:`of` returns None for anything else,
    and callers then go through zarr. Missing chunk files read as the fill
    value 0, as in zarr.
    """

    def __init__(self, array: zarr.Array, root: Path) -> None:
        self.array = array
        self.root = root
        self.chunks = tuple(int(c) for c in array.chunks)
        self._dirs: set[Path] = set()

    @classmethod
    def of(cls, array: zarr.Array) -> ChunkFiles | None:
        """Direct chunk access to ``array``, or None where zarr must do it."""
        meta = array.metadata
        store = array.store_path.store
        codecs: tuple[Any, ...] = tuple(getattr(meta, "codecs", ()))
        if (not isinstance(store, LocalStore) or array.dtype != np.uint8
                or getattr(meta, "fill_value", None) != 0 or len(codecs) != 2
                or not isinstance(codecs[0], BytesCodec) or not isinstance(codecs[1], BloscCodec)):
            return None
        return cls(array, Path(store.root) / array.store_path.path)

    def path(self, index: tuple[int, ...]) -> Path:
        """The file of the chunk at grid position ``index``."""
        return self.root / self.array.metadata.encode_chunk_key(index)

    def put(self, index: tuple[int, ...], data: np.ndarray) -> None:
        """Write one whole chunk (an all-zero chunk is left out, as zarr does)."""
        if not data.any():
            return
        path = self.path(index)
        if path.parent not in self._dirs:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._dirs.add(path.parent)
        path.write_bytes(_BLOSC.encode(np.ascontiguousarray(data)))

    def get(self, index: tuple[int, ...]) -> np.ndarray | None:
        """One whole chunk, or None where it was never written (all zero)."""
        try:
            raw = self.path(index).read_bytes()
        except FileNotFoundError:
            return None
        return np.frombuffer(_BLOSC.decode(raw), np.uint8).reshape(self.chunks)

    def read(self, box: Box) -> np.ndarray:
        """The array inside ``box`` (last two axes; leading axes whole)."""
        th, tw = self.chunks[-2:]
        lead = self.chunks[:-2]
        out = np.zeros(lead + (box.y1 - box.y0, box.x1 - box.x0), np.uint8)
        for cy in range(box.y0 // th, -(-box.y1 // th)):
            for cx in range(box.x0 // tw, -(-box.x1 // tw)):
                chunk = self.get((0,) * len(lead) + (cy, cx))
                if chunk is None:
                    continue
                y0, x0 = max(box.y0, cy * th), max(box.x0, cx * tw)
                y1, x1 = min(box.y1, (cy + 1) * th), min(box.x1, (cx + 1) * tw)
                out[..., y0 - box.y0:y1 - box.y0, x0 - box.x0:x1 - box.x0] = \
                    chunk[..., y0 - cy * th:y1 - cy * th, x0 - cx * tw:x1 - cx * tw]
        return out


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
        names = [f"prob/{n}" for n in self.instance_heads] + [f"type/{n}" for n in self.type_heads]
        self._files = {n: ChunkFiles.of(subarray(group, n)) for n in names}

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
        whole = tile.size == self.tile and tile.x % self.tile == 0 and tile.y % self.tile == 0
        at = (tile.y // self.tile, tile.x // self.tile)
        for name, arr in prob.items():
            files = self._files.get(f"prob/{name}")
            if whole and files is not None and arr.shape == files.chunks:
                files.put((0,) + at, arr)
            else:
                subarray(self.group, f"prob/{name}")[:, ys, xs] = arr
        for name, arr in types.items():
            files = self._files.get(f"type/{name}")
            if whole and files is not None and arr.shape == files.chunks:
                files.put(at, arr)
            else:
                subarray(self.group, f"type/{name}")[ys, xs] = arr

    def read(self, box: Box) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Probabilities and types inside ``box`` (must lie within the store)."""
        prob = {n: self._read(f"prob/{n}", box) for n in self.instance_heads}
        types = {n: self._read(f"type/{n}", box) for n in self.type_heads}
        return prob, types

    def _read(self, name: str, box: Box) -> np.ndarray:
        files = self._files.get(name)
        if files is not None:
            return files.read(box)
        array = subarray(self.group, name)
        region = (slice(None),) * (array.ndim - 2) + (slice(box.y0, box.y1), slice(box.x0, box.x1))
        return cast(np.ndarray, array[region])


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

    def __init__(self, width: int, height: int, stride: int, crop: int, grid_mpp: float,
                 specs: tuple[ClassSpec, ...] = TISSUE_TYPES) -> None:
        self.stride = stride
        self.crop = crop
        #: The classes of the map (the tissue types, or a fine-tuned classifier's).
        self.specs = specs
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
