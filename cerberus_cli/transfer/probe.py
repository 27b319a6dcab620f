"""``probe``: the library function behind ``cerberus probe``.

Feature files -> data sets (one, or one per file with ``compare``) -> per task (the
``task`` column, when it has several values) the protocol of :mod:`protocol` for the
chosen classifier and a kNN baseline -> ``report.json``, ``report.csv`` and the fitted
probe (``probe.skops`` + ``probe.json``) in the output folder, written atomically.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cerberus_cli import __version__
from cerberus_cli.core.atomic import AtomicPath
from cerberus_cli.core.errors import CerberusError, InputError
from cerberus_cli.transfer.featurefile import provenance_of, read_features
from cerberus_cli.transfer.forward import Progress
from cerberus_cli.transfer.metrics import METRICS, paired_difference
from cerberus_cli.transfer.options import ProbeOptions
from cerberus_cli.transfer.probe_store import load_probe, predict_frame, save_probe
from cerberus_cli.transfer.protocol import ProbeData, TestPredictions, fit_and_score, select_and_fit

REPORT_JSON = "report.json"
REPORT_CSV = "report.csv"
PREDICTIONS = "predictions.parquet"


def load_set(paths: list[str], options: ProbeOptions,
             need_label: bool = True) -> tuple[pd.DataFrame, np.ndarray, dict[str, Any]]:
    """Concatenate feature files that hold the same features (same dimension and provenance)."""
    frames, blocks, first_meta = [], [], None
    for path in paths:
        columns, X, meta = read_features(path)
        if first_meta is None:
            first_meta, first = meta, path
        elif X.shape[1] != blocks[0].shape[1]:
            raise InputError(f"{path}: {X.shape[1]} features, but {first} has {blocks[0].shape[1]}")
        elif provenance_of(meta) != provenance_of(first_meta):
            diff = [k for k, v in provenance_of(meta).items() if provenance_of(first_meta)[k] != v]
            raise InputError(f"{path}: features of other provenance than {first} "
                             f"({', '.join(diff)} differ; --compare to probe them side by side)")
        if need_label and options.label not in columns.columns:
            raise InputError(f"{path}: missing column {options.label!r} (the label; --label names it)")
        columns = columns.copy()
        columns["_file"] = path
        frames.append(columns)
        blocks.append(X)
    table = pd.concat(frames, ignore_index=True)
    return table, np.concatenate(blocks), first_meta or {}


#: Said in the report (``warnings``) wherever every row is its own group.
LEAK_WARNING = ("each patch is its own group ({why}): patches of one slide or patient can sit on "
                "both sides of a split (cross-validation folds, or train and test), which "
                "inflates the scores; give a '{column}' column naming the patient or slide (image "
                "folders: --group-regex in 'cerberus features')")


def resolve_groups(table: pd.DataFrame, column: str) -> tuple[np.ndarray, str | None]:
    """The groups of a loaded set, and the leakage warning that applies to them.

    The ``column`` is used as it is unless it is missing or holds one value for every
    row (a folder-wide file prefix, say): then every row becomes its own group, so a
    grouped cross-validation can run. Both cases, and a column that differs on every
    row, give the warning.
    """
    n = len(table)
    per_row = (table["_file"].astype(str) + "#" + table.index.astype(str)).to_numpy()
    if column not in table.columns:
        return per_row, LEAK_WARNING.format(why=f"the table has no '{column}' column", column=column)
    groups = table[column].astype(str).to_numpy()
    distinct = len(np.unique(groups))
    if n > 1 and distinct == 1:
        why = f"'{column}' is {groups[0]!r} on every row, so each patch was made its own group"
        return per_row, LEAK_WARNING.format(why=why, column=column)
    if n > 1 and distinct == n:
        return groups, LEAK_WARNING.format(why=f"'{column}' differs on every row", column=column)
    return groups, None


def _lone_classes(labels: np.ndarray, groups: np.ndarray) -> list[str]:
    """Classes whose rows all sit in one group (sorted)."""
    spread = pd.DataFrame({"label": labels, "group": groups}).groupby("label")["group"].nunique()
    return sorted(str(c) for c in spread[spread < 2].index)


def probe_data(table: pd.DataFrame, X: np.ndarray, options: ProbeOptions, source: str) -> ProbeData:
    """The labels, groups and test rows of a loaded set (see :func:`resolve_groups`).

    Without a test split, classes held by a single group are left out (with a warning):
    an outer grouped cross-validation cannot both train on them and test them.
    """
    labels = table[options.label]
    if labels.isna().any():
        raise InputError(f"{source}: empty label in {int(labels.isna().sum())} row(s)")
    groups, leak = resolve_groups(table, options.group)
    warnings = [leak] if leak else []
    test = None
    if options.split in table.columns:
        split = table[options.split].astype(str).str.lower()
        bad = sorted(set(split) - {"train", "val", "test"})
        if bad:
            raise InputError(f"{source}: unknown split value(s) {', '.join(bad)} (train, val, test)")
        if (split == "test").any():
            test = (split == "test").to_numpy()
            if test.all():
                raise InputError(f"{source}: every row is in the test split; nothing to train on")
    y = labels.astype(str).to_numpy()
    rows = _row_identity(table)
    if test is None and len(np.unique(groups)) >= 2:
        lone = _lone_classes(y, groups)
        keep = ~np.isin(y, lone)
        if lone and len(np.unique(y[keep])) < 2:
            raise InputError(f"{source}: no test split, and the rows of class(es) "
                             f"{', '.join(map(repr, lone[:5]))} each sit in a single group: an outer "
                             "grouped cross-validation cannot train and test on them (give a test "
                             "split or more groups)")
        if lone:
            warnings.append(f"class(es) {', '.join(map(repr, lone[:10]))}"
                            f"{' ...' if len(lone) > 10 else ''} left out ({int((~keep).sum())} "
                            "row(s)): each sits in a single group, so an outer grouped "
                            "cross-validation cannot both train on it and test it")
            X, y, groups = X[keep], y[keep], groups[keep]
            rows = rows[keep] if rows is not None else None
    return ProbeData(X, y, groups, test, source, warnings, rows)


#: Columns that name a row (an object, a patch) the same way in every feature file of it.
ROW_KEYS = ("uuid", "path")


def _row_identity(table: pd.DataFrame) -> np.ndarray | None:
    """Each row's identity (its ``uuid`` or ``path`` and, for patches cut from one image,
    its position), or None when the table has no such column."""
    key = next((k for k in ROW_KEYS if k in table.columns), None)
    if key is None:
        return None
    ident = table[key].astype(str)
    for extra in ("x", "y"):
        if extra in table.columns:
            ident = ident + "@" + table[extra].astype(str)
    return ident.to_numpy()


def _tasks(table: pd.DataFrame) -> list[str | None]:
    if "task" in table.columns and table["task"].nunique() > 1:
        return sorted(table["task"].astype(str).unique())
    return [None]


def _grid(options: ProbeOptions, classifier: str) -> tuple:
    return options.k_grid if classifier == "knn" else options.c_grid


def _run(data: ProbeData, options: ProbeOptions,
         classifier: str) -> tuple[dict[str, Any], TestPredictions]:
    return fit_and_score(data, classifier, _grid(options, classifier), options.folds,
                         options.seeds, options.bootstrap, options.confidence, options.max_iter,
                         options.allow_group_overlap)


def _pairable(a: TestPredictions, b: TestPredictions) -> str | None:
    """Why two configurations' test predictions cannot be paired row by row (None: they can)."""
    if len(a.labels) != len(b.labels):
        return f"{len(a.labels)} and {len(b.labels)} test rows"
    if a.rows is None or b.rows is None:
        return "no 'uuid' or 'path' column names the rows"
    if not (np.array_equal(a.rows, b.rows) and np.array_equal(a.labels, b.labels)
            and np.array_equal(a.groups, b.groups)):
        return "the test rows, their labels or groups differ"
    return None


