"""Object records as a GeoDataFrame (for Python users who want no files) and back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields

import geopandas as gpd
import pandas as pd

from cerberus_cli.core.records import ObjectRecord

_COLUMNS = [f.name for f in fields(ObjectRecord)]


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
