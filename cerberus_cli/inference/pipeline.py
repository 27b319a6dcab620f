"""Segmentation of one slide: tiles -> network -> map store -> objects -> files.

Three stages overlap so the network never waits: loader processes read and resize
tiles ahead of the network; the main thread only feeds the network; a consumer
thread stores the maps and hands each completed chunk to a pool of
post-processing processes, whose objects stream into the writers.
"""

from __future__ import annotations

import logging
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import cv2
import numpy as np

from cerberus_cli.core.errors import InputError
from cerberus_cli.core.processes import (
    deferred_stop,
    die_with_parent,
    peak_rss_mib,
    raise_if_stopped,
)
from cerberus_cli.core.records import ObjectRecord
from cerberus_cli.inference.engine import BatchMaps, Engine, inference_network
from cerberus_cli.inference.loader import TileDataset, make_loader
from cerberus_cli.inference.mapstore import (
    Chunk,
    ChunkTracker,
    MapStore,
    TissueMap,
    tiles_in,
)
from cerberus_cli.inference.options import SegmentOptions
from cerberus_cli.inference.sinks import (
    ObjectSink,
    SlideContext,
    SlideResult,
    SlideStats,
)
from cerberus_cli.inference.slide_adapt import (
    ADAPT_BATCH,
    STAIN_FIT_TILES,
    adapted_batchnorm,
    normalise_batch,
    read_tiles,
    sample_tiles,
)
from cerberus_cli.inference.tile_plan import Tile, grid_size, plan_tiles
from cerberus_cli.model.checkpoint import LoadedModel
from cerberus_cli.model.classifier import attach_classifier
from cerberus_cli.model.config import ModelConfig
from cerberus_cli.model.device import (
    prepare_model,
    resolve_device,
    resolve_precision,
)
from cerberus_cli.postprocess.chunks import (
    ChunkMaps,
    PostprocessOptions,
    process_chunk,
    required_margin,
)
from cerberus_cli.slides.stain_norm import StainNormaliser

if TYPE_CHECKING:
    from cerberus_cli.slides import Slide, TissueMask

log = logging.getLogger(__name__)

#: Callback for progress: (tiles done, tiles total, objects found).
Progress = Callable[[int, int, int], None]


