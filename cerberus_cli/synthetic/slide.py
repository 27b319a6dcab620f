"""Whole phantom slides: a pyramidal SVS or TIFF plus its exact ground truth.

The slide is rendered in bands of blocks and streamed tile by tile into the TIFF
(JPEG tiles, reduced levels by 4, an Aperio thumbnail page), so memory grows with
the slide's width, not its area. Ground truth goes next to it:

``OUT.truth.parquet`` / ``OUT.truth.geojson``  every nucleus, gland, lumen and tissue region
``OUT.tissue.png``  tissue class per 8 um x 8 um cell (uint8 ids of TISSUE_TYPES)
``OUT.truth.json``  seed, size, mpp, counts per task and class
"""

from __future__ import annotations

import json
import math
import os
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np
import tifffile

from cerberus_cli.errors import InputError
from cerberus_cli.model.config import TISSUE_TYPES
from cerberus_cli.outputs.atomic import AtomicPath
from cerberus_cli.synthetic.paint import PAINT_MARGIN, paint
from cerberus_cli.synthetic.params import BASE_MPP, SLIDE_SCENE, SceneParams
from cerberus_cli.synthetic.scene import PhantomWorld
from cerberus_cli.synthetic.stain import Stain, finish
from cerberus_cli.synthetic.noise import white_noise
from cerberus_cli.synthetic.truth import TruthCollector, tissue_records

TILE = 256
BLOCK = 1024          # world pixels per rendered block (a multiple of TISSUE_CELL)
TISSUE_CELL = 16      # world pixels per tissue-map cell: 8 um
JPEG_QUALITY = 90
GLASS_RGB = (242, 240, 244)


def truth_paths(path: Path) -> dict[str, Path]:
    """The ground-truth files written next to slide ``path``."""
    stem = path.with_suffix("")
    return {"parquet": stem.with_name(stem.name + ".truth.parquet"),
            "geojson": stem.with_name(stem.name + ".truth.geojson"),
            "tissue": stem.with_name(stem.name + ".tissue.png"),
            "json": stem.with_name(stem.name + ".truth.json")}


def parse_size(text: str) -> tuple[int, int]:
    """``"8192x6144"`` (width x height) or ``"4096"`` (square) to (width, height)."""
    parts = text.lower().replace(" ", "").split("x")
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        raise InputError(f"size {text!r}: expected WIDTHxHEIGHT in pixels, e.g. 8192x8192") from None
    if len(nums) == 1:
        nums = nums * 2
    if len(nums) != 2 or min(nums) < 256:
        raise InputError(f"size {text!r}: expected WIDTHxHEIGHT, each at least 256 px")
    return nums[0], nums[1]


class _Renderer:
    """Renders bands of the world and downsamples them to the slide resolution."""

    def __init__(self, seed: int, params: SceneParams, scale: int, width: int, height: int) -> None:
        self.world = PhantomWorld(seed, params)
        self.seed = seed
        self.scale = scale
        self.w, self.h = width, height                  # level-0 pixels
        self.ww = math.ceil(width / scale)               # world pixels
        self.wh = math.ceil(height / scale)
        rng = np.random.default_rng([seed & 0xFFFFFFFF, 78])
        self.stain = Stain.draw(rng, params.stain_jitter)
        self.sigma = float(rng.uniform(*params.blur))

    def block(self, x0: int, y0: int, w: int, h: int):
        """Image (level-0 px) and labels of world block ``[x0, x0+w) x [y0, y0+h)``."""
        m = PAINT_MARGIN
        lab = self.world.labels(x0 - m, y0 - m, w + 2 * m, h + 2 * m)
        rgb = paint(lab, self.seed, self.stain)
        noise = white_noise(self.seed, 9999, x0 - m, y0 - m, h + 2 * m, w + 2 * m)[..., None]
        img = finish(rgb, self.sigma, noise * np.float32(1.6))
        if self.scale > 1:
            # 40x: render at 20x and interpolate; the margin keeps block edges seamless.
            s = self.scale
            img = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_CUBIC)
            img = img[m * s:(m + h) * s, m * s:(m + w) * s]
        else:
            img = img[m:m + h, m:m + w]
        return img, lab


