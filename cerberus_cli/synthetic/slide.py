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
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import tifffile

from cerberus_cli.core.atomic import AtomicPath
from cerberus_cli.core.errors import InputError
from cerberus_cli.core.vocabulary import TISSUE_TYPES
from cerberus_cli.synthetic.artefacts import artefact_density
from cerberus_cli.synthetic.noise import white_noise
from cerberus_cli.synthetic.paint import PAINT_MARGIN, paint
from cerberus_cli.synthetic.params import BASE_MPP, SLIDE_SCENE, SceneParams
from cerberus_cli.synthetic.scene import PhantomWorld
from cerberus_cli.synthetic.stain import Stain, finish
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
    """Renders blocks of the world as slide pixels (one stain and blur per slide)."""

    def __init__(self, seed: int, params: SceneParams, scale: int, width: int, height: int) -> None:
        self.world = PhantomWorld(seed, params)
        self.seed = seed
        self.scale = scale
        self.ww = math.ceil(width / scale)               # world pixels
        self.wh = math.ceil(height / scale)
        rng = np.random.default_rng([seed & 0xFFFFFFFF, 78])
        self.stain = Stain.draw(rng, params.stain_jitter)
        self.sigma = float(rng.uniform(*params.blur))

    def block(self, x0: int, y0: int, w: int, h: int):
        """Image (level-0 px) and labels of world block ``[x0, x0+w) x [y0, y0+h)``."""
        m = PAINT_MARGIN
        lab = self.world.labels(x0 - m, y0 - m, w + 2 * m, h + 2 * m)
        params = self.world.params
        rgb = paint(lab, self.seed, self.stain, params.pale, params.vesicular, params.fibre_haem)
        if params.artefacts:
            od = artefact_density(self.seed, x0 - m, y0 - m, w + 2 * m, h + 2 * m, lab.sdf,
                                  self.ww, self.wh)
            rgb *= cv2.exp(-od)
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


