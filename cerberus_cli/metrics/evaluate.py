"""Evaluate predictions against ground truth: the library behind ``cerberus evaluate``.

Three pairings of inputs, told apart by their files:

* label maps against label maps: folders of maps (PNG/BMP/TIFF/NPY/MAT) paired by
  file stem, with optional class maps (:mod:`cerberus_cli.metrics.readers`
  describes the accepted layouts), or one map file against another;
* object files written by ``cerberus segment`` or ``cerberus synth slide``
  (GeoParquet or GeoJSON; a single file or a folder of them) on both sides,
  filtered by task and matched as polygons (:mod:`cerberus_cli.metrics.polygons`).
  Slide files are paired by name with the format suffix and a ``.truth`` suffix
  removed (``slide.truth.parquet`` <-> ``slide.parquet``); two single files are
  paired whatever their names. Ground truth is taken as exhaustive over the whole
  slide: every prediction outside a true object counts;
* label maps as ground truth and object files as predictions (a dataset's
  ``instances/`` and ``cerberus segment``'s output folder): ``out/NAME.parquet``
  pairs with ``instances/NAME.png`` (one map file and one object file pair
  whatever their names). Each object file is rasterised onto its truth map's
  pixel grid, level-0 px being the image's own pixels as segment writes them
  (pixel centres inside the polygon,
  :func:`~cerberus_cli.metrics.polygons.rasterise_polygons`; segment's outlines
  follow pixel edges, so they give back exactly the pixels they were traced
  from), each object's class taken from its ``class_name``; the two maps are then
  scored exactly as two label maps are. An
  object beyond the map's bounds, or an object file recording an image of another
  size, is an error naming both files.

Predictions in finer classes than the truth's (CoNSeP's 4 coarse nucleus classes)
are scored in the truth's classes with a class map
(:mod:`cerberus_cli.metrics.class_map`, ``class_map="consep"``).

Example::

    from cerberus_cli.metrics.evaluate import evaluate
    report = evaluate("phantoms/", "predictions/", metrics=["pq", "mpq+"], task="nuclei")
    print(report.overall["pq"]); report.write("report.json")

GlaS gland metrics (:mod:`cerberus_cli.metrics.glas`)::

    report = evaluate("glas_truth/", "glas_pred/", metrics=["glas"], task="gland")
    report.overall["object_f1"], report.overall["object_dice"], report.overall["object_hausdorff"]

A CoNSeP-style dataset (``instances/``, ``classes/``, ``classes.json``) against the
outputs of ``cerberus segment DATASET/images --mpp 0.25 -o out/``::

    report = evaluate("consep_test/", "out/", metrics=["pq", "mpq"], class_map="consep")
    report.per_class["inflammatory"]["mpq"], report.overall["mpq_predictable"]
"""

from __future__ import annotations

import csv
import json
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
from cerberus_cli.metrics.class_map import TruthClasses, class_ids, load_class_map
from cerberus_cli.metrics.detection import DEFAULT_RADIUS
from cerberus_cli.metrics.pairing import (
    is_object_input,
    object_files,
    pair_by_name,
    pair_object_files,
)
from cerberus_cli.metrics.polygons import rasterise_polygons
from cerberus_cli.metrics.readers import (
    MapFile,
    MapSource,
    find_class_names,
    list_source,
    load_map,
    resolve_source,
)
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
             radius: float = DEFAULT_RADIUS, allow_missing: bool = False,
             class_map: str | None = None) -> Report:
    """Evaluate ``pred`` against ``true`` (label maps, slide object files, or maps vs objects).

    ``metrics``: names from :data:`~cerberus_cli.metrics.scoring.INSTANCE_METRICS`,
    ``glas`` (the three GlaS gland metrics) or ``all``; for ``task="tissue"`` see
    :func:`cerberus_cli.metrics.patches.evaluate_patches`. ``threshold`` is the PQ
    matching IoU (pairs need IoU above it); ``radius`` the centroid distance (px)
    for detection. Unpaired inputs are an error unless ``allow_missing``, in which
    case they are skipped and listed in ``report.settings``. ``class_map`` (a preset
    such as ``consep`` or a JSON file, :mod:`cerberus_cli.metrics.class_map`) scores
    the predictions in the classes of a label-map truth.
    """
    if task == "tissue":
        if class_map is not None:
            raise InputError("--class-map applies to instance tasks, not to tissue")
        if is_object_input(true) or is_object_input(pred):
            return evaluate_tissue_slides([true], [pred], metrics, allow_missing)
        from cerberus_cli.metrics.patches import evaluate_patches
        _check_patch_probabilities(Path(pred))
        return evaluate_patches(true, pred, metrics, allow_missing)
    true_objects, pred_objects = is_object_input(true), is_object_input(pred)
    if true_objects:
        if not pred_objects:
            raise InputError(f"{pred}: no object files; with object files as ground truth "
                             f"({true}) the predictions must be object files too")
        if true_classes is not None or pred_classes is not None:
            raise InputError("class map folders apply to label maps, not to slide object files")
        if class_map is not None:
            raise InputError("--class-map applies to a ground truth of label maps, not to "
                             "object files")
        return evaluate_slides([true], [pred], task, metrics, threshold, radius, allow_missing)
    if pred_objects:
        if pred_classes is not None:
            raise InputError(f"--pred-classes applies to label maps; the objects of {pred} "
                             "carry their class names")
        return evaluate_maps_objects(true, pred, task, metrics, true_classes, threshold,
                                     radius, allow_missing, class_map)
    return evaluate_folders(true, pred, task, metrics, true_classes, pred_classes,
                            threshold, radius, allow_missing, class_map)