class Segmenter:
    """A loaded model prepared once for many slides."""

    def __init__(self, loaded: LoadedModel, options: SegmentOptions) -> None:
        # A fine-tuned classifier (cerberus finetune) becomes the tissue-kind head: its
        # class map is written as the tissue map is, with its own class names.
        loaded = attach_classifier(loaded)
        self.loaded = loaded
        self.config: ModelConfig = loaded.config
        self.options = options
        stride = self.config.total_stride
        if (options.tile + 2 * options.margin) % stride:
            side = options.tile + 2 * options.margin
            raise InputError(f"--tile + 2 * --margin = {side} px must be a multiple of the network "
                             f"stride {stride} (e.g. --tile {options.tile - side % stride})")
        self.device = resolve_device(options.device)
        self.dtype = resolve_precision(options.precision, self.device)
        #: The float network as loaded (batch-norm adaptation works on it); the engine
        #: runs its faster form (folded batch-norm, int8, compiled: --fold-bn, --quantize).
        self.network = prepare_model(loaded.model, self.device, options.channels_last)
        self.engine = Engine(self._inference_network(), self.config, self.device, self.dtype,
                             options.margin, options.tile, options.channels_last)
        self.post_options = options.post.for_model(self.config.postprocess)
        self.post_margin = required_margin(self.post_options)
        self._pool: ProcessPoolExecutor | None = None
        self.stain = StainNormaliser("none")

    def pool(self) -> ProcessPoolExecutor | None:
        """The post-processing processes, started once and kept for every slide."""
        if self._pool is None and self.options.post_workers > 0:
            self._pool = ProcessPoolExecutor(self.options.post_workers, mp_context=get_context("spawn"),
                                             initializer=die_with_parent)
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> Segmenter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, slide: Slide, mask: TissueMask | None, sink: ObjectSink, key: str,
            progress: Progress | None = None, work_dir: Path | None = None) -> SlideStats:
        """Segment an opened slide into ``sink`` (finished only on success).

        ``key`` names the slide in object ids; ``work_dir`` holds the temporary map
        store (default: the system temporary folder).
        """
        opts, cfg = self.options, self.config
        run = SlideStats(tissue_fraction=float(mask.fraction) if mask is not None else 1.0)
        t_start = time.perf_counter()
        tiles = plan_tiles(slide, mask, cfg.mpp, opts.tile, opts.margin)
        width, height = grid_size(slide, cfg.mpp)
        run.tiles, run.grid = len(tiles), (width, height)
        with deferred_stop():
            work = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".work", dir=work_dir))
            try:
                store = MapStore.create(work / "maps.zarr", cfg, width, height, opts.tile)
                tracker = ChunkTracker(tiles, store.width, store.height, opts.chunk, self.post_margin)
                tissue = self._tissue_map(width, height)
                sink.open(self.context(slide, key, tiles), slide)
                run.timings["plan_s"] = time.perf_counter() - t_start
                with self._adapted(slide, tiles, run):
                    self._stream(slide, tiles, store, tracker, tissue, sink, run, key, progress, mask)
                t_fin = time.perf_counter()
                sink.finish(SlideResult(run, tissue, store if opts.save_maps else None, mask))
                run.timings["finalise_s"] = time.perf_counter() - t_fin
                raise_if_stopped()
            except BaseException:
                sink.abort()
                raise
            finally:
                shutil.rmtree(work, ignore_errors=True)
        run.timings["total_s"] = time.perf_counter() - t_start
        return run

    @contextmanager
    def _adapted(self, slide: Slide, tiles: list[Tile], run: SlideStats) -> Iterator[None]:
        """Fit --stain-norm and --adapt-bn on the slide's own tiles for the block."""
        opts = self.options
        self.stain = StainNormaliser(opts.stain_norm)
        if not tiles or (opts.adapt_bn == 0 and opts.stain_norm == "none"):
            yield
            return
        t0 = time.perf_counter()
        images = read_tiles(slide, sample_tiles(tiles, max(opts.adapt_bn, STAIN_FIT_TILES)), self.config.mpp)
        if opts.stain_norm != "none":
            self.stain.fit(images)
            images = [self.stain(im) for im in images]
        if opts.adapt_bn == 0:
            run.timings["adapt_s"] = time.perf_counter() - t0
            yield
            return
        images = [images[i] for i in np.unique(np.linspace(0, len(images) - 1, opts.adapt_bn).round().astype(int))]
        tissue = "dense" if self.config.heads_of_kind("tissue") else None
        with adapted_batchnorm(self.network, images, ADAPT_BATCH, self.device, tissue,
                               opts.channels_last):
            own = self.engine.model
            self.engine.model = self._inference_network()  # with the slide's statistics
            run.timings["adapt_s"] = time.perf_counter() - t0
            try:
                yield
            finally:
                self.engine.model = own

    def _inference_network(self) -> Any:
        opts = self.options
        return inference_network(self.network, self.config, self.device,
                                 channels_last=opts.channels_last, fold_bn=opts.fold_bn,
                                 quantize=opts.quantize, compile=opts.compile)

    def context(self, slide: Slide, key: str, tiles: Sequence[Tile] = ()) -> SlideContext:
        """The slide, model and result-shaping options a sink records."""
        width, height = slide.dimensions
        s = self.config.mpp / slide.mpp
        return SlideContext(key=key, path=str(slide.path), width=width, height=height,
                            mpp=slide.mpp, model_name=self.config.name,
                            model_sha256=self.loaded.sha256, model_mpp=self.config.mpp,
                            options=self.options.to_dict(),
                            type_classes={h.name: h.classes for h in self.config.heads_of_kind("type")},
                            tiles=tuple((t.x * s, t.y * s, t.size * s, t.size * s) for t in tiles))

    def _note_damage(self, tiles: list[Tile], index: Any, unreadable: Any, suspect: Any,
                     run: SlideStats) -> None:
        for i, bad, odd in zip(index.tolist(), unreadable.tolist(), suspect.tolist()):
            if bad or odd:
                t = tiles[i]
                run.damage.append({"x": t.x, "y": t.y, "size": t.size, "unreadable": int(bad),
                                   "implausible": bool(odd)})
        limit = self.options.max_bad_tiles
        if len(run.damage) > limit:
            raise InputError(f"{len(run.damage)} tiles are unreadable or implausible (more than "
                             f"--max-bad-tiles {limit}); first at x={run.damage[0]['x']} "
                             f"y={run.damage[0]['y']} (model-resolution px)")

    def _tissue_map(self, width: int, height: int) -> TissueMap | None:
        heads = self.config.heads_of_kind("tissue")
        if not heads:
            return None
        return TissueMap(width, height, self.config.total_stride, self.config.tissue_crop,
                         self.config.mpp, heads[0].classes)

    def _stream(self, slide: Slide, tiles: list[Tile], store: MapStore, tracker: ChunkTracker,
                tissue: TissueMap | None, sink: ObjectSink, run: SlideStats, key: str,
                progress: Progress | None, mask: TissueMask | None) -> None:
        opts = self.options
        scale = self.config.mpp / slide.mpp
        consumer = _Consumer(store, tracker, tissue, sink, run, tiles, self.pool(), self.config,
                             self.post_options, scale, slide.mpp, key=key,
                             extent=(0.0, 0.0, float(slide.dimensions[0]), float(slide.dimensions[1])),
                             mask=mask)
        loader = make_loader(TileDataset(slide, tiles, self.config.mpp), opts.batch_size,
                             opts.workers, pin_memory=self.device.type == "cuda")
        # Fork the loader processes before the consumer thread exists.
        batches = iter(loader)
        consumer.start()
        t_net = 0.0
        t0 = time.perf_counter()
        done = 0
        try:
            for index, images, unreadable, suspect in batches:
                raise_if_stopped()
                self._note_damage(tiles, index, unreadable, suspect, run)
                t = time.perf_counter()
                maps = self.engine(normalise_batch(self.stain, images))
                t_net += time.perf_counter() - t
                consumer.put([tiles[i] for i in index.tolist()], maps)
                done += len(index)
                if progress:
                    progress(done, len(tiles), run.objects)
                consumer.raise_if_failed()
            run.timings["network_s"] = t_net
            run.timings["tiles_s"] = time.perf_counter() - t0
            t_drain = time.perf_counter()
            consumer.finish()
            run.timings["drain_s"] = time.perf_counter() - t_drain
            run.timings["postprocess_cpu_s"] = consumer.post_seconds
            run.postprocess_worker_rss_mib = consumer.worker_rss_mib
        finally:
            consumer.stop()
            del batches  # the loader's workers and queues go now, not at interpreter exit
        if progress:
            progress(len(tiles), len(tiles), run.objects)


