"""Instance label maps: validation, compact relabelling, areas, classes, centroids.

Every instance metric starts here. A label map is any 2-D array of non-negative
integer ids (0 = background); ids need not be contiguous nor start at 1, and any
integer, boolean or integer-valued float dtype is accepted. Maps are relabelled to
compact ids ``1..n`` with one histogram pass (a lookup table) so that everything
downstream works on dense per-instance arrays and never loops over instances.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cerberus_cli.core.errors import InputError
from cerberus_cli.postprocess.types import vote_types

# A lookup table is used while it is no larger than this or than the map itself;
# beyond that (huge, sparse ids) the ids are sorted instead.
_LUT_LIMIT = 1 << 22


@dataclass(frozen=True)
class Labels:
    """A label map relabelled to compact ids.

    ``map`` holds 0 for background and ``1..n`` for the instances, ``ids[k]`` is the
    original id of compact instance ``k + 1`` (ascending) and ``areas[k]`` its pixel
    count.
    """

    map: np.ndarray
    ids: np.ndarray
    areas: np.ndarray

    @property
    def n(self) -> int:
        """Number of instances."""
        return int(self.ids.size)


def as_id_array(a: np.ndarray, name: str = "map") -> np.ndarray:
    """Check that ``a`` is a 2-D map of non-negative integer ids; return it as int64.

    Raises :class:`InputError` for other ranks, negative, non-finite or fractional
    values.
    """
    a = np.asarray(a)
    if a.ndim != 2:
        raise InputError(f"{name}: expected a 2-D label map, got shape {a.shape}")
    if a.dtype == bool:
        return a.astype(np.int64)
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or np.any(a != np.floor(a)):
            raise InputError(f"{name}: float label map holds non-integer values")
    elif a.dtype.kind not in "iu":
        raise InputError(f"{name}: label map dtype {a.dtype} is not numeric")
    if a.size and a.min() < 0:
        raise InputError(f"{name}: label map holds negative ids (min {a.min()})")
    if a.dtype.kind == "u" and a.size and int(a.max()) > np.iinfo(np.int64).max:
        raise InputError(f"{name}: ids above 2**63 are not supported")
    return a.astype(np.int64, copy=False)


def check_same_shape(true: np.ndarray, pred: np.ndarray, what: str = "maps") -> None:
    """Raise :class:`InputError` unless ``true`` and ``pred`` have the same shape."""
    if np.shape(true) != np.shape(pred):
        raise InputError(
            f"{what} differ in shape: true {tuple(np.shape(true))} vs pred {tuple(np.shape(pred))}"
        )


def compact(a: np.ndarray, name: str = "map") -> Labels:
    """Relabel a label map to compact ids 1..n (ascending original id order)."""
    a = as_id_array(a, name)
    flat = a.ravel()
    top = int(flat.max()) if flat.size else 0
    if top < max(_LUT_LIMIT, flat.size):
        counts = np.bincount(flat, minlength=top + 1)
        counts[0] = 0
        ids = np.flatnonzero(counts)
        lut = np.zeros(top + 1, dtype=np.int64)
        lut[ids] = np.arange(1, ids.size + 1)
        return Labels(lut[a], ids, counts[ids].astype(np.float64))
    values, inverse, counts = np.unique(flat, return_inverse=True, return_counts=True)
    if values[0] == 0:
        return Labels(inverse.reshape(a.shape), values[1:], counts[1:].astype(np.float64))
    return Labels((inverse + 1).reshape(a.shape), values, counts.astype(np.float64))


def vote_classes(labels: Labels, class_map: np.ndarray, n_classes: int,
                 name: str = "class map") -> np.ndarray:
    """Class of each instance by majority vote of a per-pixel class map.

    Class 0 (no-label / background) only wins when an instance has no pixel of any
    other class; ties go to the lower class id. Returns an int64 array of length
    ``labels.n``.
    """
    cls = as_id_array(class_map, name)
    if cls.shape != labels.map.shape:
        raise InputError(f"{name}: class map shape {cls.shape} differs from its instance map "
                         f"{labels.map.shape}")
    if cls.size and int(cls.max()) >= n_classes:
        raise InputError(f"{name}: holds class {int(cls.max())}, expected ids 0..{n_classes - 1}")
    classes, _ = vote_types(labels.map, cls, max(n_classes, 2), labels.n)
    return classes.astype(np.int64)


def lookup_classes(labels: Labels, ids: np.ndarray, classes: np.ndarray,
                   name: str = "map") -> np.ndarray:
    """Class of each instance from an explicit (id, class) table (Lizard ``.mat`` style).

    Raises :class:`InputError` when an instance id of the map has no entry.
    """
    ids = np.asarray(ids, dtype=np.int64).ravel()
    classes = np.asarray(classes, dtype=np.int64).ravel()
    if ids.size != classes.size:
        raise InputError(f"{name}: {ids.size} ids but {classes.size} classes")
    if labels.n == 0:
        return np.zeros(0, dtype=np.int64)
    if ids.size == 0:
        raise InputError(f"{name}: instance id {int(labels.ids[0])} has no class entry")
    order = np.argsort(ids, kind="stable")
    ids, classes = ids[order], classes[order]
    pos = np.minimum(np.searchsorted(ids, labels.ids), ids.size - 1)
    missing = labels.ids[ids[pos] != labels.ids]
    if missing.size:
        raise InputError(f"{name}: instance id {int(missing[0])} has no class entry")
    return classes[pos]


def centroids(labels: Labels) -> np.ndarray:
    """Centroid (x, y) in pixels of every instance, shape (n, 2); pixel centres at integers."""
    fg = labels.map > 0
    ys, xs = np.nonzero(fg)
    lab = labels.map[fg]
    n = labels.n + 1
    sx = np.bincount(lab, weights=xs, minlength=n)[1:]
    sy = np.bincount(lab, weights=ys, minlength=n)[1:]
    return np.stack([sx / labels.areas, sy / labels.areas], axis=1) if labels.n else np.zeros((0, 2))
