"""Chunked post-processing with ownership: each object decided in exactly one chunk.

A slide's maps are post-processed chunk by chunk. Each chunk carries its maps
plus a margin around the ``core`` box it owns. Within a chunk:

* objects touching a side of the array where the array extends beyond the core
  (a margin side) are dropped: they may be cut, and a neighbour sees them whole.
  Sides where the core reaches the array edge (the edge of the slide grid) do
  not cut anything: nothing lies beyond them.
* of the rest, the chunk keeps the objects it owns: those whose pixel centroid
  lies in ``core``. The test uses integer pixel-index sums in the global grid
  (``x0 * n <= sum(x) < x1 * n``), so it is exact and the same in every chunk.

With a margin of at least :func:`required_margin` px, each object is whole in
the chunk that owns it, so chunked and whole-image post-processing give the
same objects with the same polygons. The margin must cover the largest task
(glands); nuclei are processed on the chunk cropped to their own, much
smaller, margin.

Object UUIDs are deterministic: uuid5 of the slide ``key``, the task and the
object's integer pixel moments (count, sum of x, sum of y in the global grid).
Reruns give the same ids, and a lumen's chunk can name its gland's UUID even
when another chunk owns (and writes) that gland.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from cerberus_cli.core.records import OBJECT_NAMESPACE, ObjectRecord, make_records
from cerberus_cli.core.vocabulary import INSTANCE_TASKS, LUMEN_CLASSES
from cerberus_cli.model.config import ModelConfig
from cerberus_cli.postprocess.instances import (
    as_probability,
    foreground,
    gland_instances,
    lumen_instances,
    nuclei_instances,
)
from cerberus_cli.postprocess.options import PostprocessOptions
from cerberus_cli.postprocess.polygons import label_polygons, polygonal_part
from cerberus_cli.postprocess.types import vote_types

#: Instance heads this module knows how to post-process (head name = task name).


@dataclass
class ChunkMaps:
    """Maps of one chunk at the model resolution.

    ``origin``: (x, y) of ``array[0, 0]`` in the model-resolution grid.
    ``core``: (x0, y0, x1, y1) box owned by this chunk, same grid, end-exclusive.
    ``prob``: instance head -> (2, H, W) inner/boundary probabilities (float 0..1
    or uint8 0..255). ``types``: type head -> (H, W) uint8 class ids.
    ``valid``: (H, W) bool of computed pixels (None: all computed).
    ``extent``: (x0, y0, x1, y1) in level-0 px of what exists: the slide, or
    the region of it that was read. Map pixels wholly outside it are ignored
    and every object is clipped to it (None: no limit).
    """

    origin: tuple[int, int]
    core: tuple[int, int, int, int]
    prob: dict[str, np.ndarray]
    types: dict[str, np.ndarray] = field(default_factory=dict)
    valid: np.ndarray | None = None
    extent: tuple[float, float, float, float] | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the chunk arrays."""
        first = next(iter(self.prob.values()))
        return int(first.shape[-2]), int(first.shape[-1])

    def cut_sides(self) -> tuple[bool, bool, bool, bool]:
        """(left, top, right, bottom): whether the array extends beyond the core there."""
        h, w = self.shape
        ox, oy = self.origin
        x0, y0, x1, y1 = self.core
        return x0 > ox, y0 > oy, x1 < ox + w, y1 < oy + h

    def check(self) -> None:
        """Raise ValueError when arrays disagree in shape or the core leaves the array."""
        if not self.prob:
            raise ValueError("chunk has no instance maps")
        h, w = self.shape
        for name, a in self.prob.items():
            if a.ndim != 3 or a.shape[0] != 2 or a.shape[1:] != (h, w):
                raise ValueError(f"prob[{name!r}] has shape {a.shape}, expected (2, {h}, {w})")
        for name, a in self.types.items():
            if a.shape != (h, w):
                raise ValueError(f"types[{name!r}] has shape {a.shape}, expected ({h}, {w})")
        if self.valid is not None and self.valid.shape != (h, w):
            raise ValueError(f"valid has shape {self.valid.shape}, expected ({h}, {w})")
        ox, oy = self.origin
        x0, y0, x1, y1 = self.core
        if not (ox <= x0 <= x1 <= ox + w and oy <= y0 <= y1 <= oy + h):
            raise ValueError(f"core {self.core} is not inside the array at {self.origin} "
                             f"of size {w}x{h}")


