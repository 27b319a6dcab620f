"""The files one slide's segmentation writes: the file sink of the segment pipeline.

:class:`SlideOutputs` is an :class:`~cerberus_cli.inference.sinks.ObjectSink`. Every
file is built in the slide's staging folder under its final name (each one written
aside and renamed when whole), then the commit record ``S.run.json`` (with the size
and sha256 of every file) last, and the set is swapped into the output folder by the
slide's :class:`~.commit.SlideCommit`. Until that record is in place and valid the
slide's outputs do not count (:func:`~.commit.read_commit`).
"""

from __future__ import annotations

import logging
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cerberus_cli.cohort.commit import SlideCommit
from cerberus_cli.cohort.run_record import build_record
from cerberus_cli.core.atomic import AtomicPath
from cerberus_cli.core.hashing import file_digest
from cerberus_cli.core.processes import host
from cerberus_cli.core.records import ObjectRecord
from cerberus_cli.inference.mapstore import MapStore, TissueMap
from cerberus_cli.inference.options import SegmentOptions
from cerberus_cli.inference.sinks import SlideContext, SlideResult, SlideStats
from cerberus_cli.outputs.object_files import open_object_writer, write_objects
from cerberus_cli.outputs.object_formats import ObjectWriter, object_suffix

if TYPE_CHECKING:
    from cerberus_cli.cohort.inputs import SlideInput
    from cerberus_cli.inference.pipeline import Segmenter
    from cerberus_cli.outputs.overlay import OverlayCanvas
    from cerberus_cli.slides import Slide, TissueMask

log = logging.getLogger(__name__)

