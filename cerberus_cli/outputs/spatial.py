"""Space-filling-curve ordering so that nearby objects sit in the same row groups."""

from __future__ import annotations

import numpy as np


def hilbert_index(x: np.ndarray, y: np.ndarray, order: int = 16) -> np.ndarray:
    """Hilbert-curve index of integer cell coordinates ``0 <= x, y < 2**order``.

    Vectorised form of the classic iterative ``xy2d`` algorithm; returns uint64.
    """
    n = np.uint64(1) << np.uint64(order)
    x = np.asarray(x, dtype=np.uint64).copy()
    y = np.asarray(y, dtype=np.uint64).copy()
    if x.size and (x.max() >= n or y.max() >= n):
        raise ValueError(f"coordinates must be below 2**{order}")
    d = np.zeros(x.shape, dtype=np.uint64)
    s = n >> np.uint64(1)
    while s > 0:
        rx = (x & s) > 0
        ry = (y & s) > 0
        d += s * s * ((np.uint64(3) * rx.astype(np.uint64)) ^ ry.astype(np.uint64))
        # Rotate the quadrant so the curve stays continuous.
        flip = ~ry & rx
        x = np.where(flip, n - np.uint64(1) - x, x)
        y = np.where(flip, n - np.uint64(1) - y, y)
        swap = ~ry
        x, y = np.where(swap, y, x), np.where(swap, x, y)
        s >>= np.uint64(1)
    return d


def hilbert_order(cx: np.ndarray, cy: np.ndarray, order: int = 16) -> np.ndarray:
    """Permutation that sorts points (float coordinates) along a Hilbert curve.

    Points are quantised to a ``2**order`` grid over their own bounding box, so
    the order is fine-grained whatever the extent of the batch. Stable for ties.
    """
    cx = np.asarray(cx, dtype=np.float64)
    cy = np.asarray(cy, dtype=np.float64)
    if cx.size < 2:
        return np.arange(cx.size)
    x0, y0 = cx.min(), cy.min()
    span = max(cx.max() - x0, cy.max() - y0, 1e-9)
    top = (1 << order) - 1
    qx = np.clip(((cx - x0) / span * top).round(), 0, top)
    qy = np.clip(((cy - y0) / span * top).round(), 0, top)
    return np.argsort(hilbert_index(qx, qy, order), kind="stable")