def required_margin(options: PostprocessOptions | None = None,
                    tasks: tuple[str, ...] = INSTANCE_TASKS) -> int:
    """Chunk margin (model-grid px) so every object of ``tasks`` is whole in its owner.

    The largest object extent plus the reach of the post-processing around it
    (erosion/watershed for nuclei; growth kernel for glands and lumina). Lumina
    need their whole gland (lumen filter and parent link), so they take the
    gland margin. Rounded up to even so 2x-downsampled blocks stay aligned.
    ``options`` default to :class:`PostprocessOptions`' defaults.
    """
    options = PostprocessOptions() if options is None else options
    need = [0]
    if "nuclei" in tasks:
        need.append(options.max_nucleus_px + 4)
    if "gland" in tasks or "lumen" in tasks:
        need.append(max(options.max_gland_px, options.max_lumen_px)
                    + options.gland_kernel_px + 2 * options.gland_downsample)
    m = max(need)
    return m + (m % 2)


_NAMESPACE = OBJECT_NAMESPACE.bytes


def object_uuid_from_moments(key: str, task: str, n: int, sx: int, sy: int) -> str:
    """Deterministic object UUID from exact integer pixel moments in the global grid.

    ``str(uuid.uuid5(OBJECT_NAMESPACE, "key|task|n|sx|sy"))``, computed without the
    UUID object (a third of the cost at tens of thousands of objects per chunk).
    """
    h = bytearray(hashlib.sha1(_NAMESPACE + f"{key}|{task}|{n}|{sx}|{sy}".encode()).digest())
    h[6] = (h[6] & 0x0F) | 0x50  # version 5
    h[8] = (h[8] & 0x3F) | 0x80  # RFC 4122 variant
    x = h[:16].hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


@dataclass
class _Objects:
    """Label map of one head plus per-object integer moments in the global grid."""

    labels: np.ndarray
    n: np.ndarray    # pixel count per label (index 0 = background)
    sx: np.ndarray   # sum of global x indices
    sy: np.ndarray   # sum of global y indices
    cut: np.ndarray  # touches a margin side of the array
    fg: np.ndarray   # flat indices of the foreground pixels, raster order
    lab: np.ndarray  # their labels

    @staticmethod
    def of(labels: np.ndarray, origin: tuple[int, int], cut_sides: tuple[bool, ...]) -> _Objects:
        # Everything per object comes from the foreground pixels (a fraction of
        # the chunk), listed once in raster order.
        fg = foreground(labels)
        lab = labels.ravel()[fg]
        count = int(lab.max()) + 1 if lab.size else 1
        ys, xs = np.divmod(fg, labels.shape[1])
        n = np.bincount(lab, minlength=count).astype(np.int64)
        sx = np.rint(np.bincount(lab, weights=xs, minlength=count)).astype(np.int64)
        sy = np.rint(np.bincount(lab, weights=ys, minlength=count)).astype(np.int64)
        n[0] = 0
        sx += n * origin[0]
        sy += n * origin[1]
        cut = np.zeros(count, bool)
        left, top, right, bottom = cut_sides
        for side, edge in ((left, labels[:, 0]), (top, labels[0, :]),
                           (right, labels[:, -1]), (bottom, labels[-1, :])):
            if side:
                cut[edge] = True
        cut[0] = True
        return _Objects(labels, n, sx, sy, cut, fg, lab)

    def owned(self, core: tuple[int, int, int, int]) -> np.ndarray:
        """Labels (ascending) not cut and with their centroid inside ``core``."""
        x0, y0, x1, y1 = core
        ok = ((~self.cut) & (self.n > 0)
              & (x0 * self.n <= self.sx) & (self.sx < x1 * self.n)
              & (y0 * self.n <= self.sy) & (self.sy < y1 * self.n))
        return np.flatnonzero(ok)


def _aligned_labels(fn, arrays: list[np.ndarray], origin: tuple[int, int],
                    factor: int) -> np.ndarray:
    """Run a label function with the arrays padded so blocks align to the global grid."""
    py, px = origin[1] % factor, origin[0] % factor
    if py == px == 0:
        return fn(*arrays)
    padded = [np.pad(a, ((py, 0), (px, 0))) for a in arrays]
    return np.ascontiguousarray(fn(*padded)[py:, px:])


