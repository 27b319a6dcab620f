"""Non-overlapping placement that is the same whichever window computes it.

Candidates come from a seeded point process on a global lattice of cells. Conflicts
are resolved by priority with an iterated Matern thinning: a candidate survives
round ``k`` if no higher-priority conflicting candidate survived round ``k-1``.
Odd rounds are conflict-free and approach random sequential packing; each round
depends only on candidates within one more conflict reach, so a window with margin
``(rounds + 1) * reach`` decides its interior exactly as any other window would.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial import cKDTree


def lattice_cells(x0: float, y0: float, x1: float, y1: float, cell: float) -> tuple[np.ndarray, np.ndarray]:
    """Integer coordinates of the global lattice cells overlapping a window."""
    cx = np.arange(math.floor(x0 / cell), math.floor(x1 / cell) + 1)
    cy = np.arange(math.floor(y0 / cell), math.floor(y1 / cell) + 1)
    gx, gy = np.meshgrid(cx, cy)
    return gx.ravel(), gy.ravel()


def close_pairs(x: np.ndarray, y: np.ndarray, reach: float) -> np.ndarray:
    """Index pairs ``(i, j)``, ``i < j``, of points closer than ``reach`` (K x 2)."""
    if len(x) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    tree = cKDTree(np.column_stack([x, y]))
    return tree.query_pairs(reach, output_type="ndarray").astype(np.int64)


def ellipse_extent(a: np.ndarray, b: np.ndarray, theta: np.ndarray,
                   ux: np.ndarray, uy: np.ndarray) -> np.ndarray:
    """Half-width of ellipses (semi-axes a along theta, b across) projected on unit u."""
    c, s = np.cos(theta), np.sin(theta)
    pa = ux * c + uy * s
    pb = -ux * s + uy * c
    return np.sqrt((a * pa) ** 2 + (b * pb) ** 2)


def ellipse_conflicts(x: np.ndarray, y: np.ndarray, a: np.ndarray, b: np.ndarray,
                      theta: np.ndarray, gap: float) -> np.ndarray:
    """Pairs of ellipses not proven apart (with ``gap`` px between them) (K x 2).

    Uses the separating axis along the line of centres: sufficient for
    disjointness, so kept pairs never overlap.
    """
    reach = 2 * float(a.max(initial=0)) + gap
    pairs = close_pairs(x, y, reach)
    if len(pairs) == 0:
        return pairs
    i, j = pairs[:, 0], pairs[:, 1]
    dx, dy = x[j] - x[i], y[j] - y[i]
    d = np.hypot(dx, dy) + 1e-9
    ux, uy = dx / d, dy / d
    need = ellipse_extent(a[i], b[i], theta[i], ux, uy) + ellipse_extent(a[j], b[j], theta[j], ux, uy) + gap
    return pairs[d < need]


def matern_keep(priority: np.ndarray, conflicts: np.ndarray, rounds: int) -> np.ndarray:
    """Boolean survivors of iterated Matern thinning (``rounds`` must be odd)."""
    if rounds % 2 == 0:
        raise ValueError("rounds must be odd to be conflict-free")
    n = len(priority)
    keep = np.ones(n, dtype=bool)
    if len(conflicts) == 0:
        return keep
    i, j = conflicts[:, 0], conflicts[:, 1]
    # Orient each pair as (loser, winner) by priority; ties broken by index.
    swap = priority[i] > priority[j]
    lo = np.where(swap, j, i)
    hi = np.where(swap, i, j)
    for _ in range(rounds):
        blocked = np.zeros(n, dtype=bool)
        blocked[lo[keep[hi]]] = True
        keep = ~blocked
    return keep
