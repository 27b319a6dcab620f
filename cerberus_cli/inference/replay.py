"""Replay of the segment pipeline's CPU side from saved maps, with no network.

``cerberus segment --save-maps`` keeps a slide's maps (``S.maps.zarr``). A replay
runs everything the pipeline does around the network, with the same functions
and in the same order: the tile plan; reading each planned tile from the slide
(the loader's work; the pixels are then dropped); storing the tile's saved maps
in a fresh map store (the consumer's work); post-processing each chunk as soon
as its window is complete, in worker processes, as the pipeline's worker
function (``pipeline.process_window``) does it, plus the slide extent
(:attr:`ChunkMaps.extent`: every object inside the slide); and streaming the
objects into a GeoParquet file and the QC overlay in chunk order.

Tile reads and chunk post-processing share one pool of worker processes (the
CPU workers of a host); storing maps and writing objects run in the calling
process. Every stage's CPU time is measured where it runs (workers report
theirs per task), so throughput per CPU-second does not depend on how busy the
machine is; wall time does.
"""

from __future__ import annotations

import shutil
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Protocol, cast, runtime_checkable

import numpy as np
import zarr

from cerberus_cli.core.processes import peak_rss_mib
from cerberus_cli.core.records import ObjectRecord
from cerberus_cli.inference.mapstore import ChunkTracker, MapStore, subarray, tiles_in
from cerberus_cli.inference.pipeline import WindowResult, process_window
from cerberus_cli.inference.tile_plan import Tile, grid_size, plan_tiles
from cerberus_cli.model.config import ModelConfig
from cerberus_cli.postprocess.chunks import required_margin
from cerberus_cli.postprocess.options import PostprocessOptions

#: CPU stages a replay measures, in pipeline order.
STAGES = ("tile_read", "map_store", "postprocess", "write")


@dataclass
class ReplayResult:
    """What one replay processed and how long each stage took."""

    tiles: int
    chunks: int
    #: Model-grid megapixels the network produced: planned tiles' kept pixels in the grid.
    output_mpx: float
    #: Model-grid megapixels owned by the processed chunks (tissue and background).
    core_mpx: float
    #: Wall time from the first tile to the last object written.
    wall_s: float
    #: CPU seconds per stage of :data:`STAGES`.
    cpu_s: dict[str, float] = field(default_factory=dict)
    #: Objects per task.
    counts: dict[str, int] = field(default_factory=dict)
    #: Peak resident memory (MiB) of the calling process and of the largest worker.
    peak_rss_mib: dict[str, float] = field(default_factory=dict)
    #: Every record, in write order (only when asked for).
    records: list[ObjectRecord] = field(default_factory=list)

    @property
    def total_cpu_s(self) -> float:
        """CPU seconds of all stages together."""
        return float(sum(self.cpu_s.values()))

    def mpx_per_cpu_s(self, stages: tuple[str, ...] = STAGES) -> float:
        """Output megapixels per CPU-second of ``stages``."""
        cpu = sum(self.cpu_s.get(s, 0.0) for s in stages)
        return self.output_mpx / cpu if cpu > 0 else float("inf")

    @property
    def mpx_per_wall_s(self) -> float:
        """Output megapixels per second of wall time."""
        return self.output_mpx / self.wall_s if self.wall_s > 0 else float("inf")


@runtime_checkable
class MapSource(Protocol):
    """What stands in for the network in a replay: each kept tile's maps."""

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the grid padded to whole tiles."""
        ...

    def tile(self, tile: Tile) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Instance probabilities (2, size, size) and type maps (size, size) of ``tile``."""
        ...


