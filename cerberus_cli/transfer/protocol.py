"""The probe protocol on one data set: hyper-parameters chosen by stratified group k-fold
on the training part only, several seeds, test predictions from the test split or, when
there is none, from an outer grouped cross-validation (never used for selection)."""

from __future__ import annotations

import math
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from cerberus_cli.core.errors import InputError
from cerberus_cli.transfer.metrics import (
    METRICS,
    group_bootstrap,
    metrics,
    normalised_confusion,
)


@dataclass
class ProbeData:
    """One data set to probe: features, labels, groups, and which rows are test."""

    X: np.ndarray
    labels: np.ndarray       # str labels
    groups: np.ndarray       # str groups
    test: np.ndarray | None  # bool mask of test rows, None: outer grouped CV
    source: str              # the file(s), for messages
    warnings: list[str] = field(default_factory=list)  # carried into the report
    rows: np.ndarray | None = None  # identity of each row (uuid or path), to pair data sets


@dataclass
class TestPredictions:
    """What the protocol predicted on the test rows: enough to score two probes on the
    same rows (see :func:`cerberus_cli.transfer.metrics.paired_difference`)."""

    labels: np.ndarray       # class indices of the test rows
    preds: list[np.ndarray]  # one per seed
    scores: list[np.ndarray]  # one (N, K) per seed
    groups: np.ndarray
    rows: np.ndarray | None  # row identities, as in ProbeData.rows


def pipeline(classifier: str, seed: int, max_iter: int) -> tuple[Pipeline, dict[str, str]]:
    """Standardise + classifier, and the name of its tuned parameter."""
    from sklearn.linear_model import LogisticRegression

    if classifier == "svm":
        # The primal solver converges in tens of iterations on standardised features where
        # the dual one (sklearn's choice when rows < features) runs to max_iter.
        est: BaseEstimator = LinearSVC(C=1.0, dual=False, max_iter=max_iter, random_state=seed)
    elif classifier == "logreg":
        est = LogisticRegression(C=1.0, max_iter=max_iter, random_state=seed)
    else:
        est = KNeighborsClassifier()
    param = "clf__n_neighbors" if classifier == "knn" else "clf__C"
    return Pipeline([("scale", StandardScaler()), ("clf", est)]), {"param": param}


def _scores(model: Any, X: np.ndarray, k: int) -> np.ndarray:
    """(N, K) class scores: probabilities where the model has them, else decision values."""
    if hasattr(model, "predict_proba"):
        try:
            return np.asarray(model.predict_proba(X), np.float64)
        except AttributeError:
            pass
    d = np.asarray(model.decision_function(X), np.float64)
    return np.stack([-d, d], axis=1) if d.ndim == 1 else d.reshape(len(X), k)


def fold_count(folds: int, groups: np.ndarray, y: np.ndarray) -> int:
    """Folds of a stratified group k-fold on (groups, y): at most ``folds``, the groups, and
    the rows of the largest class (scikit-learn refuses more splits than that)."""
    return min(folds, len(np.unique(groups)), int(np.bincount(y).max()) if len(y) else 0)


def select_and_fit(X: np.ndarray, y: np.ndarray, groups: np.ndarray, classifier: str,
                   grid: tuple[float, ...] | tuple[int, ...], folds: int, seed: int,
                   max_iter: int) -> tuple[Pipeline, Any]:
    """Choose the hyper-parameter by stratified group k-fold on (X, y) alone, refit on all."""
    pipe, info = pipeline(classifier, seed, max_iter)
    values = list(grid)
    splits = fold_count(folds, groups, y)
    cv = StratifiedGroupKFold(n_splits=splits, shuffle=True, random_state=seed) if splits >= 2 else None
    if classifier == "knn":
        # k cannot exceed the rows of the smallest training fold (whole groups make the
        # folds uneven), nor those of the final fit.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            limit = min([len(y)] + ([len(tr) for tr, _ in cv.split(X, y, groups)] if cv else []))
        values = sorted({min(int(v), max(1, limit)) for v in values})
    if cv is None or len(values) == 1:
        pipe.set_params(**{info["param"]: values[0]})
        return pipe.fit(X, y), values[0]
    search = GridSearchCV(pipe, {info["param"]: values}, cv=cv, scoring="balanced_accuracy",
                          refit=True, n_jobs=1, error_score="raise")
    with warnings.catch_warnings():
        # Small folds may miss a class, and linear solvers may stop at max_iter: both are
        # expected in a search and do not change how the result is used.
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        search.fit(X, y, groups=groups)
    return search.best_estimator_, search.best_params_[info["param"]]


