"""Evaluate predictions against ground truth: the library behind ``cerberus evaluate``.

Two kinds of input, told apart by their files:

* folders of label maps (PNG/TIFF/NPY/MAT) paired by file stem, with optional class
  maps (:mod:`cerberus_cli.metrics.readers` describes the accepted layouts);
* object files written by ``cerberus segment`` or ``cerberus synth slide``
  (GeoParquet or GeoJSON; a single file or a folder of them), filtered by task and
  matched as polygons (:mod:`cerberus_cli.metrics.polygons`). Slide files are paired
  by name with the format suffix and a ``.truth`` suffix removed
  (``slide.truth.parquet`` <-> ``slide.parquet``); two single files are paired
  whatever their names. Ground truth is taken as exhaustive over the whole slide:
  every prediction outside a true object counts.

Example::

    from cerberus_cli.metrics.evaluate import evaluate
    report = evaluate("phantoms/", "predictions/", metrics=["pq", "mpq+"], task="nuclei")
    print(report.overall["pq"]); report.write("report.json")

GlaS gland metrics (:mod:`cerberus_cli.metrics.glas`)::

    report = evaluate("glas_truth/", "glas_pred/", metrics=["glas"], task="gland")
    report.overall["object_f1"], report.overall["object_dice"], report.overall["object_hausdorff"]
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from cerberus_cli.core.errors import InputError
from cerberus_cli.core.vocabulary import (
    GLAND_TYPES,
    LUMEN_CLASSES,
    NUCLEUS_TYPES,
    TISSUE_TYPES,
)
from cerberus_cli.metrics.detection import DEFAULT_RADIUS
from cerberus_cli.metrics.pairing import (
    is_object_input,
    pair_by_name,
    pair_object_files,
)
from cerberus_cli.metrics.readers import list_maps, load_map, resolve_source
from cerberus_cli.metrics.report import Report
from cerberus_cli.metrics.samples import Sample, sample_from_maps, sample_from_objects
from cerberus_cli.metrics.scoring import instance_metric_names, score_samples

#: How the report describes the object Hausdorff distance of each kind of input.
_HAUSDORFF_NOTE = {
    "maps": "px between pixel centres of the object masks; an object with no object on "
            "the other side: the image diagonal",
    "polygons": "level-0 px between pixel centres of the rasterised polygons; an object "
                "with no object on the other side: the diagonal of all objects' extent",
}

log = logging.getLogger(__name__)

TASK_CLASSES = {"nuclei": NUCLEUS_TYPES, "gland": GLAND_TYPES, "lumen": LUMEN_CLASSES}
PathLike = str | os.PathLike


def class_names(task: str) -> list[str]:
    """Class names of an instance task (index = class id)."""
    if task not in TASK_CLASSES:
        raise InputError(f"unknown task {task!r}; choose from {', '.join(TASK_CLASSES)} or tissue")
    return [c.name for c in TASK_CLASSES[task]]


def evaluate(true: PathLike, pred: PathLike, metrics: Sequence[str] = ("all",),
             task: str = "nuclei", true_classes: PathLike | None = None,
             pred_classes: PathLike | None = None, threshold: float = 0.5,
             radius: float = DEFAULT_RADIUS, allow_missing: bool = False) -> Report:
    """Evaluate ``pred`` against ``true`` (folders of maps, or slide object files).

    ``metrics``: names from :data:`~cerberus_cli.metrics.scoring.INSTANCE_METRICS`,
    ``glas`` (the three GlaS gland metrics) or ``all``; for ``task="tissue"`` see
    :func:`cerberus_cli.metrics.patches.evaluate_patches`. ``threshold`` is the PQ
    matching IoU (pairs need IoU above it); ``radius`` the centroid distance (px)
    for detection. Unpaired inputs are an error unless ``allow_missing``, in which
    case they are skipped and listed in ``report.settings``.
    """
    if task == "tissue":
        if is_object_input(true) or is_object_input(pred):
            return evaluate_tissue_slides([true], [pred], metrics, allow_missing)
        from cerberus_cli.metrics.patches import evaluate_patches
        _check_patch_probabilities(Path(pred))
        return evaluate_patches(true, pred, metrics, allow_missing)
    if is_object_input(true) or is_object_input(pred):
        if true_classes is not None or pred_classes is not None:
            raise InputError("class map folders apply to label maps, not to slide object files")
        return evaluate_slides([true], [pred], task, metrics, threshold, radius, allow_missing)
    return evaluate_folders(true, pred, task, metrics, true_classes, pred_classes,
                            threshold, radius, allow_missing)


def evaluate_folders(true: PathLike, pred: PathLike, task: str, metrics: Sequence[str],
                     true_classes: PathLike | None = None, pred_classes: PathLike | None = None,
                     threshold: float = 0.5, radius: float = DEFAULT_RADIUS,
                     allow_missing: bool = False) -> Report:
    """Evaluate folders of label maps paired by file stem."""
    _check_options(threshold, radius)
    names = class_names(task)
    hausdorff = _wants_hausdorff(metrics, task)
    ts = resolve_source(true, task, true_classes)
    ps = resolve_source(pred, task, pred_classes)
    tmaps, pmaps = list_maps(ts.instances), list_maps(ps.instances)
    tcls = list_maps(ts.classes) if ts.classes else None
    pcls = list_maps(ps.classes) if ps.classes else None
    stems, missing = pair_by_name(tmaps, pmaps, str(ts.instances), str(ps.instances),
                                  allow_missing)
    samples: list[Sample] = []
    for stem in stems:
        tpath, ppath = tmaps[stem], pmaps[stem]
        tm = load_map(tpath, _class_path(tcls, ts.classes, stem, tpath))
        pm = load_map(ppath, _class_path(pcls, ps.classes, stem, ppath))
        samples.append(sample_from_maps(stem, tm, pm, len(names), str(tpath), str(ppath),
                                        hausdorff))
    extra = {"hausdorff": _HAUSDORFF_NOTE["maps"]} if hausdorff else {}
    return _finish(samples, task, metrics, names, threshold, radius, missing, **extra,
                   true=str(ts.instances), pred=str(ps.instances),
                   true_classes=str(ts.classes) if ts.classes else None,
                   pred_classes=str(ps.classes) if ps.classes else None)


def evaluate_slides(true_paths: Iterable[PathLike], pred_paths: Iterable[PathLike], task: str,
                    metrics: Sequence[str] = ("all",), threshold: float = 0.5,
                    radius: float = DEFAULT_RADIUS, allow_missing: bool = False) -> Report:
    """Evaluate slide object files (GeoParquet/GeoJSON) of one task as polygons.

    ``true_paths``/``pred_paths`` are files or folders of object files; one file on
    each side is paired whatever the names, otherwise files pair by slide name.
    """
    from cerberus_cli.outputs.read import read_objects

    _check_options(threshold, radius)
    names = class_names(task)
    hausdorff = _wants_hausdorff(metrics, task)
    pairs, missing = pair_object_files(true_paths, pred_paths, task, allow_missing)
    samples = []
    for key, tpath, ppath in pairs:
        t = _task_objects(tpath, read_objects(tpath), task, "ground truth")
        p = _task_objects(ppath, read_objects(ppath), task, "prediction")
        log.info("%s: %d true and %d predicted %s objects", key, len(t), len(p), task)
        try:
            samples.append(sample_from_objects(key, t, p, hausdorff))
        except InputError as exc:  # name the files (an empty outline for the Hausdorff)
            raise InputError(f"{tpath} vs {ppath}: {exc}") from exc
    extra = {"hausdorff": _HAUSDORFF_NOTE["polygons"]} if hausdorff else {}
    return _finish(samples, task, metrics, names, threshold, radius, missing,
                   true=[str(p) for _, p, _ in pairs], pred=[str(p) for _, _, p in pairs],
                   matching="polygons", **extra)


def evaluate_tissue_slides(true_paths: Iterable[PathLike], pred_paths: Iterable[PathLike],
                           metrics: Sequence[str] = ("all",),
                           allow_missing: bool = False) -> Report:
    """Compare slide tissue-type regions by area (:mod:`cerberus_cli.metrics.regions`).

    Overall values pool the area confusion of all slides; per-slide values are
    listed as images. The confusion matrix is in px² at level 0.
    """
    from cerberus_cli.metrics.patches import patch_metric_names
    from cerberus_cli.metrics.regions import area_confusion, region_scores
    from cerberus_cli.outputs.read import read_objects

    chosen = patch_metric_names(metrics, with_map=False)
    pairs, missing = pair_object_files(true_paths, pred_paths, "tissue", allow_missing)
    n = len(TISSUE_TYPES)
    total = np.zeros((n, n))
    report = Report(task="tissue", metrics=chosen)
    for key, tpath, ppath in pairs:
        t = _task_objects(tpath, read_objects(tpath), "tissue", "ground truth")
        p = _task_objects(ppath, read_objects(ppath), "tissue", "prediction")
        try:
            cm = area_confusion(t.geometry.to_numpy(), t["class_id"].to_numpy(),
                                p.geometry.to_numpy(), p["class_id"].to_numpy(), n)
        except ValueError as exc:
            raise InputError(f"{tpath} vs {ppath}: {exc}") from exc
        total += cm
        acc, _, mean_f1 = region_scores(cm)
        row: dict = {"image": key}
        if "accuracy" in chosen:
            row["accuracy"] = acc
        if "f1" in chosen:
            row["mean_f1"] = mean_f1
        report.per_image.append(row)
    acc, f1, mean_f1 = region_scores(total)
    if "accuracy" in chosen:
        report.overall["accuracy"] = acc
    if "f1" in chosen:
        report.overall["mean_f1"] = mean_f1
    for c, spec in enumerate(TISSUE_TYPES):
        report.per_class[spec.name] = {"area_true": float(total[c].sum()),
                                       "area_pred": float(total[:, c].sum())}
        if "f1" in chosen:
            report.per_class[spec.name]["f1"] = float(f1[c])
    if "confusion" in chosen:
        report.confusion = np.round(total, 3).tolist()
    report.settings.update(true=[str(p) for _, p, _ in pairs], pred=[str(p) for _, _, p in pairs],
                           n_images=len(pairs), unpaired=missing, matching="regions by area",
                           confusion_units="px^2 at level 0")
    return report


def _task_objects(path: Path, objects: pd.DataFrame, task: str, side: str) -> pd.DataFrame:
    """The objects of ``task`` in one object file, refused when they cannot be scored.

    Refused: a file that holds objects of other tasks but none of ``task`` (a model
    without that head, or tissue regions not written), objects stored as points
    (no outline to match), and NaN or infinite probabilities.
    """
    rows = objects[objects["task"] == task]
    if rows.empty and len(objects):
        present = ", ".join(sorted(set(objects["task"])))
        hint = ("; segment with --tissue-polygons to write tissue regions (S.tissue.parquet)"
                if task == "tissue" else "")
        raise InputError(f"{path}: {side} has no {task} objects (it holds {present}){hint}")
    if rows.empty:
        log.warning("%s: %s holds no objects", path, side)
    points = rows.geom_type.isin(["Point", "MultiPoint"]).to_numpy()
    if points.any():
        raise InputError(f"{path}: {int(points.sum())} {task} objects are points, not outlines "
                         "(written with --nuclei-geometry point?); polygon metrics need outlines")
    prob = rows["probability"].to_numpy(np.float64)
    bad = ~np.isfinite(prob)
    if bad.any():
        first = rows["uuid"].iloc[int(np.flatnonzero(bad)[0])]
        raise InputError(f"{path}: {int(bad.sum())} {task} objects have a NaN or infinite "
                         f"probability (first: {first})")
    return rows


def _check_patch_probabilities(path: Path) -> None:
    """Refuse NaN or infinite values in the ``prob_*`` columns of a patch prediction table."""
    if not path.is_file():
        return  # evaluate_patches says so
    with open(path, newline="") as fh:
        for line, row in enumerate(csv.DictReader(fh), start=2):
            for col, value in row.items():
                if col is None or not col.startswith("prob_") or value is None:
                    continue
                try:
                    ok = math.isfinite(float(value))
                except ValueError:
                    continue  # evaluate_patches names unparsable values
                if not ok:
                    raise InputError(f"{path}: line {line}: {col} is {value.strip()}; "
                                     "probabilities must be finite")


def _wants_hausdorff(metrics: Sequence[str], task: str) -> bool:
    """Whether ``metrics`` hold ``object-hausdorff`` (checks the names, before any reading)."""
    return "object-hausdorff" in instance_metric_names(metrics, True, task)


def _check_options(threshold: float, radius: float) -> None:
    if not 0.0 <= threshold < 1.0:
        raise InputError(f"IoU threshold must be in [0, 1), got {threshold}")
    if radius < 0:
        raise InputError(f"radius must be >= 0, got {radius}")


def _class_path(listing: dict[str, Path] | None, folder: Path | None, stem: str,
                instance_path: Path) -> Path | None:
    if listing is None:
        return None
    if stem not in listing:
        raise InputError(f"{folder}: no class map for {instance_path.name}")
    return listing[stem]


def _finish(samples: list[Sample], task: str, metrics: Sequence[str], names: list[str],
            threshold: float, radius: float, missing: dict, **settings) -> Report:
    has_classes = all(s.true_classes is not None and s.pred_classes is not None for s in samples)
    chosen = instance_metric_names(metrics, has_classes, task)
    report = score_samples(samples, task, chosen, names, threshold, radius)
    if not has_classes and "all" in [m.lower() for m in metrics] and len(names) > 2:
        report.settings["not_computed"] = "mpq, mpq+ and per-class F1: inputs carry no classes"
        log.warning("no classes in the inputs: mpq, mpq+ and per-class F1 not computed")
    report.settings.update(settings)
    report.settings["unpaired"] = missing
    return report

