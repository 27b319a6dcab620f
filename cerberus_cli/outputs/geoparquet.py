"""Streaming GeoParquet 1.1 writer for object records.

Records arrive in batches (one per post-processing chunk, chunks in raster
order). Each batch is sorted along a Hilbert curve of its centroids and appended
to a buffer that is flushed in row groups of ``row_group_size`` rows, so memory
is bounded by one row group plus one batch and row groups cover compact regions
(readers can skip them using the ``bbox`` covering column statistics).

The ``geo`` metadata (overall bbox, geometry types) is only known at the end; it
is written into the Parquet footer at :meth:`GeoParquetWriter.close`. The Arrow
schema is therefore not embedded (``store_schema=False``): pyarrow then takes the
schema metadata from the footer key-value pairs, which is where ``geo`` lives.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import shapely

from cerberus_cli.core.atomic import AtomicPath
from cerberus_cli.core.records import ObjectRecord
from cerberus_cli.outputs.spatial import hilbert_order

GEOPARQUET_VERSION = "1.1.0"

BBOX_TYPE = pa.struct([("xmin", pa.float64()), ("ymin", pa.float64()),
                       ("xmax", pa.float64()), ("ymax", pa.float64())])

#: Column layout of object files (docs/interfaces.md).
SCHEMA = pa.schema([
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


def records_to_table(records: Sequence[ObjectRecord]) -> pa.Table:
    """Arrow table of ``records`` in the object-file schema (input order kept)."""
    geoms = np.empty(len(records), dtype=object)
    geoms[:] = [r.geometry for r in records]
    bounds = shapely.bounds(geoms) if len(records) else np.zeros((0, 4))
    bbox = pa.StructArray.from_arrays(
        [pa.array(bounds[:, i], pa.float64()) for i in range(4)],
        fields=list(BBOX_TYPE))
    cols = {
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


class GeoParquetWriter:
    """Append object records to a GeoParquet file in bounded memory.

    Use as a context manager (an exception aborts: no partial file is left)::

        with GeoParquetWriter("slide.parquet", {"slide": "a.svs"}) as w:
            for batch in batches:
                w.write(batch)

    ``metadata`` is stored as JSON under the ``cerberus`` key of the file
    metadata. The file only appears under ``path`` after :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike, metadata: dict[str, Any] | None = None,
                 row_group_size: int = 50_000, overwrite: bool = False,
                 compression: str = "zstd") -> None:
        if row_group_size < 1:
            raise ValueError(f"row_group_size must be >= 1, got {row_group_size}")
        try:
            self._cerberus_json = json.dumps(metadata or {}, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"metadata is not JSON-serialisable: {exc}") from exc
        self.row_group_size = row_group_size
        self._target = AtomicPath(path, overwrite=overwrite)
        self.path = self._target.path
        self._writer = pq.ParquetWriter(self._target.tmp, SCHEMA, compression=compression,
                                        store_schema=False)
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._bbox = [np.inf, np.inf, -np.inf, -np.inf]
        self._types: set[str] = set()
        self.count = 0

    def write(self, records: Iterable[ObjectRecord]) -> None:
        """Add one batch of records (sorted along a Hilbert curve before buffering)."""
        records = list(records)
        if not records:
            return
        cx = np.fromiter((r.centroid_x for r in records), np.float64, len(records))
        cy = np.fromiter((r.centroid_y for r in records), np.float64, len(records))
        records = [records[i] for i in hilbert_order(cx, cy)]
        table = records_to_table(records)
        bb = table.column("bbox").combine_chunks()
        self._bbox = [min(self._bbox[0], pc.min(bb.field("xmin")).as_py()),
                      min(self._bbox[1], pc.min(bb.field("ymin")).as_py()),
                      max(self._bbox[2], pc.max(bb.field("xmax")).as_py()),
                      max(self._bbox[3], pc.max(bb.field("ymax")).as_py())]
        self._types.update(r.geometry.geom_type for r in records)
        self._pending.append(table)
        self._pending_rows += table.num_rows
        self.count += table.num_rows
        while self._pending_rows >= self.row_group_size:
            self._flush(self.row_group_size)

    def _flush(self, rows: int) -> None:
        table = pa.concat_tables(self._pending)
        head, rest = table.slice(0, rows), table.slice(rows)
        self._writer.write_table(head, row_group_size=rows)
        self._pending = [rest] if rest.num_rows else []
        self._pending_rows = rest.num_rows

    def close(self) -> Path:
        """Flush, write the ``geo``/``cerberus`` metadata and move the file into place."""
        if self._target.done:
            return self.path
        try:
            if self._pending_rows:
                self._flush(self._pending_rows)
            bbox = self._bbox if self.count else None
            self._writer.add_key_value_metadata({
                "geo": json.dumps(geo_metadata(bbox, self._types)),
                "cerberus": self._cerberus_json,
            })
            self._writer.close()
        except BaseException:
            self.abort()
            raise
        return self._target.commit()

    def abort(self) -> None:
        """Discard everything written so far; ``path`` is left untouched."""
        try:
            self._writer.close()
        except Exception:  # the temp file is removed anyway
            pass
        self._target.abort()

    def __enter__(self) -> "GeoParquetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_geoparquet(path: str | os.PathLike, records: Iterable[ObjectRecord],
                     metadata: dict[str, Any] | None = None, overwrite: bool = False,
                     row_group_size: int = 50_000) -> Path:
    """Write ``records`` (one batch, Hilbert-sorted) to a GeoParquet file; return its path."""
    with GeoParquetWriter(path, metadata, row_group_size=row_group_size,
                          overwrite=overwrite) as writer:
        writer.write(records)
    return writer.path
