"""The values of a type map: a class id, a set of classes, or unknown.

Type maps are uint8. ``0..SET_FLAG-1`` are class ids of the task's type head,
``IGNORE`` says the type is unknown (no loss), and ``SET_FLAG | bitmask`` is a coarse
label: one of the classes whose bits are set (:mod:`cerberus_cli.training.class_map`
makes them from a dataset's own classes). The encoding survives crops, warps and
nearest-neighbour resampling like any label.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Type-map value meaning "type unknown here": ignored by the type losses.
IGNORE = 255
#: Type-map values at or above this (and below IGNORE) are sets: the low bits are members.
SET_FLAG = 128
#: Type heads with more classes than this cannot be given sets (the bitmask has 7 bits).
MAX_SET_CLASSES = 7


def set_code(members: Sequence[int]) -> int:
    """The type-map value of a class set (a single member is its plain id)."""
    ids = sorted(set(int(m) for m in members))
    if not ids or min(ids) < 1 or max(ids) >= MAX_SET_CLASSES:
        raise ValueError(f"a class set holds ids 1..{MAX_SET_CLASSES - 1}, got {ids}")
    if len(ids) == 1:
        return ids[0]
    return SET_FLAG | sum(1 << i for i in ids)


def is_set(value: int) -> bool:
    return SET_FLAG <= value < IGNORE


def set_members(value: int) -> tuple[int, ...]:
    """The class ids a type-map value stands for (a plain id stands for itself)."""
    if is_set(value):
        return tuple(i for i in range(MAX_SET_CLASSES) if value & (1 << i))
    return (int(value),)


def membership_table(n_classes: int) -> np.ndarray:
    """Boolean (256, n_classes): which classes each type-map value allows.

    IGNORE allows none; a plain id only itself; a set its members.
    """
    table = np.zeros((256, n_classes), bool)
    for v in range(256):
        if v != IGNORE:
            table[v, [m for m in set_members(v) if m < n_classes]] = True
    return table
