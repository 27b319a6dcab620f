"""Metrics of the field, exact and fast (numpy/scipy/shapely; no torch).

Every instance metric works from one sparse overlap table (areas of all instances,
intersections of touching pairs; :mod:`~cerberus_cli.metrics.overlap`), built from
label maps with one histogram pass, or from polygons with an STRtree query; the
GlaS object Hausdorff distance alone also reads each object's pixels.

Definitions (details in each module):

* Dice (:mod:`.dice`): 2|T∩P| / (|T|+|P|) of the non-zero pixels.
* PQ, DQ, SQ (:mod:`.pq`): unique pairs with IoU > threshold (0.5; Hungarian
  matching maximising total IoU below 0.5); DQ = TP/(TP+FP/2+FN/2), SQ = mean IoU
  of pairs, PQ = DQ x SQ; dataset value = mean over images.
* mPQ: per class, mean over the images whose truth holds the class, then mean over
  classes. mPQ+: per class TP, FP, FN, IoU pooled over images, then mean over classes.
* AJI, AJI+ (:mod:`.aji`): best-IoU pairing (AJI) or unique pairing (AJI+).
* Detection (:mod:`.detection`): centroids within a radius (6 px), F1_d, type
  accuracy and HoVer-Net's per-class F1.
* Patch classification (:mod:`.classification`): accuracy, F1 and mean F1, AP per
  class and mAP, confusion matrix.
* GlaS gland metrics (:mod:`.glas`): object F1 (a segmented object is a TP when it
  covers more than half of its most-overlapping truth object), object Dice and
  object Hausdorff (area-weighted over the partners of both sets; pixel-set
  Hausdorff, nearest object as partner when nothing overlaps; image diagonal when
  one side is empty); dataset values pooled over all objects of all images.

Edge cases, one rule throughout: a value with nothing to count (both maps empty;
a class absent from truth and prediction) is undefined, NaN (``null`` in JSON) and
left out of every average; if only one side is empty the value is 0 (a distance,
the object Hausdorff, is then the image diagonal). Ids need not
be contiguous nor start at 1, and any integer, boolean or integer-valued float
dtype is accepted; maps of different shapes are an :class:`InputError`.

Quick use::

    from cerberus_cli.metrics import panoptic_quality, dice, aji
    c = panoptic_quality(true_map, pred_map)       # c.pq, c.dq, c.sq, c.tp ...

For folders and slide outputs see :func:`cerberus_cli.metrics.evaluate.evaluate` (truth
paired with predictions by name, :mod:`.pairing`: object files of any format of
:mod:`cerberus_cli.outputs.object_formats`); it also scores ``cerberus segment``'s
object files against label maps (rasterised onto the maps' pixels,
:func:`~cerberus_cli.metrics.polygons.rasterise_polygons`) and, with a class map
(:mod:`.class_map`), predictions in the ground truth's own coarser classes.

The runner's modules, one job each:

* :mod:`.options`: the typed options of ``cerberus evaluate``; :mod:`.evaluate` the runner.
* :mod:`.readers`: truth and predicted label maps from folders, paired by file stem.
* :mod:`.labels`: label maps checked, compacted, with areas, classes and centroids.
* :mod:`.matching`: one-to-one matching of true and predicted instances.
* :mod:`.samples`: one evaluated image (or slide) reduced to what the metrics need.
* :mod:`.scoring`: samples into a report (which metrics, how they are averaged).
* :mod:`.report`: the result, overall, per class and per image.
* :mod:`.patches`: tissue-type patch classification against a prediction table.
* :mod:`.regions`: tissue-type maps of whole slides compared as class regions.
"""

from cerberus_cli.metrics.aji import (
    aji,
    aji_from_overlap,
    aji_plus,
    aji_plus_from_overlap,
)
from cerberus_cli.metrics.classification import (
    ClassificationResult,
    average_precision,
    classification_metrics,
    confusion_matrix,
)
from cerberus_cli.metrics.detection import (
    DEFAULT_RADIUS,
    DetectionCounts,
    detection_counts,
    pair_centroids,
)
from cerberus_cli.metrics.dice import dice
from cerberus_cli.metrics.glas import (
    GlasCounts,
    glas_counts,
    glas_metrics,
    mask_hausdorff,
    partner_distances,
)
from cerberus_cli.metrics.labels import Labels, centroids, compact, vote_classes
from cerberus_cli.metrics.matching import match_iou
from cerberus_cli.metrics.overlap import Overlap, overlap_from_labels, overlap_from_maps
from cerberus_cli.metrics.pq import (
    ClassPQ,
    PQCounts,
    class_pq_counts,
    image_mpq,
    mpq,
    mpq_plus,
    panoptic_quality,
    pq_counts,
)

__all__ = [
    "aji", "aji_from_overlap", "aji_plus", "aji_plus_from_overlap",
    "ClassificationResult", "average_precision", "classification_metrics", "confusion_matrix",
    "DEFAULT_RADIUS", "DetectionCounts", "detection_counts", "pair_centroids",
    "dice", "GlasCounts", "glas_counts", "glas_metrics", "mask_hausdorff", "partner_distances",
    "Labels", "centroids", "compact", "vote_classes", "match_iou",
    "Overlap", "overlap_from_labels", "overlap_from_maps",
    "ClassPQ", "PQCounts", "class_pq_counts", "image_mpq", "mpq", "mpq_plus",
    "panoptic_quality", "pq_counts",
]
