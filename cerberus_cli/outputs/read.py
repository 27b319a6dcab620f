"""Read object files of any format into one table layout."""

from __future__ import annotations

import os
from pathlib import Path

import geopandas as gpd

from cerberus_cli.core.errors import InputError
from cerberus_cli.outputs.frame import Window
from cerberus_cli.outputs.object_formats import FORMATS, format_of_bytes, format_of_name

#: Bytes read to tell the format of a file by its content.
_HEAD = 64


def read_objects(path: str | os.PathLike, within: Window | None = None) -> gpd.GeoDataFrame:
    """Objects of an object file (GeoParquet, GeoJSON or gzipped GeoJSON) as a GeoDataFrame.

    The format is told by the file's first bytes, else by its suffix
    (:data:`~cerberus_cli.outputs.object_formats.FORMATS`).

    ``within`` (x0, y0, x1, y1, level-0 px) keeps only the objects whose centroid lies
    in ``[x0, x1) x [y0, y1)``; a GeoParquet file is then read by row-group statistics,
    not whole.

    The columns are :data:`~cerberus_cli.outputs.frame.COLUMNS` whatever the format. GeoJSON from other
    tools (e.g. exported by QuPath) may lack some fields: ``class_id`` is then
    looked up from the class name (-1 when unknown; unclassified objects are
    ``no-label``), missing measurements are NaN, the centroid is computed from the
    geometry, and a missing ``task`` is taken as ``nuclei`` for detections and
    ``gland`` for annotations. QuPath child objects (``childObjects``) are read too,
    each linked to its parent by ``parent_uuid``. A QuPath cell is read as its nucleus
    (``nucleusGeometry``).

    Raises:
        InputError: the file is missing, not one of these formats, or malformed.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    with open(path, "rb") as fh:
        head = fh.read(_HEAD)
    fmt = format_of_bytes(head) or format_of_name(path)
    if fmt is None:
        raise InputError(f"{path}: not an object file ({', '.join(f.title for f in FORMATS)})")
    try:
        return fmt.read(path, within)
    except InputError:
        raise
    except Exception as exc:  # any parser failure means a malformed file
        raise InputError(f"{path}: cannot read objects ({type(exc).__name__}: {exc})") from exc