def _reduce_into(level: np.ndarray, band: np.ndarray, row: int) -> None:
    """Write the 4x area reduction of a band (rows a multiple of 4 except the last
    band) into ``level`` starting at ``row``."""
    rows = max(4, band.shape[0] - band.shape[0] % 4) if band.shape[0] >= 4 else band.shape[0]
    out_h = min(max(1, rows // 4), level.shape[0] - row)
    if out_h <= 0:
        return
    small = cv2.resize(band[:rows], (level.shape[1], max(1, rows // 4)), interpolation=cv2.INTER_AREA)
    level[row:row + out_h] = small[:out_h]


def _tiles(band: np.ndarray, rows: int) -> Iterator[np.ndarray]:
    """256 x 256 tiles of a band, row-major, padded with glass at the edges."""
    h, w = band.shape[:2]
    for ty in range(0, rows, TILE):
        for tx in range(0, w, TILE):
            t = band[ty:ty + TILE, tx:tx + TILE]
            if t.shape[:2] != (TILE, TILE):
                pad = np.empty((TILE, TILE, 3), np.uint8)
                pad[:] = GLASS_RGB
                pad[:t.shape[0], :t.shape[1]] = t
                t = pad
            yield np.ascontiguousarray(t)


def _array_tiles(img: np.ndarray) -> Iterator[np.ndarray]:
    yield from _tiles(img, img.shape[0])


def write_slide(path: str | os.PathLike, size: tuple[int, int] = (8192, 8192), seed: int = 0,
                mpp: float = 0.5, fmt: str | None = None, overwrite: bool = False,
                params: SceneParams = SLIDE_SCENE, truth: bool = True,
                progress: Callable[[int, int], None] | None = None) -> dict:
    """Write a phantom whole-slide image and its ground truth; return the summary.

    ``size`` is (width, height) in level-0 pixels; ``mpp`` 0.5 (20x) or 0.25 (40x);
    ``fmt`` ``svs`` (Aperio) or ``tiff`` (generic pyramid), by default from the
    suffix. Existing outputs are refused unless ``overwrite``; nothing partial is
    left behind on failure.
    """
    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    if fmt == "tif":
        fmt = "tiff"
    if fmt not in ("svs", "tiff"):
        raise InputError(f"{path}: format must be svs or tiff (got {fmt or 'no suffix'})")
    if mpp not in (0.5, 0.25):
        raise InputError(f"mpp must be 0.5 (20x) or 0.25 (40x), got {mpp}")
    width, height = int(size[0]), int(size[1])
    if min(width, height) < 256:
        raise InputError(f"slide size must be at least 256x256 px, got {width}x{height}")
    scale = int(round(BASE_MPP / mpp))
    t0 = time.perf_counter()
    outs = {"slide": path, **(truth_paths(path) if truth else {})}
    targets = {k: AtomicPath(p, overwrite=overwrite) for k, p in outs.items()}
    try:
        summary = _write(targets, width, height, seed, mpp, scale, fmt, params, truth, progress)
        for t in targets.values():
            t.commit()
    except BaseException:
        for t in targets.values():
            t.abort()
        raise
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    return summary


def _write(targets, width, height, seed, mpp, scale, fmt, params, truth, progress) -> dict:
    r = _Renderer(seed, params, scale, width, height)
    collector = TruthCollector(seed, width, height, mpp, float(scale))
    summary = {"generator": "cerberus-cli synthetic phantom", "seed": int(seed),
               "width": width, "height": height, "mpp": mpp, "format": fmt}
    with ExitStack() as stack:
        writers = []
        if truth:
            from cerberus_cli.outputs.geojson import QuPathGeoJSONWriter
            from cerberus_cli.outputs.geoparquet import GeoParquetWriter

            meta = {"slide": targets["slide"].path.name, "ground_truth": True, **summary}
            # The writers rename into our temporary names; we rename those at the end.
            writers = [stack.enter_context(GeoParquetWriter(targets["parquet"].tmp, meta, overwrite=True)),
                       stack.enter_context(QuPathGeoJSONWriter(targets["geojson"].tmp, overwrite=True))]
        return _write_with(targets, r, collector, writers, summary, width, height, seed, mpp,
                           scale, fmt, truth, progress)


def _write_with(targets, r, collector, writers, summary, width, height, seed, mpp, scale, fmt,
                truth, progress) -> dict:
    def emit(recs: list) -> None:
        for w in writers:
            w.write(recs)
        n_objects[0] += len(recs)

    n_objects = [0]
    tissue_map = np.zeros((math.ceil(r.wh / TISSUE_CELL), math.ceil(r.ww / TISSUE_CELL)), np.uint8)
    # Reduced levels: each 4x smaller, down to about 512 px.
    level_shapes = []
    lw, lh = width, height
    while max(lw, lh) > 2048:
        lw, lh = max(1, lw // 4), max(1, lh // 4)
        level_shapes.append((lh, lw))
    # A 4x reduction of the whole slide, filled band by band: the first reduced level
    # (when the slide is big enough to need one) and the source of the thumbnail.
    level1 = _level_buffer((max(1, height // 4), max(1, width // 4)), targets["slide"].tmp)
    n_bands = math.ceil(r.wh / BLOCK)
    n_blocks = n_bands * math.ceil(r.ww / BLOCK)
    done = [0]

    def level0_tiles() -> Iterator[np.ndarray]:
        for b in range(n_bands):
            y0 = b * BLOCK
            bh = min(BLOCK, r.wh - y0)
            band = np.empty((bh * scale, r.ww * scale, 3), np.uint8)
            for x0 in range(0, r.ww, BLOCK):
                bw = min(BLOCK, r.ww - x0)
                img, lab = r.block(x0, y0, bw, bh)
                band[:, x0 * scale:(x0 + bw) * scale] = img
                if truth:
                    ox, oy = x0 - lab.x0, y0 - lab.y0
                    t = lab.tissue[oy + TISSUE_CELL // 2:oy + bh:TISSUE_CELL,
                                   ox + TISSUE_CELL // 2:ox + bw:TISSUE_CELL]
                    tissue_map[y0 // TISSUE_CELL:y0 // TISSUE_CELL + t.shape[0],
                               x0 // TISSUE_CELL:x0 // TISSUE_CELL + t.shape[1]] = t
                    emit(collector.collect(lab, x0, y0, bw, bh))
                done[0] += 1
                if progress:
                    progress(done[0], n_blocks)
            band = band[:, :width]
            rows = min(band.shape[0], height - y0 * scale)
            _reduce_into(level1, band[:rows], y0 * scale // 4)
            yield from _tiles(band[:rows], rows)

    desc0 = (f"Aperio Image Library v12.0.0\n{width}x{height} [0,0 {width}x{height}] ({TILE}x{TILE}) "
             f"JPEG/RGB Q={JPEG_QUALITY}|AppMag = {int(round(20 * BASE_MPP / mpp))}|MPP = {mpp}"
             f"|Filename = phantom|Seed = {seed}")
    res = (1e4 / mpp, 1e4 / mpp)
    jpeg = dict(compression="jpeg", compressionargs={"level": JPEG_QUALITY})
    bigtiff = width * height * 3 > 2 ** 31
    with tifffile.TiffWriter(targets["slide"].tmp, bigtiff=bigtiff) as tif:
        common = dict(photometric="rgb", metadata=None, resolution=res, resolutionunit="CENTIMETER", **jpeg)
        tif.write(level0_tiles(), shape=(height, width, 3), dtype=np.uint8, tile=(TILE, TILE),
                  description=desc0 if fmt == "svs" else f"cerberus-cli phantom slide; seed {seed}; mpp {mpp}",
                  **common)
        levels = [level1] if level_shapes else []
        for shp in level_shapes[1:]:
            levels.append(cv2.resize(levels[-1], (shp[1], shp[0]), interpolation=cv2.INTER_AREA))
        if fmt == "svs":
            src = levels[-1] if levels else level1
            f = min(0.25, 768 / max(width, height))  # never larger than the 4x reduction
            tw, th = max(1, int(width * f)), max(1, int(height * f))
            thumb = cv2.resize(src, (tw, th), interpolation=cv2.INTER_AREA)
            tif.write(thumb, description=f"Aperio Image Library v12.0.0\n{width}x{height} -> {tw}x{th} - ",
                      rowsperstrip=16, **common)
        for lvl in levels:
            lh, lw = lvl.shape[:2]
            d = (f"Aperio Image Library v12.0.0\n{width}x{height} [0,0 {width}x{height}] ({TILE}x{TILE}) "
                 f"-> {lw}x{lh} JPEG/RGB Q={JPEG_QUALITY}") if fmt == "svs" else None
            ds = width / lw
            tif.write(_array_tiles(lvl), shape=(lh, lw, 3), dtype=np.uint8, tile=(TILE, TILE),
                      description=d, subfiletype=1, photometric="rgb", metadata=None,
                      resolution=(res[0] / ds, res[1] / ds), resolutionunit="CENTIMETER", **jpeg)
    summary["levels"] = [[width, height]] + [[s[1], s[0]] for s in level_shapes]
    if truth:
        emit(collector.finish())
        emit(tissue_records(tissue_map, TISSUE_CELL, float(scale), mpp, seed, width, height))
        counts = collector.counts
        counts["tissue"] = _tissue_counts(tissue_map)
        _write_truth(targets, tissue_map, summary, counts, scale, n_objects[0])
    return summary


#: Reduced levels larger than this go to a temporary file instead of memory.
IN_MEMORY_LEVEL_BYTES = 256 * 2 ** 20


def _level_buffer(shape: tuple[int, int], slide_tmp: Path) -> np.ndarray:
    """Zeroed RGB buffer for the first reduced level: in memory, or (for very large
    slides) a memory-mapped temporary file that is unlinked at once."""
    if shape[0] * shape[1] * 3 <= IN_MEMORY_LEVEL_BYTES:
        return np.zeros((*shape, 3), np.uint8)
    import tempfile
    fh = tempfile.TemporaryFile(dir=slide_tmp.parent, prefix=slide_tmp.name + ".level1.")
    fh.truncate(shape[0] * shape[1] * 3)
    return np.memmap(fh, dtype=np.uint8, mode="r+", shape=(*shape, 3))


def _tissue_counts(tissue_map: np.ndarray) -> dict[str, int]:
    """Cells of the tissue map per class name."""
    ids, n = np.unique(tissue_map, return_counts=True)
    return {TISSUE_TYPES[i].name: int(c) for i, c in zip(ids, n)}


def _write_truth(targets, tissue_map, summary, counts, scale, n_objects) -> None:
    """The tissue map PNG and the summary JSON (the object files are streamed)."""
    meta = {"slide": targets["slide"].path.name, "ground_truth": True, **summary}
    if not cv2.imwrite(str(targets["tissue"].tmp) + ".png", tissue_map):
        raise OSError(f"{targets['tissue'].path}: could not write PNG")
    os.replace(str(targets["tissue"].tmp) + ".png", targets["tissue"].tmp)
    info = {**meta, "tissue_map": {"file": targets["tissue"].path.name,
                                   "mpp": TISSUE_CELL * BASE_MPP,
                                   "level0_px_per_cell": TISSUE_CELL * scale,
                                   "classes": "TISSUE_TYPES ids (0 background/glass)"},
            "counts": counts, "objects": n_objects}
    targets["json"].tmp.write_text(json.dumps(info, indent=2) + "\n")
