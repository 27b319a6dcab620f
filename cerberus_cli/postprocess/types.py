"""Object class by majority vote of a per-pixel type map."""

from __future__ import annotations

import numpy as np


def vote_types(labels: np.ndarray, type_map: np.ndarray, n_classes: int,
               n_objects: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Majority type of each object of ``labels`` (1..N) from ``type_map``.

    Class 0 (no-label) only wins when an object has no other vote. Ties go to
    the lower class id. The share is the winner's votes over the votes counted
    (the labelled pixels, or all pixels when none is labelled). One pass over
    the image (``bincount`` of label x class pairs); no per-object image scans.

    Returns ``(class_ids int16 (N,), shares float32 (N,))``, index i for label i+1.
    """
    if labels.shape != type_map.shape:
        raise ValueError(f"labels {labels.shape} and type map {type_map.shape} differ in shape")
    if n_classes < 2:
        raise ValueError(f"a type map needs at least 2 classes, got {n_classes}")
    n = int(labels.max()) if n_objects is None else int(n_objects)
    if n == 0:
        return np.zeros(0, np.int16), np.zeros(0, np.float32)
    lab = labels.ravel()
    sel = lab > 0
    types = type_map.ravel()[sel].astype(np.int64)
    types[types >= n_classes] = 0  # ids the head cannot produce count as no-label
    counts = np.bincount(lab[sel].astype(np.int64) * n_classes + types,
                         minlength=(n + 1) * n_classes).reshape(n + 1, n_classes)[1:]
    labelled = counts[:, 1:].sum(axis=1)
    has_label = labelled > 0
    best = np.where(has_label, counts[:, 1:].argmax(axis=1) + 1, 0)
    total = np.where(has_label, labelled, counts.sum(axis=1))
    share = counts[np.arange(n), best] / np.maximum(total, 1)
    return best.astype(np.int16), share.astype(np.float32)
