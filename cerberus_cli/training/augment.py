"""Augmentation of training patches: random crop, flips, rotations, affine warps,
blur, HSV and stain (HED) jitter.

Geometric transforms move the image and its label maps together (labels with
nearest-neighbour sampling, so ids survive); colour transforms touch the image only.
Targets are computed afterwards from the warped instance map. All randomness comes
from the ``numpy.random.Generator`` passed in, so a patch is a pure function of its
seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class AugmentConfig:
    """Strengths of the augmentations (0 disables the continuous ones)."""

    flip: bool = True
    rotate90: bool = True
    affine_p: float = 0.5
    max_angle: float = 20.0
    scale: float = 0.1
    shear: float = 0.05
    blur_p: float = 0.2
    max_blur_sigma: float = 1.0
    hsv_p: float = 0.8
    hue: float = 0.04
    saturation: float = 0.2
    value: float = 0.15
    stain_p: float = 0.5
    stain: float = 0.05

    @staticmethod
    def none() -> AugmentConfig:
        return AugmentConfig(False, False, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def _pad_to(arr: np.ndarray, size: int, value: int) -> np.ndarray:
    h, w = arr.shape[:2]
    ph, pw = max(0, size - h), max(0, size - w)
    if not ph and not pw:
        return arr
    pad = ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)) + ((0, 0),) * (arr.ndim - 2)
    return np.pad(arr, pad, mode="constant", constant_values=value)


def random_window(shape: tuple[int, int], size: int, rng: np.random.Generator) -> tuple[int, int]:
    """Top-left corner of a random ``size`` window inside ``shape`` (0 if smaller)."""
    h, w = shape
    return int(rng.integers(0, max(0, h - size) + 1)), int(rng.integers(0, max(0, w - size) + 1))


def geometric(image: np.ndarray, labels: list[np.ndarray], size: int, cfg: AugmentConfig,
              rng: np.random.Generator, pad_value: int = 255) -> tuple[np.ndarray, list[np.ndarray]]:
    """Random ``size`` x ``size`` patch with flips, 90-degree turns and an affine warp.

    A larger window (the patch's diagonal) is cut first when the source allows, so
    that rotated corners are real tissue rather than padding.
    """
    warp = cfg.affine_p > 0 and rng.random() < cfg.affine_p
    window = int(np.ceil(size * 1.45)) if warp else size
    window = min(window, max(image.shape[:2])) if warp else window
    window = max(window, size)
    y, x = random_window(image.shape[:2], window, rng)
    img = _pad_to(image[y:y + window, x:x + window], window, pad_value)
    labs = [_pad_to(lab[y:y + window, x:x + window], window, 0) for lab in labels]
    if warp:
        angle = rng.uniform(-cfg.max_angle, cfg.max_angle)
        scale = 1.0 + rng.uniform(-cfg.scale, cfg.scale)
        m = cv2.getRotationMatrix2D((window / 2 - 0.5, window / 2 - 0.5), angle, scale)
        m[:, :2] = m[:, :2] @ np.array([[1.0, rng.uniform(-cfg.shear, cfg.shear)], [0.0, 1.0]])
        img = cv2.warpAffine(img, m, (window, window), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT_101)
        # float32 holds ids exactly (< 2^24); cv2 cannot warp int32 maps.
        labs = [cv2.warpAffine(lab.astype(np.float32), m, (window, window), flags=cv2.INTER_NEAREST,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0).astype(lab.dtype)
                for lab in labs]
    o = (window - size) // 2
    img = img[o:o + size, o:o + size]
    labs = [lab[o:o + size, o:o + size] for lab in labs]
    if cfg.flip and rng.random() < 0.5:
        img, labs = img[:, ::-1], [lab[:, ::-1] for lab in labs]
    if cfg.rotate90:
        k = int(rng.integers(0, 4))
        img, labs = np.rot90(img, k), [np.rot90(lab, k) for lab in labs]
    return np.ascontiguousarray(img), [np.ascontiguousarray(lab) for lab in labs]


# Ruifrok & Johnston H&E-DAB stain vectors (rows: haematoxylin, eosin, DAB).
_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], np.float32)
_HED /= np.linalg.norm(_HED, axis=1, keepdims=True)
_HED_INV = np.linalg.inv(_HED).astype(np.float32)


def stain_jitter(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Scale and shift the haematoxylin/eosin/DAB optical densities (Tellez et al.)."""
    od = -np.log((image.astype(np.float32) + 1.0) / 256.0)
    conc = od.reshape(-1, 3) @ _HED_INV
    alpha = rng.uniform(1 - strength, 1 + strength, 3).astype(np.float32)
    beta = rng.uniform(-strength, strength, 3).astype(np.float32)
    od = ((conc * alpha + beta) @ _HED).reshape(image.shape)
    return np.clip(256.0 * np.exp(-od) - 1.0, 0, 255).astype(np.uint8)


def hsv_jitter(image: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV_FULL).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + 256.0 * rng.uniform(-cfg.hue, cfg.hue)) % 256.0
    hsv[..., 1] *= 1.0 + rng.uniform(-cfg.saturation, cfg.saturation)
    hsv[..., 2] *= 1.0 + rng.uniform(-cfg.value, cfg.value)
    return cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB_FULL)


def photometric(image: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Colour and blur augmentation of an RGB uint8 image."""
    if cfg.stain_p > 0 and rng.random() < cfg.stain_p:
        image = stain_jitter(image, cfg.stain, rng)
    if cfg.hsv_p > 0 and rng.random() < cfg.hsv_p:
        image = hsv_jitter(image, cfg, rng)
    if cfg.blur_p > 0 and rng.random() < cfg.blur_p:
        sigma = rng.uniform(0.1, cfg.max_blur_sigma)
        image = cv2.GaussianBlur(image, (0, 0), sigma)
    return image