class SavedMaps:
    """Level 0 of a ``--save-maps`` OME-Zarr image: the map store's maps at the model grid.

    Instance head ``n`` is the channel pair ``"n inner"``, ``"n boundary"`` of the
    ``s0`` image (:mod:`cerberus_cli.inference.multiscale`); type head ``t`` is the
    label image ``labels/t/s0``.
    """

    def __init__(self, path: str | Path) -> None:
        group = zarr.open_group(str(path), mode="r")
        self.path = Path(path)
        attrs = cast(dict[str, Any], group.attrs["cerberus"])
        channels: list[str] = list(attrs["channels"])
        image = subarray(group, "s0")
        self.prob = {c.removesuffix(" inner"): _Channels(image, channels.index(c))
                     for c in channels if c.endswith(" inner")}
        self.types = {n: subarray(group, f"labels/{n}/s0") for n in attrs.get("type_maps", {})}
        self.mpp = float(attrs["mpp"])

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the stored grid (whole tiles)."""
        first = next(iter(self.prob.values()))
        return int(first.shape[-2]), int(first.shape[-1])

    def tile(self, tile: Tile) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """The maps of one kept tile, as the network would have produced them."""
        ys, xs = slice(tile.y, tile.y + tile.size), slice(tile.x, tile.x + tile.size)
        return ({n: cast(np.ndarray, a[:, ys, xs]) for n, a in self.prob.items()},
                {n: cast(np.ndarray, a[ys, xs]) for n, a in self.types.items()})


class _Channels:
    """The inner and boundary channels (``index``, ``index + 1``) of a saved image."""

    def __init__(self, image: zarr.Array, index: int) -> None:
        self.image, self.index = image, index
        self.shape = (2,) + tuple(int(s) for s in image.shape[1:])

    def __getitem__(self, key: tuple[slice, slice, slice]) -> np.ndarray:
        _, ys, xs = key
        return cast(np.ndarray, self.image[self.index:self.index + 2, ys, xs])


# --- worker side ------------------------------------------------------------------------

_SLIDES: dict[str, Any] = {}


def _warm(seconds: float) -> int:
    """Occupy a worker briefly so every worker of a new pool starts (imports done)."""
    time.sleep(seconds)
    return 0


def _read_tile(slide_path: str, backend: str, mpp_override: float | None,
               box: tuple[int, int, int, int], mpp: float) -> float:
    """Read one network input tile as the loader does; returns the CPU seconds."""
    from cerberus_cli.slides import open_slide, read_scaled

    c0 = time.process_time()
    slide = _SLIDES.get(slide_path)
    if slide is None:
        _SLIDES.clear()
        slide = _SLIDES[slide_path] = open_slide(slide_path, backend=backend, mpp=mpp_override)
    rgb = read_scaled(slide, *box, mpp)
    np.ascontiguousarray(rgb.transpose(2, 0, 1))  # the loader's CHW copy
    return time.process_time() - c0




def start_pool(workers: int) -> ProcessPoolExecutor:
    """A spawned worker pool with every process started, so start-up is not timed."""
    pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"))
    for f in [pool.submit(_warm, 0.3) for _ in range(workers)]:
        f.result()
    return pool


# --- driver -----------------------------------------------------------------------------

def replay_slide(
    slide_path: str | Path,
    maps_path: str | Path | MapSource,
    out_path: str | Path,
    config: ModelConfig,
    pool: ProcessPoolExecutor | None,
    *,
    tile: int = 720,
    margin: int = 152,
    chunk: int = 2048,
    options: PostprocessOptions | None = None,
    backend: str = "auto",
    mpp: float | None = None,
    read_tiles: bool = True,
    clip: bool = True,
    overlay: bool = True,
    key: str | None = None,
    keep_records: bool = False,
) -> ReplayResult:
    """Replay the CPU side of ``segment`` for one slide from its saved maps.

    ``tile``, ``margin`` and ``chunk`` must be those of the run that saved the
    maps (its run record lists them). ``pool`` runs tile reads and chunk
    post-processing (None: everything in this process). Objects are written to
    ``out_path`` (GeoParquet); ``key`` (default: the slide file's stem) enters
    the object ids, as in ``segment``; ``options`` default to those of ``segment``
    (and, like there, take the model's calibration unless they turn it off).
    ``read_tiles=False`` leaves out the loader's work (reading slide tiles);
    ``clip`` keeps every object inside the slide (``ChunkMaps.extent``).
    ``maps_path`` may also be any :class:`MapSource` (maps made up for a large slide).
    """
    from cerberus_cli.outputs.geoparquet import GeoParquetWriter
    from cerberus_cli.outputs.overlay import OverlayCanvas, overlay_mpp
    from cerberus_cli.slides import detect_tissue, open_slide, thumbnail

    slide_path = Path(slide_path)
    key = slide_path.stem if key is None else key
    options = (PostprocessOptions() if options is None else options).for_model(config.postprocess)
    saved = maps_path if isinstance(maps_path, MapSource) else SavedMaps(maps_path)
    with open_slide(slide_path, backend=backend, mpp=mpp) as slide:
        tiles = plan_tiles(slide, detect_tissue(slide), config.mpp, tile, margin)
        width, height = grid_size(slide, config.mpp)
        scale = config.mpp / slide.mpp
        slide_mpp = slide.mpp
        extent = (0.0, 0.0, float(slide.dimensions[0]), float(slide.dimensions[1])) \
            if clip else None
        canvas = None
        if overlay:
            thumb_mpp = overlay_mpp(slide.dimensions, slide.mpp)
            canvas = OverlayCanvas(thumbnail(slide, thumb_mpp), slide.mpp / thumb_mpp)
    if saved.shape != (-(-height // tile) * tile, -(-width // tile) * tile):
        raise ValueError(f"saved maps {saved.shape} do not match a {width}x{height} grid of "
                         f"{tile} px tiles")
    margin_post = required_margin(options)
    cpu = dict.fromkeys(STAGES, 0.0)
    counts: dict[str, int] = {}
    kept: list[ObjectRecord] = []
    worker_peak = 0.0
    work = Path(out_path).with_suffix(".replay.zarr")
    writer = GeoParquetWriter(out_path, {"replay": True}, overwrite=True)
    t_start = time.perf_counter()
    try:
        store = MapStore.create(work, config, width, height, tile)
        tracker = ChunkTracker(tiles, store.width, store.height, chunk, margin_post)
        planned = {(t.x, t.y) for t in tiles}
        reads: list[Future | float] = []
        pending: dict[int, Future[WindowResult] | WindowResult] = {}
        cfg_dict = config.to_dict()
        for t in tiles:
            if read_tiles:
                read_args = (str(slide_path), backend, mpp, t.input_box, config.mpp)
                reads.append(_read_tile(*read_args) if pool is None
                             else pool.submit(_read_tile, *read_args))
            prob, types = saved.tile(t)  # stands in for the network: not timed
            c0 = time.process_time()
            store.write(t, prob, types)
            ready = tracker.tile_done(t)
            cpu["map_store"] += time.process_time() - c0
            for c in ready:
                args = (str(store.path), store.tile, c, tiles_in(c.window, tile, planned),
                        cfg_dict, options, scale, slide_mpp, key, extent)
                pending[c.index] = process_window(*args) if pool is None \
                    else pool.submit(process_window, *args)
        for index in range(len(tracker.chunks)):
            item = pending.pop(index)
            done = item.result() if isinstance(item, Future) else item
            records = done.records
            cpu["postprocess"] += done.seconds
            worker_peak = max(worker_peak, done.peak_rss_mib)
            c0 = time.process_time()
            writer.write(records)
            if canvas is not None:
                canvas.draw(records)
            cpu["write"] += time.process_time() - c0
            for r in records:
                counts[r.task] = counts.get(r.task, 0) + 1
            if keep_records:
                kept += records
        cpu["tile_read"] = float(sum(r.result() if isinstance(r, Future) else r for r in reads))
        c0 = time.process_time()
        writer.close()
        if canvas is not None:
            canvas.save(Path(out_path).with_suffix(".overlay.png"))
        cpu["write"] += time.process_time() - c0
    except BaseException:
        writer.abort()
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    wall = time.perf_counter() - t_start
    core_mpx = sum((c.core.x1 - c.core.x0) * (c.core.y1 - c.core.y0)
                   for c in tracker.chunks) / 1e6
    output_mpx = sum(min(t.size, width - t.x) * min(t.size, height - t.y) for t in tiles) / 1e6
    return ReplayResult(tiles=len(tiles), chunks=len(tracker.chunks), output_mpx=output_mpx,
                        core_mpx=core_mpx,
                        wall_s=wall, cpu_s=cpu, counts=counts, records=kept,
                        peak_rss_mib={"main": peak_rss_mib(), "worker": worker_peak})
