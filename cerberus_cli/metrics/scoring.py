"""Turn samples into a :class:`Report`: which metrics, and how they are averaged.

Metric names (``--metric``): ``dice``, ``pq`` (gives PQ, DQ, SQ), ``aji``, ``aji+``,
``mpq``, ``mpq+``, ``detection`` (F1_d, type accuracy, per-class F1) and the GlaS
gland metrics ``object-f1`` (keys ``object_f1``, ``object_precision``,
``object_recall``; per image also ``object_tp/fp/fn``), ``object-dice``
(``object_dice``) and ``object-hausdorff`` (``object_hausdorff``, px), with
``glas`` = those three (:mod:`~cerberus_cli.metrics.glas`), for instance tasks;
``all`` = every one that the inputs allow (class metrics need classes; the GlaS
metrics are part of ``all`` for the gland task only, and may be asked for by name
for any instance task).

Dataset-level values: Dice, PQ/DQ/SQ, AJI and AJI+ are per-image means (images
where a value is undefined, e.g. both maps empty, are skipped and counted);
mPQ per class averages over images holding the class in the truth, then over
classes; mPQ+ and the detection scores pool counts over all images, and so do the
GlaS metrics (TP/FP/FN summed; object Dice and Hausdorff weighted by area over all
objects of all images, the challenge's definition). Per-image values are kept for
every metric, so the per-image means are in the report's summary too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from cerberus_cli.core.errors import InputError
from cerberus_cli.metrics.aji import aji_from_overlap, aji_plus_from_overlap
from cerberus_cli.metrics.detection import (
    DEFAULT_RADIUS,
    DetectionCounts,
    detection_counts,
)
from cerberus_cli.metrics.glas import GlasCounts, glas_counts
from cerberus_cli.metrics.pq import (
    class_pq_counts,
    image_mpq,
    mean_defined,
    mpq,
    mpq_plus,
    pq_counts,
)
from cerberus_cli.metrics.report import Report
from cerberus_cli.metrics.samples import Sample

#: The GlaS challenge metrics (``glas`` asks for all three).
GLAS_METRICS = ("object-f1", "object-dice", "object-hausdorff")
INSTANCE_METRICS = ("dice", "pq", "aji", "aji+", "mpq", "mpq+", "detection", *GLAS_METRICS)
CLASS_METRICS = ("mpq", "mpq+")
#: Names that stand for several metrics.
ALIASES = {"glas": GLAS_METRICS}
#: Tasks whose ``all`` includes the GlaS metrics.
GLAS_TASKS = ("gland",)
#: Per-image keys whose dataset value is the per-image mean.
_MEAN_KEYS = ("dice", "pq", "dq", "sq", "aji", "aji+")


def instance_metric_names(requested: Iterable[str], has_classes: bool,
                          task: str = "nuclei") -> list[str]:
    """Expand ``all`` and ``glas``, check names and order them.

    ``all`` leaves out the class metrics when the inputs carry no classes; asking
    for one of them explicitly is then an error (raised by :func:`score_samples`).
    ``all`` holds the GlaS metrics for the tasks of :data:`GLAS_TASKS` only; metrics
    named beside ``all`` are added to it.
    """
    requested = [m.lower() for m in requested] or ["all"]
    unknown = [m for m in requested
               if m != "all" and m not in INSTANCE_METRICS and m not in ALIASES]
    if unknown:
        raise InputError(f"unknown metric {unknown[0]!r}; choose from "
                         f"{', '.join(INSTANCE_METRICS)}, {', '.join(ALIASES)} or all")
    wanted = {n for m in requested if m != "all" for n in ALIASES.get(m, (m,))}
    if "all" in requested:  # with any named besides (``-m all -m glas`` for nuclei)
        wanted |= {m for m in INSTANCE_METRICS if (has_classes or m not in CLASS_METRICS)
                   and (task in GLAS_TASKS or m not in GLAS_METRICS)}
    return [m for m in INSTANCE_METRICS if m in wanted]


def score_samples(samples: Sequence[Sample], task: str, metrics: Sequence[str],
                  class_names: Sequence[str], threshold: float = 0.5,
                  radius: float = DEFAULT_RADIUS,
                  predictable: Sequence[int] | None = None) -> Report:
    """Compute ``metrics`` over ``samples``; ``class_names[c]`` names class id ``c``.

    Classes 1..len(class_names)-1 are evaluated (0 is no-label). ``predictable``
    (class ids the predictions can take, where that is not all of them: a truth
    scored through a class map) adds ``mpq_predictable`` and ``mpq+_predictable``,
    the means over those classes only. Raises
    :class:`InputError` when a class metric is asked for samples without classes,
    and ValueError when ``object-hausdorff`` is asked for samples built without
    their partner distances.
    """
    if not samples:
        raise InputError("nothing to evaluate: no paired images")
    want = set(metrics)
    classes = list(range(1, len(class_names)))
    unclassified = next((s.name for s in samples
                         if s.true_classes is None or s.pred_classes is None), None)
    if want & set(CLASS_METRICS) and unclassified is not None:
        raise InputError(f"{unclassified}: {'/'.join(sorted(want & set(CLASS_METRICS)))} needs "
                         "classes for truth and prediction (class maps or Lizard .mat files)")
    report = Report(task=task, metrics=list(metrics))
    per_class_counts = []
    detection = DetectionCounts()
    glas = GlasCounts()
    want_glas = bool(want & set(GLAS_METRICS))
    hausdorff = "object-hausdorff" in want
    for s in samples:
        row: dict = {"image": s.name, "n_true": s.overlap.n_true, "n_pred": s.overlap.n_pred}
        if "dice" in want:
            row["dice"] = s.dice
        if "pq" in want:
            pqc = pq_counts(s.overlap, threshold)
            row.update(pq=pqc.pq, dq=pqc.dq, sq=pqc.sq, tp=pqc.tp, fp=pqc.fp, fn=pqc.fn)
        if "aji" in want:
            row["aji"] = aji_from_overlap(s.overlap)
        if "aji+" in want:
            row["aji+"] = aji_plus_from_overlap(s.overlap)
        # classes are present here: a class metric without them was refused above
        if want & set(CLASS_METRICS) and s.true_classes is not None and s.pred_classes is not None:
            counts = class_pq_counts(s.overlap, s.true_classes, s.pred_classes, classes, threshold)
            per_class_counts.append(counts)
            if "mpq" in want:
                row["mpq"] = image_mpq(counts)
            if "mpq+" in want:
                row["mpq+"] = mpq_plus([counts]).value
        if "detection" in want:
            d = detection_counts(s.true_xy, s.pred_xy, s.true_classes, s.pred_classes, radius)
            detection = detection + d
            row["f1_d"] = d.f1
        if want_glas:
            if hausdorff and s.partner_distances is None:
                raise ValueError(f"{s.name}: sample built without Hausdorff partner distances")
            g = glas_counts(s.overlap, s.partner_distances if hausdorff else None)
            glas = glas + g
            if "object-f1" in want:
                row.update(object_f1=g.f1, object_tp=g.tp, object_fp=g.fp, object_fn=g.fn)
            if "object-dice" in want:
                row["object_dice"] = g.object_dice
            if hausdorff:
                row["object_hausdorff"] = g.object_hausdorff
        report.per_image.append(row)

    for key in _MEAN_KEYS:
        if any(key in r for r in report.per_image):
            report.overall[key] = report.image_summary(key).mean
    names = {c: class_names[c] for c in classes}
    if unclassified is None:
        for c in classes:
            report.per_class[names[c]] = {
                "n_true": int(sum(np.count_nonzero(s.true_classes == c) for s in samples)),
                "n_pred": int(sum(np.count_nonzero(s.pred_classes == c) for s in samples)),
            }
    for key, fn in (("mpq", mpq), ("mpq+", mpq_plus)):
        if key not in want:
            continue
        m = fn(per_class_counts)
        report.overall[key] = m.value
        if predictable is not None:
            report.overall[f"{key}_predictable"] = mean_defined(m.per_class[c] for c in predictable)
        for c in classes:
            report.per_class[names[c]][key] = m.per_class[c]
    if "detection" in want:
        report.overall["f1_d"] = detection.f1
        if unclassified is None:
            report.overall["type_accuracy"] = detection.accuracy
            for c in classes:
                report.per_class[names[c]]["f1"] = detection.class_f1(c)
    if "object-f1" in want:
        report.overall.update(object_f1=glas.f1, object_precision=glas.precision,
                              object_recall=glas.recall)
    if "object-dice" in want:
        report.overall["object_dice"] = glas.object_dice
    if hausdorff:
        report.overall["object_hausdorff"] = glas.object_hausdorff
    report.settings.update(
        threshold=threshold, radius=radius, n_images=len(samples),
        n_both_empty=sum(s.overlap.n_true == 0 and s.overlap.n_pred == 0 for s in samples))
    return report
