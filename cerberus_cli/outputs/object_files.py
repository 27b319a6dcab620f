"""One entry point for object files, whichever the format: chosen by the file name.

``S.parquet`` is GeoParquet; ``S.geojson`` and ``S.geojson.gz`` are QuPath GeoJSON
(gzipped for ``.gz``). The same :class:`~cerberus_cli.outputs.options.WriterOptions`
apply to both, so a caller (e.g. the segment pipeline) writes objects and tissue
regions the same way in either format.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cerberus_cli.core.records import ObjectRecord
from cerberus_cli.outputs.geojson import QuPathGeoJSONWriter
from cerberus_cli.outputs.geoparquet import GeoParquetWriter
from cerberus_cli.outputs.options import WriterOptions

#: Object file suffixes by format.
PARQUET_SUFFIX = ".parquet"
GEOJSON_SUFFIXES = (".geojson", ".geojson.gz")

ObjectWriter = GeoParquetWriter | QuPathGeoJSONWriter


def object_suffix(fmt: str, gzip: bool = False) -> str:
    """File suffix of an object file of format ``parquet`` or ``geojson``."""
    if fmt == "parquet":
        if gzip:
            raise ValueError("gzip applies to GeoJSON only; GeoParquet is compressed already")
        return PARQUET_SUFFIX
    if fmt == "geojson":
        return GEOJSON_SUFFIXES[1] if gzip else GEOJSON_SUFFIXES[0]
    raise ValueError(f"unknown object format {fmt!r}; expected parquet or geojson")


def open_object_writer(path: str | os.PathLike, options: WriterOptions | None = None,
                       metadata: dict[str, Any] | None = None, slide: str | None = None,
                       overwrite: bool = False) -> ObjectWriter:
    """A streaming writer for ``path``, GeoParquet or QuPath GeoJSON by its suffix.

    ``metadata`` (file metadata) and ``slide`` (the ``slide`` column) apply to
    GeoParquet; GeoJSON carries neither, QuPath having no place for them, but takes
    the slide's um/px from ``metadata["slide"]["mpp"]`` (QuPath cells are grown in um).
    """
    name = Path(path).name
    if name.endswith(PARQUET_SUFFIX):
        return GeoParquetWriter(path, metadata, overwrite=overwrite, options=options,
                                slide=slide)
    if name.endswith(GEOJSON_SUFFIXES):
        mpp = ((metadata or {}).get("slide") or {}).get("mpp")
        return QuPathGeoJSONWriter(path, gzip=name.endswith(".gz"), overwrite=overwrite,
                                   options=options, mpp=mpp)
    raise ValueError(f"{path}: object files end in {PARQUET_SUFFIX} or "
                     f"{' or '.join(GEOJSON_SUFFIXES)}")


def write_objects(path: str | os.PathLike, records: Iterable[ObjectRecord],
                  options: WriterOptions | None = None, metadata: dict[str, Any] | None = None,
                  slide: str | None = None, overwrite: bool = False) -> Path:
    """Write ``records`` to ``path`` in the format its suffix names; return the path."""
    writer = open_object_writer(path, options, metadata, slide, overwrite)
    with writer:
        writer.write(records)
    return writer.path