class _Consumer(threading.Thread):
    """Stores maps, schedules complete chunks and writes their objects in order."""

    def __init__(self, store: MapStore, tracker: ChunkTracker, tissue: TissueMap | None,
                 sink: ObjectSink, run: SlideStats, tiles: list[Tile],
                 pool: ProcessPoolExecutor | None, config: ModelConfig,
                 post_options: PostprocessOptions, scale: float, slide_mpp: float, key: str,
                 extent: tuple[float, float, float, float], mask: TissueMask | None) -> None:
        super().__init__(daemon=True, name="cerberus-consumer")
        self.store, self.tracker, self.tissue = store, tracker, tissue
        self.outputs, self.run_stats, self.pool = sink, run, pool
        self.config, self.post_options = config, post_options
        self.scale, self.slide_mpp, self.key = scale, slide_mpp, key
        self.extent = extent
        self.in_tissue = TissueFilter(mask, slide_mpp)
        self.planned = {(t.x, t.y) for t in tiles}
        self.tile_size = tiles[0].size if tiles else 1
        self.queue: queue.Queue = queue.Queue(maxsize=8)
        self.pending: dict[int, Future[WindowResult] | WindowResult] = {}
        self.next_chunk = 0
        self.error: BaseException | None = None
        self.post_seconds = 0.0
        #: largest peak RSS a post-processing worker reported (None: no workers)
        self.worker_rss_mib: float | None = None

    def put(self, tiles: list[Tile], maps: BatchMaps) -> None:
        while True:
            self.raise_if_failed()
            try:
                self.queue.put((tiles, maps), timeout=0.5)
                return
            except queue.Full:
                continue

    def raise_if_failed(self) -> None:
        if self.error is not None:
            raise self.error

    def finish(self) -> None:
        self.queue.put(None)
        self.join()
        self.raise_if_failed()

    def stop(self) -> None:
        """Stop after the tile at hand; returns once the thread writes no more.

        Queued batches are dropped so the stop signal gets through at once: nothing may
        be written into the slide's staging folder after its owner removes it.
        """
        if self.is_alive():
            self.error = self.error or RuntimeError("stopped")
            while True:
                try:
                    self.queue.get_nowait()
                except queue.Empty:
                    break
            self.queue.put(None)
            self.join()

    def run(self) -> None:
        try:
            while True:
                item = self.queue.get()
                if item is None or self.error is not None:
                    break
                tiles, maps = item
                for i, tile in enumerate(tiles):
                    if self.error is not None:
                        break
                    self.store.write(tile, {k: v[i] for k, v in maps.prob.items()},
                                     {k: v[i] for k, v in maps.types.items()})
                    if self.tissue is not None and maps.tissue is not None:
                        self.tissue.add(tile, maps.tissue[i])
                    for chunk in self.tracker.tile_done(tile):
                        self._submit(chunk)
                self._collect(block=False)
            if self.error is None:
                self._collect(block=True)
        except BaseException as exc:  # surfaced in the main thread
            self.error = exc

    def _submit(self, chunk: Chunk) -> None:
        if not self.config.heads_of_kind("instance"):
            # A classifier-only model (cerberus finetune): a class map, no objects.
            self.pending[chunk.index] = WindowResult([], 0.0, 0.0)
            return
        valid = tiles_in(chunk.window, self.tile_size, self.planned)
        args = (str(self.store.path), self.store.tile, chunk, valid, self.config.to_dict(),
                self.post_options, self.scale, self.slide_mpp, self.key, self.extent)
        if self.pool is None:
            self.pending[chunk.index] = process_window(*args)
        else:
            self.pending[chunk.index] = self.pool.submit(process_window, *args)

    def _collect(self, block: bool) -> None:
        # Chunks are written in plan order so row groups follow the slide's raster.
        while self.next_chunk < len(self.tracker.chunks):
            item = self.pending.get(self.next_chunk)
            if item is None:
                if block:
                    raise RuntimeError(f"chunk {self.next_chunk} was never scheduled")
                return
            if isinstance(item, Future):
                if not block and not item.done():
                    return
                item = item.result()
            self.post_seconds += item.seconds
            if self.pool is not None:  # in the main process the figure is the main one
                self.worker_rss_mib = max(self.worker_rss_mib or 0.0, item.peak_rss_mib)
            records = self.in_tissue(item.records)
            self.run_stats.outside_tissue += len(item.records) - len(records)
            self.outputs.write(records)
            self.run_stats.add(records)
            del self.pending[self.next_chunk]
            self.next_chunk += 1


