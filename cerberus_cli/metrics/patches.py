"""Tissue-type patch classification: ground-truth folders against a prediction table.

Ground truth: a folder with one sub-folder per class, named by Kather code
(``TUM``, ``STR``, ...), by tissue class name or by class id, holding the patch
images (the layout of ``cerberus synth tiles`` and of Kather-100K); or a CSV with
columns ``image`` and ``class_id``. Predictions: a CSV with an ``image`` column
(file stem) and ``class_id`` and/or one probability column per class,
``prob_0`` .. ``prob_8``. With probabilities, mAP is computed and ``class_id``
defaults to their arg-max.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cerberus_cli.core.errors import InputError
from cerberus_cli.core.vocabulary import KATHER_TO_TISSUE, TISSUE_TYPES
from cerberus_cli.metrics.classification import classification_metrics
from cerberus_cli.metrics.report import Report

PATCH_METRICS = ("accuracy", "f1", "map", "confusion")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


def _class_of_folder(name: str) -> int | None:
    if name.upper() in KATHER_TO_TISSUE:
        return KATHER_TO_TISSUE[name.upper()]
    names = [c.name for c in TISSUE_TYPES]
    if name.lower() in names:
        return names.index(name.lower())
    if name.isdigit() and int(name) < len(TISSUE_TYPES):
        return int(name)
    return None


def read_true_patches(path: str | os.PathLike) -> dict[str, int]:
    """Image stem -> true tissue class from a class-folder tree or a CSV."""
    p = Path(path)
    if p.is_file():
        return {k: int(v) for k, v in _read_csv(p, need=("image", "class_id"))[0].items()}
    if not p.is_dir():
        raise InputError(f"{p}: no such file or folder")
    if (p / "tissue").is_dir():
        p = p / "tissue"
    out: dict[str, int] = {}
    for sub in sorted(d for d in p.iterdir() if d.is_dir()):
        c = _class_of_folder(sub.name)
        if c is None:
            raise InputError(f"{sub}: folder name is not a tissue class (Kather code, name or id)")
        for f in sorted(sub.iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                if f.stem in out:
                    raise InputError(f"{f}: image name {f.stem!r} appears twice")
                out[f.stem] = c
    if not out:
        raise InputError(f"{p}: no patch images in class folders")
    return out


def _read_csv(path: Path, need: Sequence[str]) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """``image -> class_id`` (if present) and ``image -> probability row`` (if present)."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    cols = list(rows[0]) if rows else []
    for c in need:
        if c not in cols:
            raise InputError(f"{path}: missing column {c!r}")
    prob_cols = [f"prob_{k}" for k in range(len(TISSUE_TYPES))]
    has_probs = all(c in cols for c in prob_cols)
    if "class_id" not in cols and not has_probs:
        raise InputError(f"{path}: needs a class_id column or columns {prob_cols[0]}..{prob_cols[-1]}")
    ids: dict[str, float] = {}
    probs: dict[str, np.ndarray] = {}
    try:
        for i, r in enumerate(rows, start=2):
            key = r["image"]
            if key in ids or key in probs:
                raise InputError(f"{path}: line {i}: image {key!r} appears twice")
            if "class_id" in cols:
                ids[key] = int(r["class_id"])
            if has_probs:
                probs[key] = np.array([float(r[c]) for c in prob_cols])
    except ValueError as exc:
        raise InputError(f"{path}: line {i}: {exc}") from exc
    return ids, probs


def patch_metric_names(metrics: Sequence[str], with_map: bool = True) -> list[str]:
    """Expand ``all`` and check the names of tissue metrics (``map`` only if ``with_map``)."""
    allowed = PATCH_METRICS if with_map else tuple(m for m in PATCH_METRICS if m != "map")
    requested = [m.lower() for m in metrics] or ["all"]
    unknown = [m for m in requested if m != "all" and m not in allowed]
    if unknown:
        extra = " (mAP needs per-patch probabilities)" if unknown[0] == "map" else ""
        raise InputError(f"metric {unknown[0]!r} is not available here{extra}; choose from "
                         f"{', '.join(allowed)} or all")
    return list(allowed) if "all" in requested else [m for m in allowed if m in requested]


def evaluate_patches(true: str | os.PathLike, pred: str | os.PathLike,
                     metrics: Sequence[str] = ("all",), allow_missing: bool = False) -> Report:
    """Accuracy, mean F1, mAP and confusion matrix of tissue patch predictions."""
    chosen = patch_metric_names(metrics)
    truth = read_true_patches(true)
    pred_path = Path(pred)
    if not pred_path.is_file():
        raise InputError(f"{pred_path}: prediction table (CSV) not found")
    ids, probs = _read_csv(pred_path, need=("image",))
    predicted = set(ids) | set(probs)
    keys = sorted(set(truth) & predicted)
    missing = {"true_only": sorted(set(truth) - predicted), "pred_only": sorted(predicted - set(truth))}
    if (missing["true_only"] or missing["pred_only"]) and not allow_missing:
        k = (missing["true_only"] or missing["pred_only"])[0]
        side = "has no prediction in" if missing["true_only"] else "has no ground truth in"
        raise InputError(f"image {k!r} {side} {pred_path if missing['true_only'] else true}; "
                         "use --allow-missing to skip unpaired images")
    if not keys:
        raise InputError(f"no images pair between {true} and {pred_path}")
    if "map" in chosen and not probs:
        raise InputError(f"{pred_path}: mAP needs probability columns prob_0..prob_8")
    n = len(TISSUE_TYPES)
    t = np.array([truth[k] for k in keys])
    p = np.array([ids[k] for k in keys]) if ids else None
    pr = np.stack([probs[k] for k in keys]) if probs else None
    r = classification_metrics(t, p, pr, n_classes=n)
    report = Report(task="tissue", metrics=chosen)
    if "accuracy" in chosen:
        report.overall["accuracy"] = r.accuracy
    if "f1" in chosen:
        report.overall["mean_f1"] = r.mean_f1
    if "map" in chosen:
        report.overall["map"] = r.mean_ap
    for c, spec in enumerate(TISSUE_TYPES):
        d: dict[str, float] = {"n_true": int(r.confusion[c].sum())}
        if "f1" in chosen:
            d["f1"] = float(r.f1[c])
        if "map" in chosen:
            d["ap"] = float(r.ap[c])
        report.per_class[spec.name] = d
    if "confusion" in chosen:
        report.confusion = r.confusion.tolist()
    report.settings.update(true=str(true), pred=str(pred_path), n_images=len(keys),
                           unpaired=missing, classes=[c.name for c in TISSUE_TYPES])
    return report
