"""Tissue-type map outputs: a zarr class map, a coloured PNG, optional region polygons.

The zarr array (uint8 class ids, dims ``y, x``) carries in its attributes the
map's um/px, the pixel size in level-0 px if known, and the class names and
colours, so a reader needs nothing else to interpret it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import zarr

from cerberus_cli.core.atomic import AtomicPath
from cerberus_cli.core.records import ObjectRecord, make_record
from cerberus_cli.core.vocabulary import TISSUE_TYPES, ClassSpec
from cerberus_cli.postprocess.chunks import object_uuid_from_moments
from cerberus_cli.postprocess.instances import label_components
from cerberus_cli.postprocess.polygons import label_polygons


def colorize(classes: np.ndarray, specs: Sequence[ClassSpec] = TISSUE_TYPES) -> np.ndarray:
    """RGB uint8 image of a class map (ids beyond the list are black)."""
    lut = np.zeros((256, 3), np.uint8)
    for i, spec in enumerate(specs):
        lut[i] = spec.color
    return lut[np.asarray(classes, dtype=np.uint8)]


def write_tissue_map(zarr_path: str | os.PathLike, png_path: str | os.PathLike,
                     classes: np.ndarray, mpp: float,
                     specs: Sequence[ClassSpec] = TISSUE_TYPES, overwrite: bool = False,
                     chunk: int = 1024) -> tuple[Path, Path]:
    """Write the tissue class map as zarr (with attributes) and as a coloured PNG.

    ``mpp`` is the map's micrometres per pixel. Both outputs are written under
    temporary names and renamed when complete. Returns (zarr path, PNG path).
    """
    classes = np.asarray(classes)
    if classes.ndim != 2:
        raise ValueError(f"tissue class map must be 2-D, got shape {classes.shape}")
    if not mpp > 0:
        raise ValueError(f"mpp must be positive, got {mpp}")
    if classes.size and int(classes.max()) >= len(specs):
        raise ValueError(f"class id {int(classes.max())} beyond the {len(specs)} tissue classes")
    z_target = AtomicPath(zarr_path, overwrite=overwrite)
    p_target = AtomicPath(png_path, overwrite=overwrite)
    try:
        arr = zarr.create_array(
            store=str(z_target.tmp), shape=classes.shape, dtype="uint8",
            chunks=(min(chunk, max(1, classes.shape[0])), min(chunk, max(1, classes.shape[1]))),
            dimension_names=["y", "x"], fill_value=0)
        arr[...] = classes.astype(np.uint8)
        arr.attrs.update({
            "mpp": float(mpp),
            "classes": [{"id": i, "name": s.name, "color": list(s.color)}
                        for i, s in enumerate(specs)],
            "description": "tissue type per pixel (argmax of the tissue head)",
        })
        ok, buf = cv2.imencode(".png", colorize(classes, specs)[:, :, ::-1])
        if not ok:
            raise RuntimeError(f"{png_path}: PNG encoding failed")
        p_target.tmp.write_bytes(buf.tobytes())
    except BaseException:
        z_target.abort()
        p_target.abort()
        raise
    return z_target.commit(), p_target.commit()


def read_tissue_map(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """The class map and attributes of a tissue zarr written by :func:`write_tissue_map`."""
    arr = zarr.open_array(str(path), mode="r")
    return np.asarray(arr[...]), dict(arr.attrs)


def tissue_regions(classes: np.ndarray, scale: float, mpp: float,
                   specs: Sequence[ClassSpec] = TISSUE_TYPES, min_cells: int = 4,
                   confidence: np.ndarray | None = None, key: str = "",
                   skip: Sequence[int] = (0,)) -> list[ObjectRecord]:
    """Connected regions of each tissue class as records (task ``tissue``).

    ``scale`` is level-0 px per map pixel, ``mpp`` the slide's level-0 mpp.
    Regions under ``min_cells`` map pixels and classes in ``skip`` (background)
    are left out. ``probability`` is the region's mean ``confidence`` (1.0 when
    no confidence map is given). Holes (enclosed regions of other classes) are
    kept. UUIDs are deterministic (uuid5 of ``key``, task and pixel moments).
    """
    classes = np.asarray(classes)
    h, w = classes.shape
    records: list[ObjectRecord] = []
    for cid in range(len(specs)):
        if cid in skip:
            continue
        labels, n = label_components(classes == cid, min_cells)
        if n == 0:
            continue
        flat = labels.ravel()
        count = np.bincount(flat, minlength=n + 1)
        sx = np.rint(np.bincount(flat, weights=np.tile(np.arange(w, dtype=np.float64), h),
                                 minlength=n + 1)).astype(np.int64)
        sy = np.rint(np.bincount(flat, weights=np.repeat(np.arange(h, dtype=np.float64), w),
                                 minlength=n + 1)).astype(np.int64)
        if confidence is not None:
            conf = np.bincount(flat, weights=np.asarray(confidence, np.float64).ravel(),
                               minlength=n + 1) / np.maximum(count, 1)
        # Cell maps are staircases: only drop collinear points (DP would skew corners).
        geoms = label_polygons(labels, scale=scale, simplify=0.1)
        for i, geom in enumerate(geoms, start=1):
            if geom is None:
                continue
            prob = float(conf[i]) if confidence is not None else 1.0
            uid = object_uuid_from_moments(key, "tissue", int(count[i]), int(sx[i]), int(sy[i]))
            records.append(make_record(geom, "tissue", cid, specs[cid].name, prob, mpp, uuid=uid))
    return records
