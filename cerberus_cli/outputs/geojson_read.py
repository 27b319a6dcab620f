"""Reading QuPath GeoJSON (ours, gzipped or not, and other tools') into the object table."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from shapely.geometry import shape

from cerberus_cli.core.errors import InputError
from cerberus_cli.core.vocabulary import class_id_for
from cerberus_cli.outputs.frame import COLUMNS, Window, finish_objects, objects_within
from cerberus_cli.outputs.geojson import (
    AREA_NAME,
    METADATA_KEYS,
    PERIMETER_NAME,
    PROBABILITY_NAME,
    UNTYPED,
)

#: First bytes of a gzip stream.
GZIP_MAGIC = b"\x1f\x8b"


def read_geojson(path: Path, within: Window | None = None) -> gpd.GeoDataFrame:
    """Objects of a (QuPath, optionally gzipped) GeoJSON file in the layout of
    :data:`~cerberus_cli.outputs.frame.COLUMNS` (see
    :func:`~cerberus_cli.outputs.read.read_objects` for what other tools' files may lack)."""
    with open(path, "rb") as fh:
        gzipped = fh.read(2) == GZIP_MAGIC
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
        return finish_objects(gpd.GeoDataFrame(frame, geometry=gpd.GeoSeries([]), crs=None))
    gdf = gpd.GeoDataFrame(pd.DataFrame(rows), geometry="geometry", crs=None)
    missing_centroid = gdf["centroid_x"].isna().to_numpy()
    if missing_centroid.any():
        c = shapely.centroid(gdf.geometry.values[missing_centroid])
        gdf.loc[missing_centroid, "centroid_x"] = shapely.get_x(c)
        gdf.loc[missing_centroid, "centroid_y"] = shapely.get_y(c)
    return objects_within(finish_objects(gdf), within)


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