def differences(predictions: dict[str, dict[str, TestPredictions]], options: ProbeOptions
                ) -> tuple[dict[str, Any], list[str]]:
    """Each configuration minus the first, per task and metric, on the same test rows
    (paired group bootstrap); and why any pair was left out."""
    names = list(predictions)
    base_name = names[0]
    out: dict[str, Any] = {"baseline": base_name, "configurations": {}}
    skipped: list[str] = []
    for name in names[1:]:
        for task, other in predictions[name].items():
            base = predictions[base_name].get(task)
            why = "the baseline has no such task" if base is None else _pairable(base, other)
            if why is not None or base is None:
                skipped.append(f"{name}/{task}: no paired difference against {base_name} ({why})")
                continue
            out["configurations"].setdefault(name, {})[task] = paired_difference(
                base.labels, (base.preds, base.scores), (other.preds, other.scores), base.groups,
                options.bootstrap, options.confidence)
    return out, skipped


def _primary(result: dict[str, Any]) -> float:
    """Mormont et al.'s ranking metric: ROC AUC for binary tasks, accuracy otherwise."""
    key = "roc_auc" if len(result["classes"]) == 2 else "accuracy"
    value = result.get(key)
    return -math.inf if value is None else float(value)


def mean_ranks(results: dict[str, dict[str, dict[str, Any]]]) -> dict[str, float]:
    """Rank configurations within each task (1 = best, ties averaged), average over tasks."""
    configs = list(results)
    tasks = sorted({t for r in results.values() for t in r})
    ranks: dict[str, list[float]] = {c: [] for c in configs}
    for task in tasks:
        present = [c for c in configs if task in results[c]]
        values = pd.Series({c: _primary(results[c][task]) for c in present})
        for c, r in values.rank(ascending=False, method="average").items():
            ranks[c].append(float(r))
    return {c: float(np.mean(r)) for c, r in ranks.items() if r}


