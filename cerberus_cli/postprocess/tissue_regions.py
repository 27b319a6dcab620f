"""Tissue-type regions: connected areas of one class of the tissue map, as records."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cerberus_cli.core.records import ObjectRecord, make_record
from cerberus_cli.core.vocabulary import TISSUE_TYPES, ClassSpec
from cerberus_cli.postprocess.chunks import object_uuid_from_moments
from cerberus_cli.postprocess.instances import label_components
from cerberus_cli.postprocess.polygons import label_polygons


def tissue_regions(classes: np.ndarray, scale: float, mpp: float,
                   specs: Sequence[ClassSpec] = TISSUE_TYPES, min_cells: int = 4,
                   confidence: np.ndarray | None = None, key: str = "",
                   skip: Sequence[int] = (0,)) -> list[ObjectRecord]:
    """Connected regions of each tissue class as records (task ``tissue``).

    ``scale`` is level-0 px per map pixel, ``mpp`` the slide's level-0 mpp.
    Regions under ``min_cells`` map pixels and classes in ``skip`` (background)
    are left out. ``probability`` is the region's mean ``confidence`` (1.0 when
    no confidence map is given). Holes (enclosed regions of other classes) are
    kept. UUIDs are deterministic (uuid5 of ``key``, task and pixel moments).
    """
    classes = np.asarray(classes)
    h, w = classes.shape
    records: list[ObjectRecord] = []
    for cid in range(len(specs)):
        if cid in skip:
            continue
        labels, n = label_components(classes == cid, min_cells)
        if n == 0:
            continue
        flat = labels.ravel()
        count = np.bincount(flat, minlength=n + 1)
        sx = np.rint(np.bincount(flat, weights=np.tile(np.arange(w, dtype=np.float64), h),
                                 minlength=n + 1)).astype(np.int64)
        sy = np.rint(np.bincount(flat, weights=np.repeat(np.arange(h, dtype=np.float64), w),
                                 minlength=n + 1)).astype(np.int64)
        if confidence is not None:
            conf = np.bincount(flat, weights=np.asarray(confidence, np.float64).ravel(),
                               minlength=n + 1) / np.maximum(count, 1)
        # Cell maps are staircases: only drop collinear points (DP would skew corners).
        geoms = label_polygons(labels, scale=scale, simplify=0.1)
        for i, geom in enumerate(geoms, start=1):
            if geom is None:
                continue
            prob = float(conf[i]) if confidence is not None else 1.0
            uid = object_uuid_from_moments(key, "tissue", int(count[i]), int(sx[i]), int(sy[i]))
            records.append(make_record(geom, "tissue", cid, specs[cid].name, prob, mpp, uuid=uid))
    return records
