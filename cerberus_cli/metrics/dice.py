"""Binary Dice coefficient of foreground masks.

Dice = 2 |T ∩ P| / (|T| + |P|), with foreground = any non-zero pixel, so instance
maps can be given directly. Both masks empty: undefined (NaN, skipped in averages,
like every metric here). Exactly one empty: 0. Shapes that differ are an error.
"""

from __future__ import annotations

import math

import numpy as np

from cerberus_cli.metrics.labels import check_same_shape


def dice_from_areas(inter: float, true_area: float, pred_area: float) -> float:
    """Dice from the intersection and the two foreground areas."""
    total = true_area + pred_area
    return math.nan if total == 0 else float(2.0 * inter / total)


def dice(true: np.ndarray, pred: np.ndarray) -> float:
    """Binary Dice of the non-zero pixels of two arrays of the same shape."""
    check_same_shape(true, pred)
    t = np.asarray(true) != 0
    p = np.asarray(pred) != 0
    return dice_from_areas(float(np.count_nonzero(t & p)), float(np.count_nonzero(t)),
                           float(np.count_nonzero(p)))
