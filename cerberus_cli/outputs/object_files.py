"""One entry point for writing object files, whichever the format: chosen by the file name.

``S.parquet`` is GeoParquet; ``S.geojson`` and ``S.geojson.gz`` are QuPath GeoJSON
(gzipped for ``.gz``): :data:`~cerberus_cli.outputs.object_formats.FORMATS` says which.
The same :class:`~cerberus_cli.outputs.options.WriterOptions` apply to every format, so a
caller (e.g. the segment pipeline) writes objects and tissue regions the same way in any.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cerberus_cli.core.records import ObjectRecord
from cerberus_cli.outputs.object_formats import OBJECT_SUFFIXES, ObjectWriter, format_of_name
from cerberus_cli.outputs.options import WriterOptions


def open_object_writer(path: str | os.PathLike, options: WriterOptions | None = None,
                       metadata: dict[str, Any] | None = None, slide: str | None = None,
                       overwrite: bool = False) -> ObjectWriter:
    """A streaming writer for ``path``, in the format its suffix names.

    ``metadata`` (file metadata) and ``slide`` (the ``slide`` column) apply to
    GeoParquet; GeoJSON carries neither, QuPath having no place for them, but takes
    the slide's um/px from ``metadata["slide"]["mpp"]`` (QuPath cells are grown in um).
    """
    fmt = format_of_name(path)
    if fmt is None:
        raise ValueError(f"{path}: object files end in {' or '.join(OBJECT_SUFFIXES)}")
    return fmt.open_writer(path, options, metadata, slide, overwrite)


def write_objects(path: str | os.PathLike, records: Iterable[ObjectRecord],
                  options: WriterOptions | None = None, metadata: dict[str, Any] | None = None,
                  slide: str | None = None, overwrite: bool = False) -> Path:
    """Write ``records`` to ``path`` in the format its suffix names; return the path."""
    writer = open_object_writer(path, options, metadata, slide, overwrite)
    with writer:
        writer.write(records)
    return writer.path
