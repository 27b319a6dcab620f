"""Pooling feature maps into vectors: global (avg, avg+max) and under object masks."""

from __future__ import annotations

import numpy as np
import torch

POOLINGS = ("avg", "avgmax")


def global_pool(fmap: torch.Tensor, pooling: str) -> torch.Tensor:
    """(B, C, h, w) -> (B, C) mean, or (B, 2C) mean then max with ``avgmax``."""
    avg = fmap.mean(dim=(2, 3))
    if pooling == "avg":
        return avg
    return torch.cat([avg, fmap.amax(dim=(2, 3))], dim=1)


def cell_weights(mask: np.ndarray, stride: int, shape: tuple[int, int]) -> np.ndarray:
    """Fraction of each feature cell (``shape``, ``stride`` input px per cell) inside ``mask``.

    ``mask`` is a bool (H, W) array at input resolution. An object smaller than one cell
    still gets the cell holding most of it, so every object has a non-empty support.
    """
    h, w = shape
    m = np.zeros((h * stride, w * stride), np.float32)
    hh, ww = min(mask.shape[0], m.shape[0]), min(mask.shape[1], m.shape[1])
    m[:hh, :ww] = mask[:hh, :ww]
    return m.reshape(h, stride, w, stride).mean(axis=(1, 3))


def masked_pool(fmap: torch.Tensor, weights: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pool one map (C, h, w) under per-object cell weights (N, h, w) -> (N, C) or (N, 2C).

    The mean is weighted by the fraction of each cell the object covers; the max runs
    over the cells it touches.
    """
    flat = fmap.flatten(1)                       # (C, h*w)
    wts = weights.flatten(1).to(flat.dtype)      # (N, h*w)
    total = wts.sum(dim=1, keepdim=True).clamp_min(1e-12)
    avg = (wts @ flat.T) / total
    if pooling == "avg":
        return avg
    touched = wts > 0
    big = torch.finfo(flat.dtype).min
    # (N, C, h*w) can be large for many objects; chunk over objects.
    maxes = []
    for start in range(0, wts.shape[0], 256):
        t = touched[start:start + 256, None, :]
        maxes.append(torch.where(t, flat[None], torch.full_like(flat[None], big)).amax(dim=2))
    return torch.cat([avg, torch.cat(maxes)], dim=1)

