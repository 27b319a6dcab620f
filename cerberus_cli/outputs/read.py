"""Read object files (our GeoParquet or (QuPath) GeoJSON) into one table layout."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from shapely.geometry import shape

from cerberus_cli.core.errors import InputError
from cerberus_cli.core.vocabulary import class_id_for
from cerberus_cli.outputs.geojson import (
    AREA_NAME,
    METADATA_KEYS,
    PERIMETER_NAME,
    PROBABILITY_NAME,
    UNTYPED,
)

#: Columns of :func:`read_objects` results, in order (geometry last).
COLUMNS = ["uuid", "task", "class_id", "class_name", "probability", "centroid_x",
           "centroid_y", "area_um2", "perimeter_um", "parent_uuid", "geometry"]

_DTYPES = {"class_id": "int16", "probability": "float32", "centroid_x": "float64",
           "centroid_y": "float64", "area_um2": "float64", "perimeter_um": "float64"}


def read_objects(path: str | os.PathLike,
                 within: tuple[float, float, float, float] | None = None) -> gpd.GeoDataFrame:
    """Objects of a GeoParquet, GeoJSON or gzipped GeoJSON file as a GeoDataFrame.

    ``within`` (x0, y0, x1, y1, level-0 px) keeps only the objects whose centroid lies
    in ``[x0, x1) x [y0, y1)``; a GeoParquet file is then read by row-group statistics,
    not whole.

    The columns are :data:`COLUMNS` whatever the format. GeoJSON from other
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
        head = fh.read(4)
    try:
        if head == b"PAR1":
            return _read_parquet(path, within)
        gdf = _read_geojson(path, gzipped=head[:2] == b"\x1f\x8b")
        if within is None:
            return gdf
        x0, y0, x1, y1 = within
        keep = gdf.centroid_x.between(x0, x1, inclusive="left") & \
            gdf.centroid_y.between(y0, y1, inclusive="left")
        return gdf[keep.to_numpy()].reset_index(drop=True)
    except InputError:
        raise
    except Exception as exc:  # any parser failure means a malformed file
        raise InputError(f"{path}: cannot read objects ({type(exc).__name__}: {exc})") from exc


def _read_parquet(path: Path, within: tuple[float, float, float, float] | None = None
                  ) -> gpd.GeoDataFrame:
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
    return _finish(gdf[COLUMNS])


def _read_geojson(path: Path, gzipped: bool) -> gpd.GeoDataFrame:
    opener = gzip.open if gzipped else open
    with opener(path, "rt", encoding="utf-8") as fh:
        doc = json.load(fh)
    if isinstance(doc, dict) and doc.get("type") == "FeatureCollection":
        features = doc.get("features", [])
    elif isinstance(doc, dict) and doc.get("type") == "Feature":
        features = [doc]
    elif isinstance(doc, list):  # QuPath may export a bare list of Features
        features = doc
    else:
        raise InputError(f"{path}: not a GeoJSON FeatureCollection or Feature list")
    rows: list[dict[str, Any]] = []
    for i, feature in enumerate(features):
        _feature_rows(feature, path, str(i), None, rows)
    if not rows:
        frame = pd.DataFrame({c: pd.Series(dtype="object") for c in COLUMNS[:-1]})
        return _finish(gpd.GeoDataFrame(frame, geometry=gpd.GeoSeries([]), crs=None))
    gdf = gpd.GeoDataFrame(pd.DataFrame(rows), geometry="geometry", crs=None)
    missing_centroid = gdf["centroid_x"].isna().to_numpy()
    if missing_centroid.any():
        c = shapely.centroid(gdf.geometry.values[missing_centroid])
        gdf.loc[missing_centroid, "centroid_x"] = shapely.get_x(c)
        gdf.loc[missing_centroid, "centroid_y"] = shapely.get_y(c)
    return _finish(gdf[COLUMNS])


def _feature_rows(feature: Any, path: Path, where: str, parent: str | None,
                  rows: list[dict[str, Any]]) -> None:
    """Append the row of ``feature`` and of its QuPath child objects (depth first)."""
    row = _feature_row(feature, path, where, parent)
    rows.append(row)
    props = feature.get("properties") or {}
    children = props.get("childObjects", props.get("children")) or []
    for j, child in enumerate(children):
        _feature_rows(child, path, f"{where}.{j}", row["uuid"] or None, rows)


def _feature_row(feature: Any, path: Path, where: str, parent: str | None) -> dict[str, Any]:
    if not isinstance(feature, dict) or feature.get("geometry") is None:
        raise InputError(f"{path}: feature {where} has no geometry")
    props = feature.get("properties") or {}
    # Our fields live in metadata (strings); files before that kept them as bare properties.
    meta = {**{k: props[k] for k in METADATA_KEYS if k in props},
            **(props.get("metadata") or {})}
    cls = props.get("classification") or {}
    if isinstance(cls, str):  # QuPath accepts a bare class name
        cls = {"name": cls}
    meas = props.get("measurements") or {}
    if isinstance(meas, list):  # older QuPath: [{"name": ..., "value": ...}]
        meas = {m.get("name"): m.get("value") for m in meas}
    task = str(meta.get("task", "nuclei" if props.get("objectType") in ("detection", "cell")
                        else "gland"))
    # A QuPath cell's object is its nucleus; the grown cell boundary is not read.
    nucleus = props.get("nucleusGeometry") if props.get("objectType") == "cell" else None
    name = str(meta.get("class_name", cls.get("name", UNTYPED)))
    class_id = meta.get("class_id")
    prob = meta.get("probability", meas.get(PROBABILITY_NAME))
    return {
        "uuid": str(feature.get("id") or props.get("uuid") or ""),
        "task": task,
        "class_id": int(class_id) if class_id is not None else class_id_for(task, name),
        "class_name": name,
        "probability": _float(prob),
        "centroid_x": np.nan,
        "centroid_y": np.nan,
        "area_um2": _float(meas.get(AREA_NAME)),
        "perimeter_um": _float(meas.get(PERIMETER_NAME)),
        "parent_uuid": meta.get("parent_uuid", parent),
        "geometry": shape(nucleus or feature["geometry"]),
    }


def _float(v: Any) -> float:
    """A number, or QuPath's "NaN" / "Infinity" / "-Infinity" / "inf" strings."""
    if v is None:
        return np.nan
    if isinstance(v, str) and v.strip().lower() in ("inf", "+inf"):
        return np.inf
    if isinstance(v, str) and v.strip().lower() == "-inf":
        return -np.inf
    return float(v)


def _finish(gdf: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    gdf = gdf.astype(_DTYPES)
    gdf["parent_uuid"] = gdf["parent_uuid"].astype(object).where(gdf["parent_uuid"].notna(),
                                                                  None)
    return gdf.reset_index(drop=True)
