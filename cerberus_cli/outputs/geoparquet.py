"""Streaming GeoParquet 1.1 writer for object records, with spatial row groups.

Records arrive in batches (one per post-processing chunk, chunks in raster order).
Each batch is appended, as it comes, to an uncompressed Arrow spill file beside the
output; only the centroids stay in memory. At :meth:`GeoParquetWriter.close` all
objects are ordered by task and then along one Hilbert curve over the whole slide,
and the file is written in row groups of at most ``row_group_size`` rows, each
holding one task over a compact region. A reader filtering on the ``bbox``
covering column (geopandas ``bbox=``, DuckDB, pyarrow) or on ``task`` therefore
skips most row groups. The spill is memory-mapped, so memory stays at about one
row group whatever the slide size.

The ``geo`` metadata (overall bbox, geometry types) is only known at the end; it
is written into the Parquet footer at close. The Arrow schema is therefore not
embedded (``store_schema=False``): pyarrow then takes the schema metadata from the
footer key-value pairs, which is where ``geo`` lives.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import shapely

from cerberus_cli.core.atomic import AtomicPath
from cerberus_cli.core.records import ObjectRecord
from cerberus_cli.core.vocabulary import TASKS
from cerberus_cli.outputs.options import WriterOptions
from cerberus_cli.outputs.spatial import hilbert_index

if TYPE_CHECKING:
    from typing import Self

GEOPARQUET_VERSION = "1.1.0"

BBOX_TYPE = pa.struct([("xmin", pa.float64()), ("ymin", pa.float64()),
                       ("xmax", pa.float64()), ("ymax", pa.float64())])

#: Column layout of object files (docs/interfaces.md); ``slide`` tells slides apart
#: when a cohort's files are queried together.
SCHEMA = pa.schema([
    pa.field("slide", pa.string(), nullable=False),
    pa.field("uuid", pa.string(), nullable=False),
    pa.field("task", pa.string(), nullable=False),
    pa.field("class_id", pa.int16(), nullable=False),
    pa.field("class_name", pa.string(), nullable=False),
    pa.field("probability", pa.float32(), nullable=False),
    pa.field("centroid_x", pa.float64(), nullable=False),
    pa.field("centroid_y", pa.float64(), nullable=False),
    pa.field("area_um2", pa.float64(), nullable=False),
    pa.field("perimeter_um", pa.float64(), nullable=False),
    pa.field("parent_uuid", pa.string(), nullable=True),
    pa.field("geometry", pa.binary(), nullable=False),
    pa.field("bbox", BBOX_TYPE, nullable=False),
])


def records_to_table(records: Sequence[ObjectRecord], slide: str = "",
                     options: WriterOptions | None = None) -> pa.Table:
    """Arrow table of ``records`` in the object-file schema (input order kept).

    With ``options.nuclei_geometry == "point"`` nuclei are stored as their centroid.
    """
    geoms = np.empty(len(records), dtype=object)
    geoms[:] = [r.geometry for r in records]
    if options is not None and options.nuclei_geometry == "point" and len(records):
        nuclei = np.array([r.task == "nuclei" for r in records], bool)
        if nuclei.any():
            geoms[nuclei] = shapely.points(
                np.array([(r.centroid_x, r.centroid_y) for r in records])[nuclei])
    bounds = shapely.bounds(geoms) if len(records) else np.zeros((0, 4))
    bbox = pa.StructArray.from_arrays(
        [pa.array(bounds[:, i], pa.float64()) for i in range(4)],
        fields=list(BBOX_TYPE))
    cols = {
        "slide": pa.array([slide] * len(records), pa.string()),
        "uuid": pa.array([r.uuid for r in records], pa.string()),
        "task": pa.array([r.task for r in records], pa.string()),
        "class_id": pa.array([r.class_id for r in records], pa.int16()),
        "class_name": pa.array([r.class_name for r in records], pa.string()),
        "probability": pa.array([r.probability for r in records], pa.float32()),
        "centroid_x": pa.array([r.centroid_x for r in records], pa.float64()),
        "centroid_y": pa.array([r.centroid_y for r in records], pa.float64()),
        "area_um2": pa.array([r.area_um2 for r in records], pa.float64()),
        "perimeter_um": pa.array([r.perimeter_um for r in records], pa.float64()),
        "parent_uuid": pa.array([r.parent_uuid for r in records], pa.string()),
        "geometry": pa.array(list(shapely.to_wkb(geoms)) if len(records) else [],
                             pa.binary()),
        "bbox": bbox,
    }
    return pa.Table.from_pydict(cols, schema=SCHEMA)


def geo_metadata(bbox: Sequence[float] | None, geometry_types: Iterable[str]) -> dict[str, Any]:
    """The GeoParquet 1.1 ``geo`` metadata for an object file.

    ``crs`` is null: coordinates are slide pixels, not a geographic system.
    """
    column: dict[str, Any] = {
        "encoding": "WKB",
        "geometry_types": sorted(set(geometry_types)),
        "crs": None,
        "edges": "planar",
        "covering": {"bbox": {"xmin": ["bbox", "xmin"], "ymin": ["bbox", "ymin"],
                              "xmax": ["bbox", "xmax"], "ymax": ["bbox", "ymax"]}},
    }
    if bbox is not None:
        column["bbox"] = [float(v) for v in bbox]
    return {"version": GEOPARQUET_VERSION, "primary_column": "geometry",
            "columns": {"geometry": column}}


def slide_name(path: str | os.PathLike) -> str:
    """The slide name of an object file: its name without a temporary-name tail and
    ``.parquet`` / ``.tissue`` / ``.truth`` (``S.tissue.parquet`` -> ``S``)."""
    name = re.sub(r"\.[0-9a-f]{8}\.partial$", "", Path(path).name)
    for suffix in (".parquet", ".geoparquet", ".tissue", ".truth"):
        name = name.removesuffix(suffix)
    return name


class GeoParquetWriter:
    """Append object records to a GeoParquet file in bounded memory.

    Use as a context manager (an exception aborts: no partial file is left)::

        with GeoParquetWriter("slide.parquet", {"slide": "a.svs"}) as w:
            for batch in batches:
                w.write(batch)

    ``metadata`` is stored as JSON under the ``cerberus`` key of the file
    metadata; ``slide`` fills the ``slide`` column (default: the file name without
    its suffixes). ``row_group_size`` overrides ``options.row_group_size``. The file
    only appears under ``path`` after :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike, metadata: dict[str, Any] | None = None,
                 row_group_size: int | None = None, overwrite: bool = False,
                 compression: str = "zstd", options: WriterOptions | None = None,
                 slide: str | None = None) -> None:
        self.options = options or WriterOptions()
        row_group_size = self.options.row_group_size if row_group_size is None else row_group_size
        if row_group_size < 1:
            raise ValueError(f"row_group_size must be >= 1, got {row_group_size}")
        try:
            self._cerberus_json = json.dumps(metadata or {}, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"metadata is not JSON-serialisable: {exc}") from exc
        self.row_group_size = row_group_size
        self.compression = compression
        self._target = AtomicPath(path, overwrite=overwrite)
        self.path = self._target.path
        self.slide = slide_name(self.path) if slide is None else str(slide)
        # The spill shares the temporary name's random part and ends in .partial too.
        self._spill_path = self._target.tmp.with_name(
            self._target.tmp.name.removesuffix(".partial") + ".spill.partial")
        self._spill: pa.ipc.RecordBatchFileWriter | None = None
        self._sink: Any = None
        self._cx: list[np.ndarray] = []
        self._cy: list[np.ndarray] = []
        self._task: list[np.ndarray] = []
        self._bbox = [np.inf, np.inf, -np.inf, -np.inf]
        self._types: set[str] = set()
        self.count = 0

    def write(self, records: Iterable[ObjectRecord]) -> None:
        """Add one batch of records to the spill (ordered in space at :meth:`close`)."""
        records = list(records)
        if not records:
            return
        table = records_to_table(records, self.slide, self.options)
        bb = table.column("bbox").combine_chunks()
        self._bbox = [min(self._bbox[0], pc.min(bb.field("xmin")).as_py()),
                      min(self._bbox[1], pc.min(bb.field("ymin")).as_py()),
                      max(self._bbox[2], pc.max(bb.field("xmax")).as_py()),
                      max(self._bbox[3], pc.max(bb.field("ymax")).as_py())]
        points = self.options.nuclei_geometry == "point"
        self._types.update(r.geometry.geom_type for r in records
                           if not (points and r.task == "nuclei"))
        if points and any(r.task == "nuclei" for r in records):
            self._types.add("Point")
        self._cx.append(table.column("centroid_x").to_numpy())
        self._cy.append(table.column("centroid_y").to_numpy())
        self._task.append(np.array([_task_code(r.task) for r in records], np.int8))
        if self._spill is None:
            self._sink = pa.OSFile(str(self._spill_path), "wb")
            self._spill = pa.ipc.new_file(self._sink, SCHEMA)
        for batch in table.to_batches():
            self._spill.write_batch(batch)
        self.count += table.num_rows

    def _row_groups(self) -> list[np.ndarray]:
        """Spill row indices of each row group: by task, then along the Hilbert curve."""
        cx, cy = np.concatenate(self._cx), np.concatenate(self._cy)
        task = np.concatenate(self._task)
        order = np.lexsort((hilbert_key(cx, cy), task))
        groups = []
        bounds = np.flatnonzero(np.diff(task[order])) + 1
        for run in np.split(order, bounds):
            # Equal parts: no small remainder group at the end of a task.
            parts = -(-len(run) // self.row_group_size)
            groups.extend(np.array_split(run, parts))
        return groups

    def _write_sorted(self, writer: pq.ParquetWriter) -> None:
        assert self._spill is not None and self._sink is not None
        self._spill.close()
        self._sink.close()
        self._spill = None
        with pa.memory_map(str(self._spill_path), "r") as source:
            spill = pa.ipc.open_file(source)
            starts = np.cumsum([0] + [spill.get_batch(i).num_rows
                                      for i in range(spill.num_record_batches)])
            for rows in self._row_groups():
                batch_of = np.searchsorted(starts, rows, side="right") - 1
                parts, positions = [], []
                # Each row group takes from the few spilled batches (chunks) it overlaps.
                for b in np.unique(batch_of):
                    sel = batch_of == b
                    parts.append(pa.Table.from_batches(
                        [spill.get_batch(int(b)).take(pa.array(rows[sel] - starts[b]))]))
                    positions.append(np.flatnonzero(sel))
                table = pa.concat_tables(parts)
                back = np.argsort(np.concatenate(positions), kind="stable")
                writer.write_table(table.take(pa.array(back)), row_group_size=len(rows))

    def close(self) -> Path:
        """Order the objects in space, write the row groups and metadata, move into place."""
        if self._target.done:
            return self.path
        try:
            writer = pq.ParquetWriter(self._target.tmp, SCHEMA, compression=self.compression,
                                      store_schema=False)
            try:
                if self.count:
                    self._write_sorted(writer)
                else:
                    writer.write_table(SCHEMA.empty_table())
                bbox = self._bbox if self.count else None
                writer.add_key_value_metadata({
                    "geo": json.dumps(geo_metadata(bbox, self._types)),
                    "cerberus": self._cerberus_json,
                })
            finally:
                writer.close()
            self._spill_path.unlink(missing_ok=True)
        except BaseException:
            self.abort()
            raise
        return self._target.commit()

    def abort(self) -> None:
        """Discard everything written so far; ``path`` is left untouched."""
        for closing in (self._spill, self._sink):
            # A failing close does not matter: the spill is removed anyway.
            with contextlib.suppress(OSError, pa.ArrowException, ValueError):
                if closing is not None:
                    closing.close()
        self._spill = None
        self._spill_path.unlink(missing_ok=True)
        self._target.abort()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _task_code(task: str) -> int:
    """Sort rank of a task: the order of :data:`TASKS`, unknown tasks last."""
    return TASKS.index(task) if task in TASKS else len(TASKS)


def hilbert_key(cx: np.ndarray, cy: np.ndarray, order: int = 16) -> np.ndarray:
    """Hilbert index of each centroid on one ``2**order`` grid over their bounding box."""
    cx = np.asarray(cx, np.float64)
    cy = np.asarray(cy, np.float64)
    if not cx.size:
        return np.zeros(0, np.uint64)
    x0, y0 = cx.min(), cy.min()
    span = max(cx.max() - x0, cy.max() - y0, 1e-9)
    top = (1 << order) - 1
    qx = np.clip(((cx - x0) / span * top).round(), 0, top)
    qy = np.clip(((cy - y0) / span * top).round(), 0, top)
    return hilbert_index(qx, qy, order)


def write_geoparquet(path: str | os.PathLike, records: Iterable[ObjectRecord],
                     metadata: dict[str, Any] | None = None, overwrite: bool = False,
                     row_group_size: int | None = None, options: WriterOptions | None = None,
                     slide: str | None = None) -> Path:
    """Write ``records`` to a GeoParquet file (spatial row groups); return its path."""
    with GeoParquetWriter(path, metadata, row_group_size=row_group_size, overwrite=overwrite,
                          options=options, slide=slide) as writer:
        writer.write(records)
    return writer.path


def open_geoparquet_writer(path: str | os.PathLike, options: WriterOptions | None = None,
                           metadata: dict[str, Any] | None = None, slide: str | None = None,
                           overwrite: bool = False) -> GeoParquetWriter:
    """The GeoParquet writer of the object format table (metadata and slide column kept)."""
    return GeoParquetWriter(path, metadata, overwrite=overwrite, options=options, slide=slide)
