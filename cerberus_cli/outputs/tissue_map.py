"""Tissue-type map outputs: an OME-Zarr class map and a coloured PNG.

``S.tissue.zarr`` is an OME-Zarr 0.5 image (Zarr v3) of uint8 class ids with axes in
micrometres, and the same ids as the label image ``labels/tissue`` carrying each
class's name and colour, so napari or ome-zarr-py show it coloured and named. The
``cerberus`` attributes repeat the um/px and the class list for plain zarr readers.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np
import zarr

from cerberus_cli.core.atomic import AtomicPath
from cerberus_cli.core.vocabulary import TISSUE_TYPES, ClassSpec
from cerberus_cli.outputs import omezarr


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
    """Write the tissue class map as OME-Zarr and as a coloured PNG.

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
        ids = classes.astype(np.uint8)
        height, width = ids.shape
        group = omezarr.open_store(z_target.tmp)
        omezarr.write_image(group, [ids], mpp, "tissue", chunk=chunk, attrs={
            "mpp": float(mpp),
            "classes": omezarr.class_table(specs),
            "description": "tissue type per pixel (argmax of the tissue head)",
            "valid_extent": omezarr.valid_extent(height, width, mpp),
        })
        omezarr.write_labels(group, "tissue", [ids], mpp, specs, chunk=chunk)
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
    """The class map and ``cerberus`` attributes (mpp, classes) of a tissue map.

    Reads what :func:`write_tissue_map` writes, and the plain zarr array of
    earlier versions (attributes on the array).
    """
    node = zarr.open(str(path), mode="r")
    if isinstance(node, zarr.Array):
        return np.asarray(node[...]), dict(node.attrs)
    level0 = cast(zarr.Array, node[omezarr.level0_path(node)])
    return np.asarray(level0[...]), dict(cast(dict[str, Any], node.attrs.get(omezarr.ATTRS_KEY, {})))
