"""Object records as a GeoDataFrame (for Python users who want no files) and back, and
the one table layout every object-file reader returns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields

import geopandas as gpd
import pandas as pd

from cerberus_cli.core.records import ObjectRecord

_COLUMNS = [f.name for f in fields(ObjectRecord)]
#: Columns of what :func:`~cerberus_cli.outputs.read.read_objects` returns, in order
#: (geometry last), whatever the format.
COLUMNS = ["uuid", "task", "class_id", "class_name", "probability", "centroid_x",
           "centroid_y", "area_um2", "perimeter_um", "parent_uuid", "geometry"]
_DTYPES = {"class_id": "int16", "probability": "float32", "centroid_x": "float64",
           "centroid_y": "float64", "area_um2": "float64", "perimeter_um": "float64"}
#: ``(x0, y0, x1, y1)``, level-0 px: keep objects whose centroid lies in [x0, x1) x [y0, y1).
Window = tuple[float, float, float, float]


def records_to_frame(records: Sequence[ObjectRecord]) -> gpd.GeoDataFrame:
    """One row per record, the columns of the GeoParquet output, ``crs=None`` (pixels)."""
    frame = pd.DataFrame([{c: getattr(r, c) for c in _COLUMNS} for r in records], columns=_COLUMNS)
    return gpd.GeoDataFrame(frame, geometry=gpd.GeoSeries(list(frame["geometry"]), crs=None),
                            crs=None)


def frame_to_records(frame: pd.DataFrame) -> list[ObjectRecord]:
    """The records of a table with the columns of :func:`records_to_frame` (e.g. read back)."""
    rows = frame[_COLUMNS].to_dict("records")
    for row in rows:
        if pd.isna(row["parent_uuid"]):
            row["parent_uuid"] = None
    return [ObjectRecord(**row) for row in rows]


def finish_objects(gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """A reader's table in the layout of :data:`COLUMNS`: dtypes set, missing parents None."""
    gdf = gdf[COLUMNS].astype(_DTYPES)
    gdf["parent_uuid"] = gdf["parent_uuid"].astype(object).where(gdf["parent_uuid"].notna(),
                                                                  None)
    return gdf.reset_index(drop=True)


def objects_within(gdf: gpd.GeoDataFrame, within: Window | None) -> gpd.GeoDataFrame:
    """The rows whose centroid lies in ``within`` (all rows for None)."""
    if within is None:
        return gdf
    x0, y0, x1, y1 = within
    keep = gdf.centroid_x.between(x0, x1, inclusive="left") & \
        gdf.centroid_y.between(y0, y1, inclusive="left")
    return gdf[keep.to_numpy()].reset_index(drop=True)
