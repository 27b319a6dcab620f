"""QC overlay: object outlines drawn over a slide thumbnail, as a PNG.

Outlines are coloured by class (the task's class list colours) and drawn with
OpenCV at the thumbnail scale. Rings are gathered with vectorised shapely calls
and drawn with one ``cv2.polylines`` call per colour, so ~1e5 objects take well
under a second (see benchmarks/postprocess.md).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np
import shapely

from cerberus_cli.core.atomic import AtomicPath
from cerberus_cli.core.records import ObjectRecord
from cerberus_cli.core.vocabulary import class_color

#: Fixed-point bits for sub-pixel outline positions (cv2 ``shift``).
_SHIFT = 2


class OverlayCanvas:
    """A thumbnail to draw object outlines on, batch by batch.

    ``thumbnail`` is an RGB uint8 (H, W, 3) array; ``scale`` converts level-0 px
    to thumbnail px (e.g. slide mpp / thumbnail mpp).
    """

    def __init__(self, thumbnail: np.ndarray, scale: float) -> None:
        thumb = np.asarray(thumbnail)
        if thumb.ndim != 3 or thumb.shape[2] not in (3, 4) or thumb.dtype != np.uint8:
            raise ValueError(f"thumbnail must be an RGB uint8 (H, W, 3) array, got "
                             f"{thumb.dtype} {thumb.shape}")
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale}")
        # OpenCV draws in BGR; keep a private copy so the caller's array is untouched.
        self.image = np.ascontiguousarray(thumb[:, :, 2::-1])
        self.scale = float(scale)

    def draw(self, records: Iterable[ObjectRecord], thickness: int = 1) -> None:
        """Draw the outlines (exteriors and holes) of ``records``."""
        records = list(records)
        if not records:
            return
        geoms = np.empty(len(records), dtype=object)
        geoms[:] = [r.geometry for r in records]
        parts, part_of = shapely.get_parts(geoms, return_index=True)
        rings, ring_of = shapely.get_rings(parts, return_index=True)
        coords, coord_of = shapely.get_coordinates(rings, return_index=True)
        if not len(coords):
            return
        pts = np.round(coords * (self.scale * (1 << _SHIFT))).astype(np.int32)
        starts = np.flatnonzero(np.r_[True, np.diff(coord_of) != 0])
        polys = np.split(pts, starts[1:])
        owner = part_of[ring_of[coord_of[starts]]]
        colors = np.array([class_color(r.task, r.class_id, r.class_name) for r in records],
                          dtype=np.int32)[owner]
        keys = colors[:, 0] << 16 | colors[:, 1] << 8 | colors[:, 2]
        for key in np.unique(keys):
            idx = np.flatnonzero(keys == key)
            r, g, b = int(key >> 16), int((key >> 8) & 255), int(key & 255)
            cv2.polylines(self.image, [polys[i] for i in idx], True, (b, g, r),
                          thickness=thickness, lineType=cv2.LINE_8, shift=_SHIFT)

    def rgb(self) -> np.ndarray:
        """The overlay as an RGB array."""
        return self.image[:, :, ::-1].copy()

    def save(self, path: str | os.PathLike) -> None:
        """Write the overlay as PNG to ``path`` (any name: the format is not guessed)."""
        ok, buf = cv2.imencode(".png", self.image)
        if not ok:
            raise RuntimeError(f"{path}: PNG encoding failed")
        Path(path).write_bytes(buf.tobytes())


def write_overlay(path: str | os.PathLike, thumbnail: np.ndarray,
                  records: Iterable[ObjectRecord], scale: float,
                  overwrite: bool = False) -> Path:
    """Draw ``records`` over ``thumbnail`` and write the PNG atomically to ``path``."""
    canvas = OverlayCanvas(thumbnail, scale)
    canvas.draw(records)
    target = AtomicPath(path, overwrite=overwrite)
    try:
        canvas.save(target.tmp)
    except BaseException:
        target.abort()
        raise
    return target.commit()