def process_chunk(maps: ChunkMaps, config: ModelConfig, options: PostprocessOptions,
                  scale: float, mpp: float, key: str = "") -> list[ObjectRecord]:
    """Objects owned by one chunk, as records with polygons in level-0 px.

    Runs the instance post-processing of every instance head of ``config``
    (gland before lumen: lumina are kept only inside glands and linked to the
    enclosing gland via ``parent_uuid``), the type vote of each head's type head
    (``probability`` = vote share; heads without a type head, i.e. lumina, get
    class 1 of ``LUMEN_CLASSES`` and their mean foreground probability), then
    polygons scaled by ``scale`` (level-0 px per grid px). ``mpp`` is the
    slide's level-0 mpp (for areas); ``key`` (e.g. the slide name) enters the
    deterministic UUIDs.
    """
    maps.check()
    maps = _within_extent(maps, scale)
    if maps.valid is not None and maps.valid.all():  # nothing to zero: spare the copies
        maps = dataclasses.replace(maps, valid=None)
    heads = [h.name for h in config.heads_of_kind("instance")]
    unknown = [h for h in heads if h not in INSTANCE_TASKS]
    if unknown:
        raise ValueError(f"no post-processing for instance head(s) {unknown}")
    missing = [h for h in heads if h not in maps.prob]
    if missing:
        raise ValueError(f"chunk lacks maps of instance head(s) {missing}")

    records: list[ObjectRecord] = []
    glands: _Objects | None = None
    for name in sorted(heads, key=INSTANCE_TASKS.index):
        # Nuclei need a far smaller margin than glands: cropping the chunk to
        # what they need halves their work for typical chunk sizes.
        view = _window(maps, required_margin(options, ("nuclei",))) if name == "nuclei" \
            else maps
        h, w = view.shape
        inner, boundary = _maps_of(view, name)
        if name == "nuclei":
            labels = nuclei_instances(inner, boundary, options, view.origin)
        elif name == "gland":
            labels = _aligned_labels(lambda i, b: gland_instances(i, b, options),
                                     [inner, boundary], view.origin, options.gland_downsample)
        else:
            gl = glands.labels if glands is not None else np.ones((h, w), np.int32)
            labels = _aligned_labels(lambda i, b, g: lumen_instances(i, b, g, options),
                                     [inner, boundary, gl], view.origin,
                                     options.gland_downsample)
        objs = _Objects.of(labels, view.origin, view.cut_sides())
        if name == "gland":
            glands = objs
        ids = objs.owned(view.core)
        if ids.size == 0:
            continue
        class_ids, class_names, probs = _classify(name, objs, ids, inner, boundary, view, config)
        parents = _parents(objs, ids, glands, key) if name == "lumen" and glands is not None \
            else [None] * ids.size
        geoms = label_polygons(labels, ids.tolist(), offset=(float(view.origin[0]), float(view.origin[1])),
                               scale=scale, simplify=options.simplify_px)
        if maps.extent is not None:
            geoms = _clip(geoms, maps.extent)
        keep = [j for j, g in enumerate(geoms) if g is not None]
        uids = [object_uuid_from_moments(key, name, int(objs.n[ids[j]]), int(objs.sx[ids[j]]),
                                         int(objs.sy[ids[j]])) for j in keep]
        records += make_records([geoms[j] for j in keep], name, [class_ids[j] for j in keep],
                                [class_names[j] for j in keep], [probs[j] for j in keep], mpp,
                                uids, [parents[j] for j in keep])
    return records


def _within_extent(maps: ChunkMaps, scale: float) -> ChunkMaps:
    """The chunk with the pixels wholly outside ``maps.extent`` marked not computed.

    Grid pixel x covers level-0 ``[x * scale, (x + 1) * scale)``; the map store
    holds whole tiles, so the last ones reach past the slide, where the
    network saw only padding.
    """
    if maps.extent is None:
        return maps
    h, w = maps.shape
    ox, oy = maps.origin
    ex0, ey0, ex1, ey1 = maps.extent
    xs = (np.arange(ox, ox + w) + 1) * scale
    ys = (np.arange(oy, oy + h) + 1) * scale
    cols = (xs > ex0) & (xs - scale < ex1)
    rows = (ys > ey0) & (ys - scale < ey1)
    if cols.all() and rows.all():
        return maps
    inside = rows[:, None] & cols[None, :]
    valid = inside if maps.valid is None else maps.valid & inside
    return dataclasses.replace(maps, valid=valid)


