"""Reading the patches of a patch table at the model's resolution.

Image rows are read whole and resampled from their mpp (row ``mpp``, else the
default given, else the model's) to the model's; slide rows are read around their
centre from the best pyramid level. With a patch size, images are centre-cropped or
padded with white to it. Reading happens in DataLoader worker processes, so errors come
back as values (a one-line reason) rather than exceptions that lose their type.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from torch.utils.data import Dataset

from cerberus_cli.core.errors import CerberusError, first_line


def resample(img: np.ndarray, src_mpp: float, dst_mpp: float) -> np.ndarray:
    """``img`` at ``src_mpp`` um/px resampled to ``dst_mpp`` (area averaging when shrinking)."""
    factor = src_mpp / dst_mpp
    if abs(factor - 1.0) < 1e-3:
        return img
    h, w = img.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    interp = cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR
    return cv2.resize(img, size, interpolation=interp)


def fit_to(img: np.ndarray, side: int) -> np.ndarray:
    """Centre-crop or pad (white) ``img`` to ``side`` x ``side``."""
    h, w = img.shape[:2]
    y0, x0 = max(0, (h - side) // 2), max(0, (w - side) // 2)
    img = img[y0:y0 + side, x0:x0 + side]
    h, w = img.shape[:2]
    if (h, w) == (side, side):
        return img
    out = np.full((side, side, 3), 255, np.uint8)
    oy, ox = (side - h) // 2, (side - w) // 2
    out[oy:oy + h, ox:ox + w] = img
    return out


def read_image(path: str) -> np.ndarray:
    """RGB uint8 (H, W, 3) of an image file; raises CerberusError naming the file."""
    data = np.fromfile(path, np.uint8) if os.path.isfile(path) else None
    if data is None:
        raise CerberusError(f"{path}: no such image file")
    img: np.ndarray | None = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise CerberusError(f"{path}: unreadable image")
    if img.dtype != np.uint8:
        img = (img / max(1, np.iinfo(img.dtype).max) * 255).astype(np.uint8) \
            if np.issubdtype(img.dtype, np.integer) else np.clip(img, 0, 255).astype(np.uint8)
    if img.ndim == 2:
        return np.repeat(img[..., None], 3, axis=2)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


@dataclass(frozen=True)
class PatchReader:
    """How patches are read: model mpp, patch side (px at model mpp) and fallbacks."""

    model_mpp: float
    patch_px: int | None
    default_mpp: float | None = None
    backend: str = "auto"
    slide_patch_px: int = 224

    def read(self, row: dict[str, Any], slides: dict[str, Any]) -> np.ndarray:
        """The patch of one table row (uint8 RGB at the model mpp)."""
        row_mpp = _finite_or_none(row.get("mpp"))
        path = row.get("path")
        if isinstance(path, str) and path:
            img = read_image(path)
            src = row_mpp or self.default_mpp or self.model_mpp
            img = resample(img, src, self.model_mpp)
            return fit_to(img, self.patch_px) if self.patch_px else img
        return self._read_slide(row, row_mpp, slides)

    def _read_slide(self, row: dict[str, Any], row_mpp: float | None,
                    slides: dict[str, Any]) -> np.ndarray:
        from cerberus_cli.slides.scale import read_scaled
        from cerberus_cli.slides.slide import open_slide

        path = str(row["slide"])
        mpp = row_mpp or self.default_mpp
        key = f"{path}|{mpp}"
        if key not in slides:
            slides[key] = open_slide(path, self.backend, mpp)
        slide = slides[key]
        side = self.patch_px or self.slide_patch_px
        s = self.model_mpp / slide.mpp  # level-0 px per model px
        x0 = round(float(row["x"]) / s - side / 2)
        y0 = round(float(row["y"]) / s - side / 2)
        return read_scaled(slide, x0, y0, side, side, self.model_mpp)


def _finite_or_none(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


class PatchDataset(Dataset):
    """Rows of a patch table -> ``(index, patch or None, error or None)``."""

    def __init__(self, rows: list[dict[str, Any]], reader: PatchReader) -> None:
        self.rows = rows
        self.reader = reader
        self._slides: dict[str, Any] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray | None, str | None]:
        try:
            return i, self.reader.read(self.rows[i], self._slides), None
        except CerberusError as exc:
            return i, None, str(exc)
        except Exception as exc:  # noqa: BLE001 - any reader library error, reported on one line
            where = self.rows[i].get("path") or self.rows[i].get("slide")
            return i, None, f"{where}: {first_line(exc)}"


def collate(items: list[tuple[int, np.ndarray | None, str | None]]) -> list:
    """Keep a batch as a list: patches may differ in size (grouped later by shape)."""
    return items
