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
from typing import Any

from cerberus_cli.core.atomic import AtomicPath
from cerberus_cli.core.records import ObjectRecord
from cerberus_cli.inference.options import SegmentOptions
from cerberus_cli.inference.run_record import build_record, head_md5

log = logging.getLogger(__name__)

#: Resolution of the overlay thumbnail, um/px.
OVERLAY_MPP = 4.0


class SlideOutputs:
    """Paths and writers of one slide's outputs in ``folder``."""

    def __init__(self, folder: Path, stem: str, options: SegmentOptions) -> None:
        self.folder = Path(folder)
        self.stem = stem
        self.options = options
        if options.format == "parquet":
            self.objects_path = self.folder / f"{stem}.parquet"
        else:
            self.objects_path = self.folder / f"{stem}.geojson{'.gz' if options.gzip else ''}"
        self.record_path = self.folder / f"{stem}.run.json"
        self.tissue_zarr = self.folder / f"{stem}.tissue.zarr"
        self.tissue_png = self.folder / f"{stem}.tissue.png"
        self.overlay_path = self.folder / f"{stem}.overlay.png"
        self.maps_path = self.folder / f"{stem}.maps.zarr"
        self.tissue_objects = self.folder / f"{stem}.tissue.parquet"
        self._writer: Any = None
        self._overlay: Any = None
        self._pending: list[AtomicPath] = []
        self._written: dict[str, str] = {}
        self._tissue_records: list[ObjectRecord] = []

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
    def open(self, slide: Any, loaded: Any, options: SegmentOptions, scale: float) -> None:
        """Start the streaming writers for a slide about to be segmented."""
        from cerberus_cli.slides import thumbnail

        meta = {
            "slide": {"path": str(slide.path), "width": slide.dimensions[0],
                      "height": slide.dimensions[1], "mpp": slide.mpp},
            "model": {"name": loaded.config.name, "sha256": loaded.sha256,
                      "mpp": loaded.config.mpp},
            "coordinates": "level-0 pixels",
        }
        overwrite = True  # stale outputs without a complete run record are ours to replace
        if options.format == "parquet":
            from cerberus_cli.outputs.geoparquet import GeoParquetWriter

            self._writer = GeoParquetWriter(self.objects_path, meta, overwrite=overwrite)
        else:
            from cerberus_cli.outputs.geojson import QuPathGeoJSONWriter

            self._writer = QuPathGeoJSONWriter(self.objects_path, gzip=options.gzip,
                                               overwrite=overwrite)
        if options.overlay:
            from cerberus_cli.outputs.overlay import OverlayCanvas

            thumb_mpp = max(OVERLAY_MPP, slide.mpp)
            self._overlay = OverlayCanvas(thumbnail(slide, thumb_mpp), slide.mpp / thumb_mpp)
        self._slide_mpp = slide.mpp

    def write(self, records: list[ObjectRecord]) -> None:
        """Stream one chunk's objects into the object file and the overlay."""
        self._writer.write(records)
        if self._overlay is not None:
            self._overlay.draw(records)

    def finish(self, tissue: Any, store: Any, run: Any) -> None:
        """Commit the object file and write the tissue map, overlay and maps."""
        self._written["objects"] = self._writer.close().name
        self._writer = None
        if tissue is not None:
            self._finish_tissue(tissue)
        if self._overlay is not None:
            target = AtomicPath(self.overlay_path, overwrite=True)
            self._overlay.save(target.tmp)
            self._written["overlay"] = target.commit().name
        if store is not None:
            self._written["maps"] = self._save_maps(store).name

    def _finish_tissue(self, tissue: Any) -> None:
        from cerberus_cli.outputs.tissue_map import tissue_regions, write_tissue_map

        mpp = tissue.mpp
        zarr_path, png_path = write_tissue_map(self.tissue_zarr, self.tissue_png, tissue.classes,
                                               mpp, overwrite=True)
        self._written["tissue_map"] = zarr_path.name
        self._written["tissue_png"] = png_path.name
        if self.options.tissue_polygons:
            from cerberus_cli.outputs.geoparquet import write_geoparquet

            records = tissue_regions(tissue.classes, mpp / self._slide_mpp, self._slide_mpp)
            self._written["tissue_polygons"] = write_geoparquet(
                self.tissue_objects, records, {"task": "tissue"}, overwrite=True).name

    def _save_maps(self, store: Any) -> Path:
        from cerberus_cli.inference.multiscale import write_multiscale

        target = AtomicPath(self.maps_path, overwrite=True)
        write_multiscale(store, target.tmp)
        return target.commit()

    def write_record(self, item: Any, slide: Any, segmenter: Any, run: Any, seconds: float) -> dict[str, str]:
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