def evaluate_folders(true: PathLike, pred: PathLike, task: str, metrics: Sequence[str],
                     true_classes: PathLike | None = None, pred_classes: PathLike | None = None,
                     threshold: float = 0.5, radius: float = DEFAULT_RADIUS,
                     allow_missing: bool = False, class_map: str | None = None) -> Report:
    """Evaluate folders of label maps paired by file stem (or one map file against another).

    ``class_map`` scores the predicted classes (the task's class ids) in the truth's
    classes (:mod:`cerberus_cli.metrics.class_map`).
    """
    _check_options(threshold, radius)
    hausdorff = _wants_hausdorff(metrics, task)
    ts = resolve_source(true, task, true_classes)
    ps = resolve_source(pred, task, pred_classes)
    classes = _truth_classes(true, task, metrics, class_map)
    names = list(classes.names) if classes else class_names(task)
    tmaps, tcls = list_source(ts)
    pmaps, pcls = list_source(ps)
    if ts.single and ps.single:
        stems, missing = [next(iter(tmaps))], _none_missing()
        pmaps = {stems[0]: next(iter(pmaps.values()))}
        pcls = {stems[0]: next(iter(pcls.values()))} if pcls else None
    else:
        stems, missing = pair_by_name(tmaps, pmaps, str(ts.instances), str(ps.instances),
                                      allow_missing)
    samples: list[Sample] = []
    for stem in stems:
        tpath, ppath = tmaps[stem], pmaps[stem]
        tm = load_map(tpath, _class_path(tcls, ts, stem, tpath))
        pm = load_map(ppath, _class_path(pcls, ps, stem, ppath))
        samples.append(sample_from_maps(stem, tm, pm, len(names), str(tpath), str(ppath),
                                        hausdorff, classes.lut if classes else None))
    extra = {"hausdorff": _HAUSDORFF_NOTE["maps"]} if hausdorff else {}
    return _finish(samples, task, metrics, names, threshold, radius, missing, classes, **extra,
                   true=str(ts.instances), pred=str(ps.instances),
                   true_classes=str(ts.classes) if ts.classes else None,
                   pred_classes=str(ps.classes) if ps.classes else None)


def evaluate_maps_objects(true: PathLike, pred: PathLike, task: str,
                          metrics: Sequence[str] = ("all",), true_classes: PathLike | None = None,
                          threshold: float = 0.5, radius: float = DEFAULT_RADIUS,
                          allow_missing: bool = False, class_map: str | None = None) -> Report:
    """Evaluate object files (``cerberus segment`` outputs) against label maps.

    ``true`` is a folder of label maps, a dataset root holding ``instances/`` (and
    ``classes/``), or one map file; ``pred`` a folder of object files (or one file).
    ``out/NAME.parquet`` pairs with the map ``NAME``; one map file and one object
    file pair whatever their names. Every object file is rasterised onto its truth
    map's grid (pixel centres inside the polygons; its objects must lie within the
    map) with each object's class from its ``class_name``, and the two maps are
    scored as :func:`evaluate_folders` scores two label maps.
    """
    from cerberus_cli.outputs.read import read_objects

    _check_options(threshold, radius)
    hausdorff = _wants_hausdorff(metrics, task)
    ts = resolve_source(true, task, true_classes)
    classes = _truth_classes(true, task, metrics, class_map)
    names = list(classes.names) if classes else class_names(task)
    tmaps, tcls = list_source(ts)
    pfiles = object_files([pred], task)
    if ts.single and Path(pred).is_file():
        stems, missing = [next(iter(tmaps))], _none_missing()
        pfiles = {stems[0]: next(iter(pfiles.values()))}
    else:
        stems, missing = pair_by_name(tmaps, pfiles, str(ts.instances), str(pred), allow_missing)
    samples: list[Sample] = []
    for stem in stems:
        tpath, ppath = tmaps[stem], pfiles[stem]
        tm = load_map(tpath, _class_path(tcls, ts, stem, tpath))
        objects = _task_objects(ppath, read_objects(ppath), task, "prediction")
        pm = objects_as_map(objects, np.shape(tm.instances), task, ppath, tpath)
        log.info("%s: %d predicted %s objects rasterised onto %s", stem, len(objects), task,
                 tpath.name)
        samples.append(sample_from_maps(stem, tm, pm, len(names), str(tpath), str(ppath),
                                        hausdorff, classes.lut if classes else None))
    extra = {"hausdorff": _HAUSDORFF_NOTE["maps"]} if hausdorff else {}
    return _finish(samples, task, metrics, names, threshold, radius, missing, classes, **extra,
                   true=str(ts.instances), pred=[str(pfiles[s]) for s in stems],
                   true_classes=str(ts.classes) if ts.classes else None,
                   matching="predicted polygons rasterised onto the truth maps (pixel centres)")


