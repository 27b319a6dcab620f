"""Bringing images and label maps to the model resolution (microns per pixel)."""

from __future__ import annotations

import cv2
import numpy as np

# Relative mpp differences below this are treated as equal (no resampling).
_MPP_TOLERANCE = 0.02


def scale_factor(source_mpp: float, target_mpp: float) -> float:
    """Factor by which pixel sizes change going from ``source_mpp`` to ``target_mpp``."""
    return float(source_mpp) / float(target_mpp)


def needs_resampling(source_mpp: float, target_mpp: float) -> bool:
    return abs(scale_factor(source_mpp, target_mpp) - 1.0) > _MPP_TOLERANCE


def _size(shape: tuple[int, ...], factor: float) -> tuple[int, int]:
    h, w = shape[:2]
    return max(1, int(round(w * factor))), max(1, int(round(h * factor)))


def resample_image(image: np.ndarray, source_mpp: float, target_mpp: float) -> np.ndarray:
    """Resize an RGB image (area averaging when shrinking, bilinear when growing)."""
    if not needs_resampling(source_mpp, target_mpp):
        return image
    f = scale_factor(source_mpp, target_mpp)
    interp = cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, _size(image.shape, f), interpolation=interp)


def resample_labels(labels: np.ndarray, source_mpp: float, target_mpp: float) -> np.ndarray:
    """Resize a label map with nearest-neighbour sampling (ids are never blended)."""
    if not needs_resampling(source_mpp, target_mpp):
        return labels
    f = scale_factor(source_mpp, target_mpp)
    dtype = labels.dtype
    # cv2 resizes int32 and uint16 maps but not int64/uint32: go through int32.
    work = labels.astype(np.int32) if dtype not in (np.uint8, np.uint16, np.int16, np.int32) else labels
    out = cv2.resize(work, _size(labels.shape, f), interpolation=cv2.INTER_NEAREST)
    return out.astype(dtype, copy=False)