class SlideOutputs:
    """The files of one slide: an :class:`~cerberus_cli.inference.sinks.ObjectSink`.

    ``final`` is the output folder, ``folder`` where files are written now (the staging
    folder between :meth:`begin` and :meth:`commit` / :meth:`abort`), ``slide_commit``
    the slide's commit protocol (:class:`~.commit.SlideCommit`).
    """

    def __init__(self, folder: Path, stem: str, options: SegmentOptions) -> None:
        self.final = Path(folder)
        self.folder = self.final
        self.slide_commit = SlideCommit(self.final, stem)
        self.stem = stem
        self.options = options
        self._suffix = object_suffix(options.format, options.gzip)
        self._writer: ObjectWriter | None = None
        self._overlay: OverlayCanvas | None = None
        self._slide: Slide | None = None
        self._density: np.ndarray | None = None   # nuclei per crop-sized cell
        self._cell = 1.0                           # level-0 px per density cell
        self._written: dict[str, str] = {}
        self._context: SlideContext | None = None

    def _path(self, tail: str) -> Path:
        return self.folder / f"{self.stem}{tail}"

    @property
    def objects_path(self) -> Path:
        return self._path(self._suffix)

    @property
    def record_path(self) -> Path:
        return self._path(".run.json")

    @property
    def tissue_zarr(self) -> Path:
        return self._path(".tissue.zarr")

    @property
    def tissue_png(self) -> Path:
        return self._path(".tissue.png")

    @property
    def overlay_path(self) -> Path:
        return self._path(".overlay.png")

    @property
    def maps_path(self) -> Path:
        return self._path(".maps.zarr")

    @property
    def tissue_objects(self) -> Path:
        return self._path(f".tissue{self._suffix}")

    # --- completeness ------------------------------------------------------------------
    def committed(self) -> dict[str, Any] | None:
        """The slide's valid commit record in the output folder, or None."""
        return self.slide_commit.committed()

    def complete(self) -> bool:
        """True when a valid commit record lists whole files."""
        return self.committed() is not None

    def begin(self) -> Path:
        """Create this process's staging folder; every file is written there."""
        self.folder = self.slide_commit.begin()
        self._written = {}
        return self.folder

    # --- writing -------------------------------------------------------------------------
    def open(self, context: SlideContext, slide: Slide | None = None) -> None:
        """Start the streaming writers; ``slide`` (when given) supplies the overlay thumbnail."""
        self._context = context
        # Stale outputs without a complete run record are ours to replace.
        self._writer = open_object_writer(self.objects_path, self.options.writer, context.metadata(),
                                          slide=self.stem, overwrite=True)
        if self.options.overlay and slide is not None:
            from cerberus_cli.outputs.overlay import OverlayCanvas, overlay_mpp
            from cerberus_cli.slides import thumbnail

            thumb_mpp = overlay_mpp(slide.dimensions, slide.mpp)
            self._overlay = OverlayCanvas(thumbnail(slide, thumb_mpp), slide.mpp / thumb_mpp)
            self._overlay.set_resolution(thumb_mpp)
            self._overlay.draw_tiles(context.tiles)
        if self.options.overlay and self.options.overlay_crops and slide is not None:
            from cerberus_cli.outputs.overlay import CROP_UM

            self._slide = slide
            self._cell = CROP_UM / slide.mpp
            w, h = slide.dimensions
            self._density = np.zeros((math.ceil(h / self._cell), math.ceil(w / self._cell)))

    def write(self, records: list[ObjectRecord]) -> None:
        """Stream one chunk's objects into the object file and the overlay."""
        assert self._writer is not None, "write() before open()"
        self._writer.write(records)
        if self._overlay is not None:
            self._overlay.draw(records)
        if self._density is not None:
            xy = np.array([(r.centroid_x, r.centroid_y) for r in records if r.task == "nuclei"])
            if len(xy):
                cells = np.clip((xy // self._cell).astype(int), 0,
                                (self._density.shape[1] - 1, self._density.shape[0] - 1))
                np.add.at(self._density, (cells[:, 1], cells[:, 0]), 1)

    def finish(self, result: SlideResult) -> None:
        """Commit the object file and write the tissue map, overlay and maps."""
        assert self._writer is not None, "finish() before open()"
        self._written["objects"] = self._writer.close().name
        self._writer = None
        if result.tissue is not None:
            self._finish_tissue(result.tissue)
        if result.mask is not None:
            self._save_mask(result.mask)
        if self._overlay is not None:
            if result.mask is not None and self._context is not None:
                self._overlay.draw_mask(result.mask.mask, result.mask.mpp / self._context.mpp)
            target = AtomicPath(self.overlay_path, overwrite=True)
            self._overlay.save(target.tmp)
            self._written["overlay"] = target.commit().name
            self._save_crops()
        if result.maps is not None:
            self._written["maps"] = self._save_maps(result.maps, result.stats.grid).name

    def _save_crops(self) -> None:
        """Full-resolution crops of the densest regions, with every object drawn."""
        if self._density is None or self._slide is None:
            return
        from cerberus_cli.outputs.frame import frame_to_records
        from cerberus_cli.outputs.overlay import OverlayCanvas, densest_cells
        from cerberus_cli.outputs.read import read_objects
        from cerberus_cli.slides import read_scaled

        slide, cell = self._slide, self._cell
        width, height = slide.dimensions
        for k, (row, col) in enumerate(densest_cells(self._density, self.options.overlay_crops), 1):
            x0, y0 = round(col * cell), round(row * cell)
            x1, y1 = min(round((col + 1) * cell), width), min(round((row + 1) * cell), height)
            canvas = OverlayCanvas(read_scaled(slide, x0, y0, x1 - x0, y1 - y0, slide.mpp), 1.0,
                                   origin=(x0, y0))
            canvas.set_resolution(slide.mpp)
            # Objects whose centroid lies within a cell of the crop, so cut outlines show too.
            objects = read_objects(self.objects_path, within=(x0 - cell, y0 - cell, x1 + cell, y1 + cell))
            canvas.draw(frame_to_records(objects))
            target = AtomicPath(self._path(f".crop-{k}.overlay.png"), overwrite=True)
            canvas.save(target.tmp)
            self._written[f"overlay_crop_{k}"] = target.commit().name

    def _save_mask(self, mask: TissueMask) -> None:
        from cerberus_cli.outputs.tissue_mask import mask_paths, save_mask

        assert self._context is not None
        paths = mask_paths(self.folder, self.stem, self.options.format)
        written = save_mask(mask, self._context.mpp, paths["png"], paths["polygons"],
                            key=self.stem, overwrite=True)
        for kind, path in written.items():
            self._written[f"tissue_mask_{kind}"] = Path(path).name

    def _finish_tissue(self, tissue: TissueMap) -> None:
        from cerberus_cli.outputs.tissue_map import write_tissue_map

        assert self._context is not None
        zarr_path, png_path = write_tissue_map(self.tissue_zarr, self.tissue_png, tissue.classes,
                                               tissue.mpp, specs=tissue.specs, overwrite=True)
        self._written["tissue_map"] = zarr_path.name
        self._written["tissue_png"] = png_path.name
        if self.options.tissue_polygons:
            from cerberus_cli.postprocess.tissue_regions import tissue_regions

            slide_mpp = self._context.mpp
            records = tissue_regions(tissue.classes, tissue.mpp / slide_mpp, slide_mpp,
                                     confidence=tissue.confidence, key=self.stem)
            self._written["tissue_polygons"] = write_objects(
                self.tissue_objects, records, self.options.writer,
                {**self._context.metadata(), "task": "tissue"}, slide=self.stem,
                overwrite=True).name

    def _save_maps(self, store: MapStore, grid: tuple[int, int]) -> Path:
        from cerberus_cli.inference.multiscale import write_multiscale

        target = AtomicPath(self.maps_path, overwrite=True)
        classes = self._context.type_classes if self._context is not None else {}
        write_multiscale(store, target.tmp, valid_size=grid, type_classes=classes)
        return target.commit()

    def write_record(self, item: SlideInput, slide: Slide, segmenter: Segmenter, run: SlideStats,
                     seconds: float, provenance: dict[str, Any], started: str) -> dict[str, str]:
        """Write the commit record ``S.run.json`` last (in staging); returns the outputs."""
        loaded = segmenter.loaded
        files = {name: file_digest(self.folder / name) for name in self._written.values()}
        status = "done with damage" if run.damage else "done"
        record = build_record(
            postprocess_worker_rss_mib=run.postprocess_worker_rss_mib,
            status=status,
            run={"argv": sys.argv, "cwd": os.getcwd(), "host": host(), "pid": os.getpid(),
                 "started": started},
            provenance=provenance,
            files=files,
            input={"path": str(item.path), "id": item.id, "backend": slide.backend,
                   "width": slide.dimensions[0], "height": slide.dimensions[1], "mpp": slide.mpp},
            model={"name": loaded.config.name, "source": loaded.source, "sha256": loaded.sha256,
                   "encoder": loaded.config.encoder, "mpp": loaded.config.mpp},
            options=segmenter.options.to_dict(),
            device={"device": str(segmenter.device), "precision": str(segmenter.dtype or "fp32")},
            tiles=run.tiles, grid=list(run.grid), tissue_fraction=run.tissue_fraction,
            counts=run.counts, objects=run.objects, outside_tissue=run.outside_tissue,
            damage={"tiles": len(run.damage), "unreadable": sum(d["unreadable"] for d in run.damage),
                    "implausible": sum(d["implausible"] for d in run.damage),
                    "positions": run.damage},
            timings={**{k: round(v, 3) for k, v in run.timings.items()}, "slide_s": round(seconds, 3)},
            outputs=dict(self._written),
        )
        path = self.slide_commit.write_record(record)
        return {**self._written, "record": path.name}

    def commit(self) -> None:
        """Swap the staged set into the output folder (the record goes last)."""
        self.slide_commit.commit()
        self.folder = self.final

    def abort(self) -> None:
        """Drop everything not yet committed, the staging folder included."""
        if self._writer is not None:
            self._writer.abort()
            self._writer = None
        self.slide_commit.abort()
        self.folder = self.final