def objects_as_map(objects: pd.DataFrame, shape: tuple[int, ...], task: str,
                   where: PathLike, truth: PathLike) -> MapFile:
    """Objects of one task (``read_objects`` layout) as a label map of ``shape``.

    Object ``k`` (file order) becomes instance ``k + 1``, its class the id of its
    ``class_name`` in the task's class list. ``where``/``truth`` name the object
    file and the truth map in errors: objects beyond the map, an object file
    recording an image of another size, unknown class names, empty outlines.
    """
    if len(shape) != 2:
        raise InputError(f"{truth}: expected a 2-D label map, got shape {tuple(shape)}")
    h, w = int(shape[0]), int(shape[1])
    size = _image_size(Path(where))
    if size is not None and size != (w, h):
        raise InputError(f"{where}: objects of a {size[0]} x {size[1]} px image, but the ground "
                         f"truth {truth} is {w} x {h} px")
    try:
        raster = rasterise_polygons(objects.geometry.to_numpy(), (h, w))
    except InputError as exc:
        raise InputError(f"{where} does not fit the ground truth {truth}: {exc}") from None
    ids = class_ids(objects["class_name"].astype(str).tolist(), task, str(where))
    return MapFile(raster, class_table=(np.arange(1, len(objects) + 1), ids))


def _image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) of the image an object file was segmented from, where it records it.

    ``cerberus segment`` keeps it in the GeoParquet ``cerberus`` metadata; other
    files (GeoJSON, other tools) give None.
    """
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(path).metadata or {}
        slide = json.loads(meta.get(b"cerberus", b"{}")).get("slide") or {}
        return int(slide["width"]), int(slide["height"])
    except Exception:  # not GeoParquet, no or partial metadata: nothing recorded
        return None


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
    return _finish(samples, task, metrics, names, threshold, radius, missing, None,
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


def _class_path(listing: dict[str, Path] | None, source: MapSource, stem: str,
                instance_path: Path) -> Path | None:
    if listing is None:
        return None
    if stem not in listing:
        raise InputError(f"{source.classes}: no class map for {instance_path.name}")
    return listing[stem]


#: Uses of the truth's class ids: where a foreign classes.json needs a class map.
_CLASS_USES = ("mpq", "mpq+", "detection")


def _truth_classes(true: PathLike, task: str, metrics: Sequence[str],
                   class_map: str | None) -> TruthClasses | None:
    """The class map to score with; refuses a truth naming foreign classes without one.

    A ``classes.json`` beside the truth that names classes other than the task's
    would be read as the task's ids (CoNSeP's 2, inflammatory, as epithelial): with
    metrics that use classes, it needs ``class_map``.
    """
    found = find_class_names(true)
    if class_map is not None:
        return load_class_map(class_map, task, found)
    if found is None or not set(instance_metric_names(metrics, True, task)) & set(_CLASS_USES):
        return None
    where, named = found
    own = class_names(task)
    foreign = [i for i, n in sorted(named.items())
               if i > 0 and (i >= len(own) or n != own[i])]
    if foreign:
        i = foreign[0]
        raise InputError(f"{where}: the ground truth names class {i} {named[i]!r}, not cerberus' "
                         f"{task} class {own[i] if i < len(own) else 'id ' + str(i)!r}; score "
                         "its classes with --class-map (consep, or a JSON file of truth class "
                         "id -> predicted class names), or choose metrics without classes "
                         "(-m pq)")
    return None


def _none_missing() -> dict[str, list[str]]:
    """The unpaired lists of two single files (always paired)."""
    return {"true_only": [], "pred_only": []}


def _finish(samples: list[Sample], task: str, metrics: Sequence[str], names: list[str],
            threshold: float, radius: float, missing: dict,
            classes: TruthClasses | None = None, **settings) -> Report:
    has_classes = all(s.true_classes is not None and s.pred_classes is not None for s in samples)
    chosen = instance_metric_names(metrics, has_classes, task)
    report = score_samples(samples, task, chosen, names, threshold, radius,
                           predictable=classes.predictable if classes else None)
    if not has_classes and "all" in [m.lower() for m in metrics] and len(names) > 2:
        report.settings["not_computed"] = "mpq, mpq+ and per-class F1: inputs carry no classes"
        log.warning("no classes in the inputs: mpq, mpq+ and per-class F1 not computed")
    if classes is not None:
        report.settings["class_map"] = classes.describe()
        for t in classes.unpredictable:
            n_true = report.per_class.get(classes.names[t], {}).get("n_true", 0)
            if n_true:
                log.info("class map %s: no predicted class is %s; its %d true objects score "
                         "PQ 0", classes.name, classes.names[t], int(n_true))
    report.settings.update(settings)
    report.settings["unpaired"] = missing
    return report

