"""Tissue-type maps of whole slides, compared as class regions (polygons).

``cerberus segment`` writes one polygon per connected tissue-type region and the
phantom ground truth does the same. Their agreement is measured by area: the
confusion matrix holds, for every (true class, predicted class), the area (px² at
level 0) where a true region of the one overlaps a predicted region of the other.
Background (class 0) is not drawn as regions, so true area covered by no predicted
region counts as predicted background, predicted area outside every true region
as true background, and area that neither side claims is not counted.

From the area confusion: accuracy (share of the counted area whose classes agree),
per-class F1, which here equals the Dice coefficient of the class areas, and their
mean over the tissue classes present (background and absent classes left out).
"""

from __future__ import annotations

import numpy as np
import shapely
from shapely import STRtree

from cerberus_cli.metrics.classification import (
    accuracy_from_confusion,
    f1_from_confusion,
)
from cerberus_cli.metrics.polygons import valid_geometries


def area_confusion(true_geoms: np.ndarray, true_classes: np.ndarray,
                   pred_geoms: np.ndarray, pred_classes: np.ndarray,
                   n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) overlap areas; rows true, columns predicted.

    Regions of one side are assumed not to overlap each other (true of region maps).
    """
    tg, pg = valid_geometries(true_geoms), valid_geometries(pred_geoms)
    tc = np.asarray(true_classes, dtype=np.int64)
    pc = np.asarray(pred_classes, dtype=np.int64)
    for name, c in (("true", tc), ("pred", pc)):
        if c.size and (c.min() < 0 or c.max() >= n_classes):
            raise ValueError(f"{name} region classes must lie in 0..{n_classes - 1}")
    cm = np.zeros((n_classes, n_classes), dtype=np.float64)
    at, ap = shapely.area(tg), shapely.area(pg)
    covered_t, covered_p = np.zeros(tg.size), np.zeros(pg.size)
    if tg.size and pg.size:
        ti, pj = STRtree(pg).query(tg, predicate="intersects")
        inter = shapely.area(shapely.intersection(tg[ti], pg[pj]))
        np.add.at(cm, (tc[ti], pc[pj]), inter)
        np.add.at(covered_t, ti, inter)
        np.add.at(covered_p, pj, inter)
    np.add.at(cm[:, 0], tc, np.maximum(at - covered_t, 0.0))
    np.add.at(cm[0, :], pc, np.maximum(ap - covered_p, 0.0))
    return cm


def region_scores(cm: np.ndarray) -> tuple[float, np.ndarray, float]:
    """Accuracy, per-class F1 (= Dice by area) and mean F1 of an area confusion.

    Background agreement is never measured (neither side draws it), so its F1 is
    undefined (NaN) and the mean F1 runs over the tissue classes 1.. only.
    """
    f1 = f1_from_confusion(cm)
    f1[0] = np.nan
    defined = f1[~np.isnan(f1)]
    return accuracy_from_confusion(cm), f1, float(defined.mean()) if defined.size else float("nan")
