"""The tissue mask a run used, saved beside its outputs: a PNG and polygons.

* ``S.mask.png``: the mask at its own resolution (uint8, 255 = tissue). It spans
  the whole slide, so ``cerberus segment --mask S.mask.png`` reads it back.
* ``S.mask.parquet`` / ``S.mask.geojson``: the tissue regions as polygons (holes
  kept) in level-0 pixels, one record each (task ``tissue``, class ``tissue mask``,
  class id -1: not a tissue type), for QuPath, geopandas and DuckDB.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import shapely
from shapely.geometry import MultiPolygon, Polygon, box

from cerberus_cli.core.atomic import AtomicPath
from cerberus_cli.core.records import ObjectRecord, make_record, object_uuid
from cerberus_cli.outputs.object_formats import object_suffix

#: Class of the mask's polygons (not one of the tissue types, hence id -1).
MASK_CLASS = "tissue mask"
MASK_CLASS_ID = -1


class _MaskLike(Protocol):
    mask: np.ndarray
    mpp: float


def mask_paths(folder: str | os.PathLike, stem: str, fmt: str = "parquet") -> dict[str, Path]:
    """The file names :func:`save_mask` is meant to write for slide ``stem``."""
    folder = Path(folder)
    suffix = object_suffix(fmt)
    return {"png": folder / f"{stem}.mask.png", "polygons": folder / f"{stem}.mask{suffix}"}


def mask_polygons(mask: np.ndarray, scale: float) -> list[Polygon]:
    """Polygons (level-0 px) of the 8-connected regions of a bool mask, holes kept.

    ``scale`` is level-0 px per mask pixel. Outlines follow the pixel edges (the
    contour through pixel centres, grown by half a pixel), so areas match the mask.
    """
    binary = np.ascontiguousarray(mask, dtype=np.uint8)
    if not binary.any():
        return []
    contours, hierarchy = cv2.findContours(binary, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    polygons: list[Polygon] = []
    for i, info in enumerate(hierarchy[0]):
        if info[3] != -1:
            continue  # a hole: collected with its parent
        poly = _ring(contours[i], scale, grow=True)
        child = info[2]
        while child != -1:
            poly = poly.difference(_ring(contours[child], scale, grow=False))
            child = hierarchy[0][child][0]
        polygons.extend(_polygons_of(shapely.make_valid(poly)))
    return polygons


def _ring(contour: np.ndarray, scale: float, grow: bool) -> Polygon:
    """A contour (through the centres of the region's border pixels) moved to the
    pixel edges: half a pixel out for an outline, half a pixel into a hole."""
    pts = (contour.reshape(-1, 2).astype(np.float64) + 0.5) * scale
    half = 0.5 * scale
    if len(pts) < 3:
        if not grow:
            return Polygon()
        x0, y0 = pts.min(axis=0)
        x1, y1 = pts.max(axis=0)
        return box(x0 - half, y0 - half, x1 + half, y1 + half)
    poly = shapely.make_valid(Polygon(pts))
    return poly.buffer(half if grow else -half, join_style="mitre")


def _polygons_of(geom: object) -> list[Polygon]:
    if isinstance(geom, Polygon):
        return [geom] if not geom.is_empty else []
    if isinstance(geom, MultiPolygon):
        return [g for g in geom.geoms if not g.is_empty]
    parts = getattr(geom, "geoms", [])
    return [g for part in parts for g in _polygons_of(part)]


def mask_records(mask: _MaskLike, slide_mpp: float, key: str = "") -> list[ObjectRecord]:
    """The mask's regions as records (level-0 px; areas with the slide's mpp)."""
    scale = mask.mpp / slide_mpp
    records = []
    for poly in mask_polygons(mask.mask, scale):
        c = poly.centroid
        uid = object_uuid("tissue", c.x, c.y, f"{key}|mask")
        records.append(make_record(poly, "tissue", MASK_CLASS_ID, MASK_CLASS, 1.0, slide_mpp,
                                   uuid=uid))
    return records


def save_mask(mask: _MaskLike, slide_mpp: float, png_path: str | os.PathLike,
              polygons_path: str | os.PathLike | None = None, key: str = "",
              overwrite: bool = False) -> dict[str, Path]:
    """Write the mask as a PNG and (optionally) its polygons; returns the paths written.

    The polygon format follows ``polygons_path``'s suffix (``.parquet`` GeoParquet,
    ``.geojson`` or ``.geojson.gz`` QuPath GeoJSON: the object format table). Every file
    is written under a temporary name and renamed when complete.
    """
    from cerberus_cli.outputs.object_files import write_objects

    out: dict[str, Path] = {}
    target = AtomicPath(png_path, overwrite=overwrite)
    try:
        ok, buf = cv2.imencode(".png", np.asarray(mask.mask, bool).astype(np.uint8) * 255)
        if not ok:
            raise RuntimeError(f"{png_path}: PNG encoding failed")
        target.tmp.write_bytes(buf.tobytes())
    except BaseException:
        target.abort()
        raise
    out["png"] = target.commit()
    if polygons_path is not None:
        meta = {"task": "tissue mask", "mask_mpp": float(mask.mpp), "coordinates": "level-0 pixels"}
        out["polygons"] = write_objects(polygons_path, mask_records(mask, slide_mpp, key),
                                        metadata=meta, overwrite=overwrite)
    return out
