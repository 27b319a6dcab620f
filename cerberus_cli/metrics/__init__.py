"""Metrics of the field, exact and fast (numpy/scipy only; no torch).

Binary Dice; PQ with DQ and SQ; mPQ and mPQ+; AJI and AJI+; nucleus detection and
classification F1 by centroid matching; patch classification accuracy, F1, mAP and
confusion matrix. Every instance metric works from one sparse overlap table
(:mod:`cerberus_cli.metrics.overlap`), built from label maps or from polygons.

Quick use::

    from cerberus_cli.metrics import panoptic_quality, dice, aji
    c = panoptic_quality(true_map, pred_map)       # c.pq, c.dq, c.sq, c.tp ...
"""

from cerberus_cli.metrics.aji import aji, aji_from_overlap, aji_plus, aji_plus_from_overlap
from cerberus_cli.metrics.classification import (
    ClassificationResult, average_precision, classification_metrics, confusion_matrix,
)
from cerberus_cli.metrics.detection import (
    DEFAULT_RADIUS, DetectionCounts, detection_counts, pair_centroids,
)
from cerberus_cli.metrics.dice import dice
from cerberus_cli.metrics.labels import Labels, centroids, compact, vote_classes
from cerberus_cli.metrics.matching import match_iou
from cerberus_cli.metrics.overlap import Overlap, overlap_from_labels, overlap_from_maps
from cerberus_cli.metrics.pq import (
    ClassPQ, PQCounts, class_pq_counts, image_mpq, mpq, mpq_plus, panoptic_quality, pq_counts,
)

__all__ = [
    "aji", "aji_from_overlap", "aji_plus", "aji_plus_from_overlap",
    "ClassificationResult", "average_precision", "classification_metrics", "confusion_matrix",
    "DEFAULT_RADIUS", "DetectionCounts", "detection_counts", "pair_centroids",
    "dice", "Labels", "centroids", "compact", "vote_classes", "match_iou",
    "Overlap", "overlap_from_labels", "overlap_from_maps",
    "ClassPQ", "PQCounts", "class_pq_counts", "image_mpq", "mpq", "mpq_plus",
    "panoptic_quality", "pq_counts",
]
