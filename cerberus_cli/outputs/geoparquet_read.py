"""Reading our GeoParquet object files into the object table, by row-group statistics."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd

from cerberus_cli.core.errors import InputError
from cerberus_cli.outputs.frame import COLUMNS, Window, finish_objects


def read_geoparquet(path: Path, within: Window | None = None) -> gpd.GeoDataFrame:
    """Objects of one of our GeoParquet files in the layout of
    :data:`~cerberus_cli.outputs.frame.COLUMNS`; with ``within``, only the row groups
    whose centroid statistics meet it are read."""
    filters = None
    if within is not None:
        x0, y0, x1, y1 = within
        filters = [("centroid_x", ">=", x0), ("centroid_x", "<", x1),
                   ("centroid_y", ">=", y0), ("centroid_y", "<", y1)]
    try:
        gdf = gpd.read_parquet(path, filters=filters)
    except ValueError as exc:
        raise InputError(f"{path}: not a GeoParquet file ({exc})") from exc
    missing = [c for c in COLUMNS if c not in gdf.columns]
    if missing:
        raise InputError(f"{path}: missing columns {', '.join(missing)}")
    return finish_objects(gdf)