def _warnings(results: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """Every data set's warnings, prefixed by configuration and task where there are several."""
    out: list[str] = []
    for config, per_task in results.items():
        for task, res in per_task.items():
            where = [config] if len(results) > 1 else []
            where += [task] if len(per_task) > 1 else []
            prefix = f"{'/'.join(where)}: " if where else ""
            out.extend(prefix + w for w in res.get("warnings", []))
    return out


def _clean(obj: Any) -> Any:
    """JSON-safe copy: NaN -> None, numpy -> Python."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _csv_rows(results: dict[str, dict[str, dict[str, Any]]]) -> list[list[Any]]:
    rows = []
    for config, per_task in results.items():
        for task, res in per_task.items():
            for name, r in [(res["classifier"], res), *res.get("baselines", {}).items()]:
                for m in METRICS:
                    ci = r.get(f"{m}_ci") or [None, None]
                    rows.append([config, task, name, m, r.get(m), ci[0], ci[1]])
    return rows


def _fit_final(data: ProbeData, options: ProbeOptions, classes: list[str]) -> Any:
    """The probe to keep: selection and fit on every training row, seed 0."""
    train = ~data.test if data.test is not None else np.ones(len(data.labels), bool)
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[c] for c in data.labels[train]])
    model, _ = select_and_fit(data.X[train], y, data.groups[train], options.classifier,
                              _grid(options, options.classifier), options.folds, 0,
                              options.max_iter)
    return model


def _open_output(out_dir: Path, overwrite: bool) -> AtomicPath:
    if out_dir.is_dir() and not any(out_dir.iterdir()):
        out_dir.rmdir()  # an empty folder made beforehand is not a result to protect
    if out_dir.exists() and not overwrite:
        raise CerberusError(f"{out_dir}: already exists (--overwrite to replace its reports)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    target = AtomicPath(out_dir, overwrite=overwrite)
    target.tmp.mkdir()
    return target


def probe(paths: list[str], out_dir: str | os.PathLike, options: ProbeOptions,
          progress: Progress | None = None) -> dict[str, Any]:
    """Probe feature files (see ``cerberus probe --help``); returns the report dict."""
    if not paths:
        raise InputError("no feature file given")
    if options.predict is not None:
        return predict(paths, out_dir, options)
    sets = {Path(p).stem: [p] for p in paths} if options.compare else {"features": list(paths)}
    if options.compare and len(sets) != len(paths):
        raise InputError("--compare: feature files need distinct names (they name the configurations)")
    loaded = {name: load_set(files, options) for name, files in sets.items()}
    units = sum(len(_tasks(t)) for t, _, _ in loaded.values())
    results: dict[str, dict[str, dict[str, Any]]] = {}
    predictions: dict[str, dict[str, TestPredictions]] = {}
    final: tuple[Any, dict[str, Any]] | None = None
    done = 0
    for name, (table, X, meta) in loaded.items():
        source = ", ".join(sets[name])
        results[name] = {}
        for task in _tasks(table):
            rows = table if task is None else table[table["task"].astype(str) == task]
            data = probe_data(rows.reset_index(drop=True), X[rows.index.to_numpy()], options, source)
            res, test = _run(data, options, options.classifier)
            if options.knn_baseline and options.classifier != "knn":
                res["baselines"] = {"knn": _run(data, options, "knn")[0]}
            results[name][task or "all"] = res
            predictions.setdefault(name, {})[task or "all"] = test
            if not options.compare and task is None:
                info = {"classes": res["classes"], "classifier": options.classifier,
                        "chosen": res["chosen_mode"], "label": options.label,
                        "features": provenance_of(meta), "dim": int(X.shape[1]),
                        "package_version": __version__}
                final = (_fit_final(data, options, res["classes"]), info)
            done += 1
            if progress is not None:
                progress(done, units)
    first = next(iter(results.values()))
    report: dict[str, Any] = {}
    if len(first) == 1:
        report.update(next(iter(first.values())))
    else:
        for m in METRICS:
            vals = [r[m] for r in first.values() if r.get(m) is not None]
            report[m] = float(np.mean(vals)) if vals else None
        report["tasks"] = first
    report["warnings"] = _warnings(results)
    report["files"] = list(paths)
    report["options"] = {k: v for k, v in vars(options).items()}
    if options.compare:
        report["comparison"] = {c: {t: {m: r[m] for m in METRICS} for t, r in per.items()}
                                for c, per in results.items()}
        report["mean_rank"] = mean_ranks(results)
        report["differences"], skipped = differences(predictions, options)
        report["warnings"].extend(skipped)
        report["top_level"] = f"metrics of the first configuration ({next(iter(results))})"
    report["package_version"] = __version__
    report = _clean(report)
    target = _open_output(Path(out_dir), options.overwrite)
    try:
        (target.tmp / REPORT_JSON).write_text(json.dumps(report, indent=2))
        with open(target.tmp / REPORT_CSV, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["configuration", "task", "classifier", "metric", "value",
                             "ci_low", "ci_high"])
            writer.writerows(_clean(_csv_rows(results)))
        if final is not None:
            save_probe(target.tmp, *final)
        target.commit()
    except BaseException:
        target.abort()
        raise
    return report


def predict(paths: list[str], out_dir: str | os.PathLike, options: ProbeOptions) -> dict[str, Any]:
    """Apply a saved probe to feature files; writes ``OUT/predictions.parquet``."""
    model, info = load_probe(options.predict)  # type: ignore[arg-type]
    table, X, meta = load_set(paths, options, need_label=False)
    if X.shape[1] != info["dim"]:
        raise InputError(f"{paths[0]}: {X.shape[1]} features, the probe expects {info['dim']}")
    if provenance_of(meta) != info["features"]:
        raise InputError(f"{paths[0]}: features of other provenance than the probe was fitted on")
    frame = predict_frame(model, info, table.drop(columns=["_file"]), X)
    target = _open_output(Path(out_dir), options.overwrite)
    try:
        frame.to_parquet(target.tmp / PREDICTIONS, index=False)
        shutil.copy(Path(options.predict) / "probe.json", target.tmp / "probe.json")  # type: ignore[arg-type]
        target.commit()
    except BaseException:
        target.abort()
        raise
    return {"predictions": str(Path(out_dir) / PREDICTIONS), "rows": len(frame)}
