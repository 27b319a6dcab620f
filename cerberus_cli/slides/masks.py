"""User-supplied tissue masks: raster images or GeoJSON polygons.

* **PNG / TIFF / JPEG** at any resolution: the image is taken to span the
  whole slide, so its pixel size is ``slide.mpp * slide_width / mask_width``.
  Non-zero pixels (in any channel) are tissue. Its aspect ratio must match the
  slide's (within 2 %), which catches masks made for another slide.
* **GeoJSON** polygons in level-0 pixel coordinates: a FeatureCollection, a
  Feature, a bare geometry, or a JSON list of Features (QuPath's export). Polygon
  and MultiPolygon geometries are rasterised (holes respected) at ``mpp``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np

from cerberus_cli.core.errors import InputError
from cerberus_cli.slides.slide import Slide
from cerberus_cli.slides.sniff import sniff_format
from cerberus_cli.slides.tissue import TissueMask

_ASPECT_TOLERANCE = 0.02
_SUBPIXEL_BITS = 4  # cv2.fillPoly fixed-point precision


def load_mask(path: str | os.PathLike, slide: Slide, mpp: float = 8.0) -> TissueMask:
    """Load a user tissue mask for ``slide`` (raster at any resolution, or GeoJSON).

    ``mpp`` is the raster resolution used for GeoJSON polygons.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such mask file")
    if p.stat().st_size == 0:
        raise InputError(f"{p}: mask file is empty (0 bytes)")
    with open(p, "rb") as fh:
        head = fh.read(16)
    kind = sniff_format(head)
    if kind in ("png", "jpeg", "tiff"):
        return _raster_mask(p, slide)
    if p.suffix.lower() in (".geojson", ".json") or head.lstrip()[:1] in (b"{", b"["):
        return _geojson_mask(p, slide, mpp)
    raise InputError(f"{p}: not a mask (expected PNG/TIFF/JPEG image or GeoJSON polygons)")


def _raster_mask(p: Path, slide: Slide) -> TissueMask:
    if sniff_format(p.read_bytes()[:16]) == "tiff":
        import tifffile

        try:
            arr = tifffile.imread(str(p))
        except Exception as exc:
            raise InputError(f"{p}: cannot read the mask image ({exc})") from None
    else:
        decoded = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        if decoded is None:
            raise InputError(f"{p}: cannot decode the mask image")
        arr = decoded
    if arr.ndim == 3:
        arr = arr.max(axis=2) if arr.shape[2] != 4 else arr[..., :3].max(axis=2) * (arr[..., 3] > 0)
    if arr.ndim != 2:
        raise InputError(f"{p}: mask must be a 2-D image, got shape {arr.shape}")
    mh, mw = arr.shape
    sw, sh = slide.dimensions
    if abs((mw / mh) / (sw / sh) - 1) > _ASPECT_TOLERANCE:
        raise InputError(
            f"{p}: mask is {mw}x{mh} but slide {slide.path.name} is {sw}x{sh}; "
            "the aspect ratios differ (mask made for another slide?)"
        )
    mpp = slide.mpp * sw / mw
    return TissueMask(arr > 0, mpp, str(p))


def _geometries(doc: object) -> list[dict]:
    """All geometry objects in a GeoJSON document (any of the common wrappings)."""
    if isinstance(doc, list):
        return [g for item in doc for g in _geometries(item)]
    if not isinstance(doc, dict):
        return []
    kind = doc.get("type")
    if kind == "FeatureCollection":
        return [g for f in doc.get("features", []) for g in _geometries(f)]
    if kind == "Feature":
        return _geometries(doc.get("geometry"))
    if kind == "GeometryCollection":
        return [g for sub in doc.get("geometries", []) for g in _geometries(sub)]
    if kind in ("Polygon", "MultiPolygon"):
        return [doc]
    return []


def _geojson_mask(p: Path, slide: Slide, mpp: float) -> TissueMask:
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{p}: not valid JSON ({exc})") from None
    geoms = _geometries(doc)
    if not geoms:
        raise InputError(f"{p}: no Polygon or MultiPolygon geometries found")
    mpp = max(mpp, slide.mpp)
    scale = slide.mpp / mpp  # level-0 px -> mask px
    sw, sh = slide.dimensions
    out_w, out_h = max(1, round(sw * scale)), max(1, round(sh * scale))
    mask = np.zeros((out_h, out_w), np.uint8)
    factor = scale * (1 << _SUBPIXEL_BITS)
    try:
        for geom in geoms:
            polygons = [geom["coordinates"]] if geom["type"] == "Polygon" else geom["coordinates"]
            for rings in polygons:
                for k, ring in enumerate(rings):
                    pts = np.round(np.asarray(ring, np.float64)[:, :2] * factor).astype(np.int32)
                    # exterior fills, holes (later rings) clear
                    cv2.fillPoly(mask, [pts], 0 if k else 1, lineType=cv2.LINE_8, shift=_SUBPIXEL_BITS)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise InputError(f"{p}: malformed polygon coordinates ({exc})") from None
    return TissueMask(mask.astype(bool), mpp, str(p))