class TissueFilter:
    """Keeps objects whose centroid lies on tissue (the mask grown by ``margin_um``).

    Tiles that touch tissue also cover glass, dust and pen marks beside it; objects
    found there are not tissue objects. Without a mask every object is kept.
    """

    def __init__(self, mask: TissueMask | None, slide_mpp: float, margin_um: float = 8.0) -> None:
        self.grown: np.ndarray | None = None
        if mask is None or bool(mask.mask.all()):
            return
        reach = max(1, int(round(margin_um / mask.mpp)))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * reach + 1, 2 * reach + 1))
        self.grown = cv2.dilate(mask.mask.astype(np.uint8), kernel) > 0
        self.scale = slide_mpp / mask.mpp  # level-0 px -> mask px

    def __call__(self, records: list[ObjectRecord]) -> list[ObjectRecord]:
        if self.grown is None or not records:
            return records
        h, w = self.grown.shape
        xs = np.clip((np.array([r.centroid_x for r in records]) * self.scale).astype(int), 0, w - 1)
        ys = np.clip((np.array([r.centroid_y for r in records]) * self.scale).astype(int), 0, h - 1)
        keep = self.grown[ys, xs]
        return [r for r, k in zip(records, keep) if k]


_STORES: dict[str, MapStore] = {}


class WindowResult(NamedTuple):
    """One post-processed chunk, as a worker reports it."""

    records: list[ObjectRecord]
    #: CPU seconds spent (CPU, not wall: contention must not inflate it)
    seconds: float
    #: peak resident memory of the process that did it, so far (MiB)
    peak_rss_mib: float


def process_window(store_path: str, tile: int, chunk: Chunk, valid_tiles: list[tuple[int, int]],
                   config: dict[str, Any], options: PostprocessOptions, scale: float,
                   slide_mpp: float, key: str, extent: tuple[float, float, float, float] | None = None,
                   ) -> WindowResult:
    """Post-process one chunk window read from the map store (runs in a worker).

    ``extent`` is the slide in level-0 px: objects are clipped to it. Returns the
    records, the CPU seconds spent and the process's own peak RSS: a worker's memory
    is only measurable inside it (``RUSAGE_CHILDREN`` counts only children that ended).
    """
    c0 = time.process_time()
    cfg = ModelConfig.from_dict(config)
    store = _STORES.get(store_path)
    if store is None:
        _STORES.clear()  # one slide at a time: drop the previous slide's handle
        store = _STORES[store_path] = MapStore.open(store_path)
    w = chunk.window
    prob, types = store.read(w)
    valid = np.zeros((w.y1 - w.y0, w.x1 - w.x0), bool)
    for x, y in valid_tiles:
        valid[max(0, y - w.y0):max(0, y + tile - w.y0), max(0, x - w.x0):max(0, x + tile - w.x0)] = True
    maps = ChunkMaps(origin=(w.x0, w.y0), core=(chunk.core.x0, chunk.core.y0, chunk.core.x1, chunk.core.y1),
                     prob=prob, types=types, valid=valid, extent=extent)
    records = process_chunk(maps, cfg, options, scale, slide_mpp, key=key)
    return WindowResult(records, time.process_time() - c0, peak_rss_mib())
