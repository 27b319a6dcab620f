"""QC overlay: object outlines, the tissue mask and the processed tiles over a slide
thumbnail, with a legend, as a PNG.

The thumbnail is read at about 1 um/px so nuclei (6-10 um) are visible, capped so
the longer side stays within :data:`MAX_SIDE` px (:func:`overlay_mpp`). Outlines are
coloured by class (the task's class list colours) and drawn with OpenCV at the
thumbnail scale. Rings are gathered with vectorised shapely calls and drawn with
one ``cv2.polylines`` call per colour, so ~1e5 objects take well under a second
(see benchmarks/postprocess.md). The legend lists the classes drawn, the tissue-mask
outline and the tile grid, in a panel to the right of the slide.

Full-resolution crops (:data:`CROP_UM` um a side, at the slide's own resolution) of
the regions holding most nuclei (:func:`densest_cells`) show the outlines where the
overview is too coarse to judge them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np
import shapely

from cerberus_cli.core.atomic import AtomicPath
from cerberus_cli.core.records import ObjectRecord
from cerberus_cli.core.vocabulary import class_color

#: Fixed-point bits for sub-pixel outline positions (cv2 ``shift``).
_SHIFT = 2
#: Overlay resolution (um/px) when the slide is small enough, and the cap on its side.
OVERLAY_MPP = 1.0
MAX_SIDE = 8192
#: Colours (RGB) of the tissue-mask outline and the processed-tile grid.
MASK_COLOR = (0, 0, 0)
TILE_COLOR = (110, 110, 110)
#: Side (um) of a full-resolution crop; the count grid that picks crops uses cells this size.
CROP_UM = 200.0
_LEGEND_WIDTH = 250
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def overlay_mpp(dimensions: tuple[int, int], slide_mpp: float, target: float = OVERLAY_MPP,
                max_side: int = MAX_SIDE) -> float:
    """Resolution (um/px) of a slide's overlay: ``target``, coarser where the longer side
    would exceed ``max_side`` px, never finer than the slide itself."""
    longest_um = max(dimensions) * slide_mpp
    return max(target, slide_mpp, longest_um / max_side)


class OverlayCanvas:
    """A thumbnail to draw object outlines on, batch by batch.

    ``thumbnail`` is an RGB uint8 (H, W, 3) array; ``scale`` converts level-0 px
    to thumbnail px (e.g. slide mpp / thumbnail mpp); ``origin`` is the level-0 point
    at its top-left corner (a crop's offset; the slide's corner by default).
    """

    def __init__(self, thumbnail: np.ndarray, scale: float,
                 origin: tuple[float, float] = (0.0, 0.0)) -> None:
        thumb = np.asarray(thumbnail)
        if thumb.ndim != 3 or thumb.shape[2] not in (3, 4) or thumb.dtype != np.uint8:
            raise ValueError(f"thumbnail must be an RGB uint8 (H, W, 3) array, got "
                             f"{thumb.dtype} {thumb.shape}")
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale}")
        # OpenCV draws in BGR; keep a private copy so the caller's array is untouched.
        self.image = np.ascontiguousarray(thumb[:, :, 2::-1])
        self.scale = float(scale)
        self.origin = np.asarray(origin, np.float64)
        #: Legend entries, in drawing order: label -> RGB colour.
        self.legend: dict[str, tuple[int, int, int]] = {}
        self._mpp: float | None = None

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
        pts = np.round((coords - self.origin) * (self.scale * (1 << _SHIFT))).astype(np.int32)
        starts = np.flatnonzero(np.r_[True, np.diff(coord_of) != 0])
        polys = np.split(pts, starts[1:])
        owner = part_of[ring_of[coord_of[starts]]]
        per_record = [class_color(r.task, r.class_id, r.class_name) for r in records]
        for r, c in zip(records, per_record):
            self.legend.setdefault(f"{r.task}: {r.class_name}", c)
        colors = np.array(per_record, dtype=np.int32)[owner]
        keys = colors[:, 0] << 16 | colors[:, 1] << 8 | colors[:, 2]
        for key in np.unique(keys):
            idx = np.flatnonzero(keys == key)
            red, green, blue = int(key >> 16), int((key >> 8) & 255), int(key & 255)
            cv2.polylines(self.image, [polys[i] for i in idx], True, (blue, green, red),
                          thickness=thickness, lineType=cv2.LINE_8, shift=_SHIFT)

    def draw_mask(self, mask: np.ndarray, mask_scale: float, thickness: int = 2,
                  color: tuple[int, int, int] = MASK_COLOR) -> None:
        """Outline a tissue mask (bool HxW); ``mask_scale`` is level-0 px per mask pixel."""
        binary = np.ascontiguousarray(mask, dtype=np.uint8)
        contours, _ = cv2.findContours(binary, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
        f = mask_scale * self.scale  # overlay px per mask px
        # Contours index mask pixels; draw them through those pixels' centres.
        shift = self.origin * self.scale
        rings = [np.round(((c.reshape(-1, 2) + 0.5) * f - shift) * (1 << _SHIFT)).astype(np.int32)
                 for c in contours]
        r, g, b = color
        cv2.polylines(self.image, rings, True, (b, g, r), thickness, cv2.LINE_8, _SHIFT)
        self.legend["tissue mask"] = color

    def draw_tiles(self, boxes: Sequence[tuple[float, float, float, float]], thickness: int = 1,
                   color: tuple[int, int, int] = TILE_COLOR) -> None:
        """Outline the processed tiles, each ``(x, y, w, h)`` in level-0 px."""
        if not len(boxes):
            return
        b = np.asarray(boxes, np.float64) * self.scale
        x0, y0 = b[:, 0] - self.origin[0] * self.scale, b[:, 1] - self.origin[1] * self.scale
        x1, y1 = x0 + b[:, 2], y0 + b[:, 3]
        quads = np.stack([np.stack([x0, y0], 1), np.stack([x1, y0], 1),
                          np.stack([x1, y1], 1), np.stack([x0, y1], 1)], 1)
        pts = np.round(quads * (1 << _SHIFT)).astype(np.int32)
        r, g, bl = color
        cv2.polylines(self.image, list(pts), True, (bl, g, r), thickness, cv2.LINE_8, _SHIFT)
        self.legend[f"processed tiles ({len(boxes)})"] = color

    def set_resolution(self, mpp: float) -> None:
        """Record the overlay's um/px for the legend's scale bar."""
        self._mpp = float(mpp)

    def rgb(self) -> np.ndarray:
        """The overlay as an RGB array (the slide part, without the legend)."""
        return self.image[:, :, ::-1].copy()

    def composed(self) -> np.ndarray:
        """The overlay with its legend panel on the right, BGR."""
        if not self.legend:
            return self.image
        h, w = self.image.shape[:2]
        line = 22
        need = line * (len(self.legend) + 3) + 20
        panel = np.full((max(h, need), _LEGEND_WIDTH, 3), 255, np.uint8)
        y = 24
        cv2.putText(panel, "legend", (10, y), _FONT, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
        for label, (r, g, b) in self.legend.items():
            y += line
            cv2.rectangle(panel, (10, y - 12), (30, y + 2), (b, g, r), -1 if "tiles" not in label
                          and "mask" not in label else 2)
            cv2.putText(panel, label[:34], (38, y), _FONT, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        if self._mpp:
            # A scale bar of a round length near 100 px.
            um = 10 ** math.floor(math.log10(100 * self._mpp))
            px = max(1, round(um / self._mpp))
            y += 2 * line
            cv2.line(panel, (10, y), (10 + px, y), (0, 0, 0), 3)
            cv2.putText(panel, f"{um:g} um ({self._mpp:.2g} um/px)", (10, y + 18), _FONT, 0.45,
                        (0, 0, 0), 1, cv2.LINE_AA)
        out = np.full((max(h, panel.shape[0]), w + _LEGEND_WIDTH, 3), 255, np.uint8)
        out[:h, :w] = self.image
        out[:panel.shape[0], w:] = panel
        return out

    def save(self, path: str | os.PathLike, legend: bool = True) -> None:
        """Write the overlay as PNG to ``path`` (any name: the format is not guessed)."""
        ok, buf = cv2.imencode(".png", self.composed() if legend else self.image)
        if not ok:
            raise RuntimeError(f"{path}: PNG encoding failed")
        Path(path).write_bytes(buf.tobytes())


def densest_cells(counts: np.ndarray, n: int) -> list[tuple[int, int]]:
    """The (row, col) of up to ``n`` cells of a count grid holding most objects.

    No two chosen cells touch (not even at a corner), so crops show different places;
    empty cells are never chosen. Ties go to the first cell in row-major order.
    """
    counts = np.asarray(counts, np.float64).copy()
    out: list[tuple[int, int]] = []
    while len(out) < n and counts.size and counts.max() > 0:
        r, c = np.unravel_index(int(np.argmax(counts)), counts.shape)
        out.append((int(r), int(c)))
        counts[max(r - 1, 0):r + 2, max(c - 1, 0):c + 2] = 0
    return out


def write_overlay(path: str | os.PathLike, thumbnail: np.ndarray,
                  records: Iterable[ObjectRecord], scale: float,
                  overwrite: bool = False, mask: np.ndarray | None = None,
                  mask_scale: float = 1.0,
                  tiles: Sequence[tuple[float, float, float, float]] = (),
                  mpp: float | None = None) -> Path:
    """Draw ``records`` (and the tissue ``mask``, ``mask_scale`` level-0 px per mask
    pixel, and the processed ``tiles`` in level-0 px) over ``thumbnail``, add the
    legend (with a scale bar when ``mpp``, the thumbnail's um/px, is given) and
    write the PNG atomically to ``path``."""
    canvas = OverlayCanvas(thumbnail, scale)
    if tiles:
        canvas.draw_tiles(tiles)
    canvas.draw(records)
    if mask is not None:
        canvas.draw_mask(mask, mask_scale)
    if mpp is not None:
        canvas.set_resolution(mpp)
    target = AtomicPath(path, overwrite=overwrite)
    try:
        canvas.save(target.tmp)
    except BaseException:
        target.abort()
        raise
    return target.commit()
