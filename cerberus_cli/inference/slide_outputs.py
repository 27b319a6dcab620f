"""The files one slide's segmentation writes, and when they count as complete.

Every file is written under a temporary name and renamed when it is whole; the run
record ``S.run.json`` is written last, so its presence (with every file it lists)
is what marks a slide as done.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from cerberus_cli.core.atomic import AtomicPath
from cerberus_cli.core.records import ObjectRecord
from cerberus_cli.inference.mapstore import MapStore, TissueMap
from cerberus_cli.inference.options import SegmentOptions
from cerberus_cli.inference.run_record import build_record, head_md5
from cerberus_cli.inference.sinks import SlideContext, SlideResult, SlideStats
from cerberus_cli.outputs.objects import ObjectWriter, object_suffix, open_object_writer, write_objects

if TYPE_CHECKING:
    from cerberus_cli.inference.inputs import SlideInput
    from cerberus_cli.inference.pipeline import Segmenter
    from cerberus_cli.outputs.overlay import OverlayCanvas
    from cerberus_cli.slides import Slide

log = logging.getLogger(__name__)

#: Resolution of the overlay thumbnail, um/px.
OVERLAY_MPP = 4.0


class SlideOutputs:
    """The files of one slide in ``folder``: an :class:`~cerberus_cli.inference.sinks.ObjectSink`."""

    def __init__(self, folder: Path, stem: str, options: SegmentOptions) -> None:
        self.folder = Path(folder)
        self.stem = stem
        self.options = options
        suffix = object_suffix(options.format, options.gzip)
        self.objects_path = self.folder / f"{stem}{suffix}"
        self.record_path = self.folder / f"{stem}.run.json"
        self.tissue_zarr = self.folder / f"{stem}.tissue.zarr"
        self.tissue_png = self.folder / f"{stem}.tissue.png"
        self.overlay_path = self.folder / f"{stem}.overlay.png"
        self.maps_path = self.folder / f"{stem}.maps.zarr"
        self.tissue_objects = self.folder / f"{stem}.tissue{suffix}"
        self._writer: ObjectWriter | None = None
        self._overlay: OverlayCanvas | None = None
        self._written: dict[str, str] = {}
        self._context: SlideContext | None = None

    # --- completeness ------------------------------------------------------------------
    def complete(self) -> bool:
        """True when the run record exists and every file it lists is present."""
        if not self.record_path.is_file():
            return False
        try:
            record = json.loads(self.record_path.read_text())
        except (OSError, ValueError):
            return False
        files = record.get("outputs", {})
        return bool(files) and all((self.folder / name).exists() for name in files.values())

    # --- writing -------------------------------------------------------------------------
    def open(self, context: SlideContext, slide: Slide | None = None) -> None:
        """Start the streaming writers; ``slide`` (when given) supplies the overlay thumbnail."""
        self._context = context
        # Stale outputs without a complete run record are ours to replace.
        self._writer = open_object_writer(self.objects_path, self.options.writer, context.metadata(),
                                          slide=self.stem, overwrite=True)
        if self.options.overlay and slide is not None:
            from cerberus_cli.outputs.overlay import OverlayCanvas
            from cerberus_cli.slides import thumbnail

            thumb_mpp = max(OVERLAY_MPP, slide.mpp)
            self._overlay = OverlayCanvas(thumbnail(slide, thumb_mpp), slide.mpp / thumb_mpp)

    def write(self, records: list[ObjectRecord]) -> None:
        """Stream one chunk's objects into the object file and the overlay."""
        assert self._writer is not None, "write() before open()"
        self._writer.write(records)
        if self._overlay is not None:
            self._overlay.draw(records)

    def finish(self, result: SlideResult) -> None:
        """Commit the object file and write the tissue map, overlay and maps."""
        assert self._writer is not None, "finish() before open()"
        self._written["objects"] = self._writer.close().name
        self._writer = None
        if result.tissue is not None:
            self._finish_tissue(result.tissue)
        if self._overlay is not None:
            target = AtomicPath(self.overlay_path, overwrite=True)
            self._overlay.save(target.tmp)
            self._written["overlay"] = target.commit().name
        if result.maps is not None:
            self._written["maps"] = self._save_maps(result.maps, result.stats.grid).name

    def _finish_tissue(self, tissue: TissueMap) -> None:
        from cerberus_cli.outputs.tissue_map import write_tissue_map

        assert self._context is not None
        zarr_path, png_path = write_tissue_map(self.tissue_zarr, self.tissue_png, tissue.classes,
                                               tissue.mpp, overwrite=True)
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
                     seconds: float) -> dict[str, str]:
        """Write ``S.run.json`` last; returns the output names it lists."""
        loaded = segmenter.loaded
        record = build_record(
            input={"path": str(item.path), "size_bytes": os.path.getsize(item.path),
                   "md5_first_mib": head_md5(item.path), "id": item.id,
                   "backend": slide.backend, "width": slide.dimensions[0],
                   "height": slide.dimensions[1], "mpp": slide.mpp},
            model={"name": loaded.config.name, "source": loaded.source, "sha256": loaded.sha256,
                   "encoder": loaded.config.encoder, "mpp": loaded.config.mpp},
            options=segmenter.options.to_dict(),
            device={"device": str(segmenter.device), "precision": str(segmenter.dtype or "fp32")},
            tiles=run.tiles, grid=list(run.grid), tissue_fraction=run.tissue_fraction,
            counts=run.counts, objects=run.objects,
            timings={**{k: round(v, 3) for k, v in run.timings.items()}, "slide_s": round(seconds, 3)},
            outputs=dict(self._written),
        )
        target = AtomicPath(self.record_path, overwrite=True)
        target.tmp.write_text(json.dumps(record, indent=2))
        target.commit()
        return {**self._written, "record": self.record_path.name}

    def abort(self) -> None:
        """Drop everything not yet committed."""
        if self._writer is not None:
            self._writer.abort()
            self._writer = None