def _clip(geoms: list[BaseGeometry | None],
          extent: tuple[float, float, float, float]) -> list[BaseGeometry | None]:
    """Geometries clipped to ``extent`` (None when nothing is left); others untouched."""
    out = list(geoms)
    x0, y0, x1, y1 = extent
    # Bounds of all at once (None gives NaN, which the test below passes over).
    arr = np.empty(len(geoms), dtype=object)
    arr[:] = geoms
    b = shapely.bounds(arr)
    reach = (b[:, 0] < x0) | (b[:, 1] < y0) | (b[:, 2] > x1) | (b[:, 3] > y1)
    for j in np.flatnonzero(reach):
        g = geoms[j]
        c = shapely.clip_by_rect(g, x0, y0, x1, y1)
        if not c.is_valid:
            c = shapely.make_valid(c)
        out[j] = polygonal_part(c)
    return out


def _window(maps: ChunkMaps, margin: int) -> ChunkMaps:
    """The chunk cropped to its core plus ``margin`` (views, no copies)."""
    h, w = maps.shape
    ox, oy = maps.origin
    x0, y0, x1, y1 = maps.core
    c0, r0 = max(0, x0 - margin - ox), max(0, y0 - margin - oy)
    c1, r1 = min(w, x1 + margin - ox), min(h, y1 + margin - oy)
    if (c0, r0, c1, r1) == (0, 0, w, h):
        return maps
    return ChunkMaps(
        origin=(ox + c0, oy + r0), core=maps.core,
        prob={k: v[:, r0:r1, c0:c1] for k, v in maps.prob.items()},
        types={k: v[r0:r1, c0:c1] for k, v in maps.types.items()},
        valid=None if maps.valid is None else maps.valid[r0:r1, c0:c1], extent=maps.extent)


def _maps_of(maps: ChunkMaps, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Inner and boundary probabilities of head ``name``, zero where not computed.

    uint8 maps stay uint8 (the instance steps threshold them as integers);
    zeroing a uint8 value zeroes its probability exactly.
    """
    inner, boundary = maps.prob[name][0], maps.prob[name][1]
    if inner.dtype == np.uint8 and boundary.dtype == np.uint8:
        if maps.valid is not None:
            inner, boundary = inner * maps.valid, boundary * maps.valid
        return inner, boundary
    inner = as_probability(maps.prob[name][0])
    boundary = as_probability(maps.prob[name][1])
    if maps.valid is not None:  # never computed -> no evidence of an object
        inner, boundary = inner * maps.valid, boundary * maps.valid
    return inner, boundary


def _classify(name: str, objs: _Objects, ids: np.ndarray, inner: np.ndarray,
              boundary: np.ndarray, maps: ChunkMaps, config: ModelConfig):
    """Class ids, names and probabilities of the objects ``ids``."""
    type_head = config.type_head_for(name)
    if type_head is not None:
        if type_head.name not in maps.types:
            raise ValueError(f"chunk lacks the type map {type_head.name!r} of head {name!r}")
        # The vote over the foreground pixels alone counts the same votes.
        cls, share = vote_types(objs.lab, maps.types[type_head.name].ravel()[objs.fg],
                                type_head.channels, n_objects=len(objs.n) - 1)
        names = type_head.class_names()
        return cls[ids - 1], [names[c] for c in cls[ids - 1]], share[ids - 1]
    fg = np.bincount(objs.lab, weights=_probability_sum(inner, boundary, objs.fg),
                     minlength=len(objs.n))
    prob = np.clip(fg[ids] / np.maximum(objs.n[ids], 1), 0.0, 1.0)
    return np.ones(ids.size, np.int16), [LUMEN_CLASSES[1].name] * ids.size, prob


def _probability_sum(inner: np.ndarray, boundary: np.ndarray, fg: np.ndarray) -> np.ndarray:
    """float32 ``p(inner) + p(boundary)`` at the flat indices ``fg``, as whole maps give it."""
    return as_probability(inner.ravel()[fg]) + as_probability(boundary.ravel()[fg])


def _parents(lumina: _Objects, ids: np.ndarray, glands: _Objects, key: str) -> list[str | None]:
    """UUID of the gland overlapping each lumen most (None if that gland is cut)."""
    ng = len(glands.n)
    pairs = np.bincount(lumina.lab.astype(np.int64) * ng + glands.labels.ravel()[lumina.fg],
                        minlength=len(lumina.n) * ng)
    pairs = pairs.reshape(len(lumina.n), ng)[:, 1:]
    out: list[str | None] = []
    for i in ids:
        if ng == 1 or pairs[i].max() == 0:
            out.append(None)
            continue
        g = int(pairs[i].argmax()) + 1
        # A gland cut by the array border has partial moments: its id would be wrong.
        out.append(None if glands.cut[g] else object_uuid_from_moments(
            key, "gland", int(glands.n[g]), int(glands.sx[g]), int(glands.sy[g])))
    return out
