"""One evaluated image (or slide) reduced to what the metrics need.

A :class:`Sample` holds the overlap table, the class of each instance (when known),
the centroids, the foreground Dice and, when asked for, the Hausdorff distance of
every object to its GlaS partner (the one metric that needs the pixels, so it is
computed while they are at hand). It is built from two label maps or from two
object tables (polygons), after which every metric is computed the same way.
Samples are small (no pixel arrays), so thousands fit in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import geopandas as gpd
import numpy as np

from cerberus_cli.core.errors import InputError
from cerberus_cli.metrics.dice import dice_from_areas
from cerberus_cli.metrics.glas import label_distances, polygon_distances
from cerberus_cli.metrics.labels import (
    Labels,
    centroids,
    compact,
    lookup_classes,
    vote_classes,
)
from cerberus_cli.metrics.overlap import Overlap, overlap_from_labels
from cerberus_cli.metrics.polygons import overlap_from_polygons, polygon_dice
from cerberus_cli.metrics.readers import MapFile


@dataclass(frozen=True)
class Sample:
    """Everything the metrics need from one image or slide."""

    name: str
    overlap: Overlap
    true_classes: np.ndarray | None
    pred_classes: np.ndarray | None
    true_xy: np.ndarray
    pred_xy: np.ndarray
    dice: float
    #: (true, pred) Hausdorff distance of each object to its GlaS partner, or None.
    partner_distances: tuple[np.ndarray, np.ndarray] | None = None


def instance_classes(labels: Labels, m: MapFile, n_classes: int, where: str) -> np.ndarray | None:
    """Class of each instance of a map: from its class table or class map.

    Maps without class information give None, except for tasks with a single
    object class (lumen), where every instance is class 1.
    """
    if m.class_table is not None:
        cls = lookup_classes(labels, *m.class_table, name=where)
        if cls.size and (cls.min() < 0 or cls.max() >= n_classes):
            raise InputError(f"{where}: class {int(cls.max())} outside 0..{n_classes - 1}")
        return cls
    if m.class_map is not None:
        return vote_classes(labels, m.class_map, n_classes, name=str(m.class_path or where))
    if n_classes == 2:
        return np.ones(labels.n, dtype=np.int64)
    return None


def sample_from_maps(name: str, true: MapFile, pred: MapFile, n_classes: int,
                     true_where: str = "true", pred_where: str = "pred",
                     hausdorff: bool = False, pred_to_truth: np.ndarray | None = None) -> Sample:
    """A sample from two label maps (``*_where`` name the files in error messages).

    ``n_classes`` is the number of truth classes (0 included). ``hausdorff`` also
    computes the GlaS partner distances (``object-hausdorff``). ``pred_to_truth``
    (:attr:`cerberus_cli.metrics.class_map.TruthClasses.lut`) translates predicted
    class ids, which then range over its length, into truth class ids.
    """
    if np.shape(true.instances) != np.shape(pred.instances):
        raise InputError(f"{pred_where}: shape {tuple(np.shape(pred.instances))} differs from "
                         f"{true_where} {tuple(np.shape(true.instances))}")
    lt = compact(true.instances, true_where)
    lp = compact(pred.instances, pred_where)
    ov = overlap_from_labels(lt, lp)
    n_pred_classes = n_classes if pred_to_truth is None else int(pred_to_truth.size)
    pred_classes = instance_classes(lp, pred, n_pred_classes, pred_where)
    if pred_classes is not None and pred_to_truth is not None:
        pred_classes = pred_to_truth[pred_classes]
    return Sample(
        name, ov,
        instance_classes(lt, true, n_classes, true_where),
        pred_classes,
        centroids(lt), centroids(lp),
        dice_from_areas(float(ov.inter.sum()), float(lt.areas.sum()), float(lp.areas.sum())),
        label_distances(lt, lp, ov) if hausdorff else None,
    )


def sample_from_objects(name: str, true: gpd.GeoDataFrame, pred: gpd.GeoDataFrame,
                        hausdorff: bool = False) -> Sample:
    """A sample from two object tables (``read_objects`` layout) of one task.

    ``hausdorff`` also computes the GlaS partner distances, on the polygons
    rasterised at level 0 (:class:`~cerberus_cli.metrics.glas.PolygonMasks`).
    """
    tg, pg = true.geometry.to_numpy(), pred.geometry.to_numpy()
    ov = overlap_from_polygons(tg, pg)
    return Sample(
        name, ov,
        true["class_id"].to_numpy(np.int64), pred["class_id"].to_numpy(np.int64),
        true[["centroid_x", "centroid_y"]].to_numpy(np.float64),
        pred[["centroid_x", "centroid_y"]].to_numpy(np.float64),
        polygon_dice(tg, pg, ov),
        polygon_distances(tg, pg, ov) if hausdorff else None,
    )