def write_phantom_slide(path: str | os.PathLike, size: tuple[int, int] = (8192, 8192), seed: int = 0,
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
        summary = _SlideJob(targets, width, height, seed, mpp, scale, fmt, params, truth,
                            progress).run()
        for t in targets.values():
            t.commit()
    except BaseException:
        for t in targets.values():
            t.abort()
        raise
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    return summary


class _SlideJob:
    """One slide being written: renders bands, streams tiles and truth, builds levels."""

    def __init__(self, targets: dict[str, AtomicPath], width: int, height: int, seed: int,
                 mpp: float, scale: int, fmt: str, params: SceneParams, truth: bool,
                 progress: Callable[[int, int], None] | None) -> None:
        self.targets, self.width, self.height = targets, width, height
        self.seed, self.mpp, self.scale, self.fmt = seed, mpp, scale, fmt
        self.truth, self.progress = truth, progress
        self.renderer = _Renderer(seed, params, scale, width, height)
        self.ww, self.wh = self.renderer.ww, self.renderer.wh
        self.collector = TruthCollector(seed, width, height, mpp, float(scale))
        self.writers: list = []
        self.n_objects = 0
        self.tissue_map = np.zeros((math.ceil(self.wh / TISSUE_CELL), math.ceil(self.ww / TISSUE_CELL)),
                                   np.uint8)
        # A 4x reduction of the whole slide, filled band by band: the first reduced
        # level (when the slide is big enough to need one) and the thumbnail source.
        self.level1 = _level_buffer((max(1, height // 4), max(1, width // 4)), targets["slide"].tmp)
        self.level_shapes: list[tuple[int, int]] = []
        lw, lh = width, height
        while max(lw, lh) > 2048:
            lw, lh = max(1, lw // 4), max(1, lh // 4)
            self.level_shapes.append((lh, lw))
        self.summary = {"generator": "cerberus-cli synthetic phantom", "seed": int(seed),
                        "width": width, "height": height, "mpp": mpp, "format": fmt,
                        "levels": [[width, height]] + [[s[1], s[0]] for s in self.level_shapes]}

    def run(self) -> dict:
        with ExitStack() as stack:
            if self.truth:
                from cerberus_cli.outputs.geojson import QuPathGeoJSONWriter
                from cerberus_cli.outputs.geoparquet import GeoParquetWriter

                meta = {"slide": self.targets["slide"].path.name, "ground_truth": True, **self.summary}
                # The writers rename into our temporary names; ours are renamed at the end.
                self.writers = [
                    stack.enter_context(GeoParquetWriter(self.targets["parquet"].tmp, meta, overwrite=True)),
                    stack.enter_context(QuPathGeoJSONWriter(self.targets["geojson"].tmp, overwrite=True)),
                ]
            self._write_tiff()
            if self.truth:
                self._emit(self.collector.finish())
                self._emit(tissue_records(self.tissue_map, TISSUE_CELL, float(self.scale), self.mpp,
                                          self.seed, self.width, self.height))
        if self.truth:
            self._write_truth_files()
        return self.summary

    def _emit(self, records: list) -> None:
        for w in self.writers:
            w.write(records)
        self.n_objects += len(records)

    def _level0_tiles(self) -> Iterator[np.ndarray]:
        """Render band after band; yield its tiles, keep its truth and its reduction."""
        s = self.scale
        n_bands = math.ceil(self.wh / BLOCK)
        n_blocks = n_bands * math.ceil(self.ww / BLOCK)
        done = 0
        for b in range(n_bands):
            y0 = b * BLOCK
            bh = min(BLOCK, self.wh - y0)
            band = np.empty((bh * s, self.ww * s, 3), np.uint8)
            for x0 in range(0, self.ww, BLOCK):
                bw = min(BLOCK, self.ww - x0)
                img, lab = self.renderer.block(x0, y0, bw, bh)
                band[:, x0 * s:(x0 + bw) * s] = img
                if self.truth:
                    self._keep_truth(lab, x0, y0, bw, bh)
                done += 1
                if self.progress:
                    self.progress(done, n_blocks)
            rows = min(band.shape[0], self.height - y0 * s)
            band = band[:rows, :self.width]
            _reduce_into(self.level1, band, y0 * s // 4)
            yield from _tiles(band, rows)

    def _keep_truth(self, lab, x0: int, y0: int, bw: int, bh: int) -> None:
        ox, oy = x0 - lab.x0, y0 - lab.y0
        c = TISSUE_CELL
        t = lab.tissue[oy + c // 2:oy + bh:c, ox + c // 2:ox + bw:c]
        self.tissue_map[y0 // c:y0 // c + t.shape[0], x0 // c:x0 // c + t.shape[1]] = t
        self._emit(self.collector.collect(lab, x0, y0, bw, bh))

    def _write_tiff(self) -> None:
        from cerberus_cli.slides.writer import write_svs_pages

        width, height, mpp = self.width, self.height, self.mpp
        res = 1e4 / mpp  # pixels per centimetre
        tile_kw: dict[str, Any] = dict(tile=(TILE, TILE), photometric="rgb", compression="jpeg",
                                       compressionargs={"level": JPEG_QUALITY})
        bigtiff = width * height * 3 > 2 ** 31
        levels = [self.level1] if self.level_shapes else []
        for shp in self.level_shapes[1:]:
            levels.append(cv2.resize(levels[-1], (shp[1], shp[0]), interpolation=cv2.INTER_AREA))
        with tifffile.TiffWriter(self.targets["slide"].tmp, bigtiff=bigtiff) as tif:
            if self.fmt == "svs":
                write_svs_pages(tif, self._level0_tiles(), (width, height), levels, mpp,
                                tile_kw=tile_kw, objective_power=round(20 * BASE_MPP / mpp),
                                extra_fields=("Filename = phantom", f"Seed = {self.seed}"),
                                # never larger than the 4x reduction
                                thumbnail_px=min(768, max(width, height) // 4),
                                thumbnail_from=self.level1)
                return
            tif.write(self._level0_tiles(), shape=(height, width, 3), dtype=np.uint8, metadata=None,
                      description=f"cerberus-cli phantom slide; seed {self.seed}; mpp {mpp}",
                      resolution=(res, res), resolutionunit="CENTIMETER", **tile_kw)
            for lvl in levels:
                lh, lw = lvl.shape[:2]
                ds = width / lw
                tif.write(_tiles(lvl, lh), shape=(lh, lw, 3), dtype=np.uint8, subfiletype=1,
                          metadata=None, resolution=(res / ds, res / ds), resolutionunit="CENTIMETER",
                          **tile_kw)

    def _write_truth_files(self) -> None:
        """The tissue map PNG and the summary JSON (the object files are streamed)."""
        ok, png = cv2.imencode(".png", self.tissue_map)
        if not ok:
            raise OSError(f"{self.targets['tissue'].path}: could not encode PNG")
        self.targets["tissue"].tmp.write_bytes(png.tobytes())
        counts = dict(self.collector.counts)
        ids, n = np.unique(self.tissue_map, return_counts=True)
        counts["tissue"] = {TISSUE_TYPES[i].name: int(c) for i, c in zip(ids, n)}
        info = {"slide": self.targets["slide"].path.name, "ground_truth": True, **self.summary,
                "tissue_map": {"file": self.targets["tissue"].path.name,
                               "mpp": TISSUE_CELL * BASE_MPP,
                               "level0_px_per_cell": TISSUE_CELL * self.scale,
                               "classes": "TISSUE_TYPES ids (0 = glass)"},
                "counts": counts, "objects": self.n_objects}
        self.targets["json"].tmp.write_text(json.dumps(info, indent=2) + "\n")


#: Reduced levels larger than this go to a temporary file instead of memory.
IN_MEMORY_LEVEL_BYTES = 256 * 2 ** 20


def _level_buffer(shape: tuple[int, int], slide_tmp: Path) -> np.ndarray:
    """Zeroed RGB buffer for the first reduced level: in memory, or (for very large
    slides) a memory-mapped temporary file that is unlinked at once."""
    if shape[0] * shape[1] * 3 <= IN_MEMORY_LEVEL_BYTES:
        return np.zeros((*shape, 3), np.uint8)
    fh = tempfile.TemporaryFile(dir=slide_tmp.parent, prefix=slide_tmp.name + ".level1.")
    fh.truncate(shape[0] * shape[1] * 3)
    return np.memmap(fh, dtype=np.uint8, mode="r+", shape=(*shape, 3))