def check_data(data: ProbeData, classes: np.ndarray, allow_group_overlap: bool) -> None:
    """One-line errors for data the protocol cannot use."""
    train = ~data.test if data.test is not None else np.ones(len(data.labels), bool)
    if len(classes) < 2:
        raise InputError(f"{data.source}: only one class ({classes[0]!r}) in the training "
                         "data; a probe needs two or more")
    if data.test is not None:
        if not data.test.any():
            raise InputError(f"{data.source}: the test split is empty")
        unknown = sorted(set(data.labels[data.test]) - set(classes))
        if unknown:
            raise InputError(f"{data.source}: label(s) {', '.join(map(repr, unknown[:5]))} appear "
                             "in the test split only")
        shared = set(data.groups[train]) & set(data.groups[data.test])
        if shared and not allow_group_overlap:
            raise InputError(f"{data.source}: group {min(shared)!r} is in train and test "
                             f"({len(shared)} such group(s); leakage; --allow-group-overlap to accept)")
    elif len(np.unique(data.groups)) < 2:
        raise InputError(f"{data.source}: no test split and a single group: an outer grouped "
                         "cross-validation needs two or more groups")


def fit_and_score(data: ProbeData, classifier: str, grid: tuple, folds: int, seeds: int,
                  bootstrap: int, confidence: float, max_iter: int,
                  allow_group_overlap: bool = False) -> tuple[dict[str, Any], TestPredictions]:
    """Fit and score one classifier on ``data``: the result dict of the report, and the
    test predictions it was scored on."""
    train_mask = ~data.test if data.test is not None else np.ones(len(data.labels), bool)
    classes = np.unique(data.labels[train_mask])
    check_data(data, classes, allow_group_overlap)
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index.get(c, -1) for c in data.labels])
    k = len(classes)
    preds, scores, chosen, per_seed = [], [], [], []
    if data.test is not None:
        test_idx = np.flatnonzero(data.test)
        train_idx = np.flatnonzero(~data.test)
        for seed in range(seeds):
            model, value = select_and_fit(data.X[train_idx], y[train_idx], data.groups[train_idx],
                                          classifier, grid, folds, seed, max_iter)
            preds.append(model.predict(data.X[test_idx]))
            scores.append(_scores(model, data.X[test_idx], k))
            chosen.append({"seed": seed, "fold": None, "value": value})
        protocol = "test split; selection by grouped CV on train+val"
    else:
        test_idx = np.arange(len(y))
        n_outer = fold_count(folds, data.groups, y)
        for seed in range(seeds):
            pred = np.zeros(len(y), np.int64)
            score = np.zeros((len(y), k))
            outer = StratifiedGroupKFold(n_splits=n_outer, shuffle=True, random_state=1000 + seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                splits = list(outer.split(data.X, y, data.groups))
            for fold, (tr, te) in enumerate(splits):
                if len(np.unique(y[tr])) < k:
                    raise InputError(f"{data.source}: an outer fold's training part misses a class; "
                                     "too few groups per class for --folds "
                                     f"{folds} (lower it, or give a test split)")
                model, value = select_and_fit(data.X[tr], y[tr], data.groups[tr], classifier, grid,
                                              folds, seed, max_iter)
                pred[te] = model.predict(data.X[te])
                score[te] = _scores(model, data.X[te], k)
                chosen.append({"seed": seed, "fold": fold, "value": value})
            preds.append(pred)
            scores.append(score)
        protocol = f"outer {n_outer}-fold grouped CV; selection by grouped CV inside each fold"
    yt = y[test_idx]
    for seed, (p, s) in enumerate(zip(preds, scores)):
        per_seed.append({"seed": seed, **metrics(yt, p, s)})
    result: dict[str, Any] = {
        m: _mean([d[m] for d in per_seed]) for m in METRICS
    }
    ci = group_bootstrap(yt, preds, scores, data.groups[test_idx], bootstrap, confidence)
    for m in METRICS:
        result[f"{m}_ci"] = list(ci[m]) if m in ci else None
    counts = np.mean([np.bincount(yt * k + p, minlength=k * k).reshape(k, k) for p in preds], axis=0)
    norm = np.mean([normalised_confusion(yt, p, k) for p in preds], axis=0)
    result["confusion_matrix"] = {
        "labels": [str(c) for c in classes],
        "counts": counts.round(3).tolist(),
        "normalised": norm.round(4).tolist(),
        "normalised_ci_low": cast(np.ndarray, ci["confusion_low"]).round(4).tolist() if ci else None,
        "normalised_ci_high": cast(np.ndarray, ci["confusion_high"]).round(4).tolist() if ci else None,
    }
    result.update({
        "classifier": classifier,
        "protocol": protocol,
        "n_train": int(train_mask.sum()),
        "n_test": len(test_idx),
        "n_test_groups": len(np.unique(data.groups[test_idx])),
        "classes": [str(c) for c in classes],
        "seeds": seeds,
        "chosen": [_jsonable(c) for c in chosen],
        "chosen_mode": _jsonable(Counter(c["value"] for c in chosen).most_common(1)[0][0]),
        "per_seed": per_seed,
        "warnings": list(data.warnings),
    })
    rows = data.rows[test_idx] if data.rows is not None else None
    return result, TestPredictions(yt, preds, scores, data.groups[test_idx], rows)


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else None


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, np.generic):
        return v.item()
    return v
