"""A fitted probe on disk, in a safe format: the scikit-learn pipeline as ``probe.skops``
(skops refuses to build any type it was not told to trust, unlike pickle) and
``probe.json`` (classes, columns, the provenance of the features it was fitted on)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from cerberus_cli.core.errors import InputError, first_line

MODEL_FILE = "probe.skops"
INFO_FILE = "probe.json"
#: The only types a probe file may contain: our pipelines and the numpy values inside.
TRUSTED_PREFIXES = ("sklearn.", "numpy.", "builtins.")


def save_probe(folder: Path, model: Any, info: dict[str, Any]) -> None:
    """Write ``probe.skops`` and ``probe.json`` into ``folder`` (a temporary folder)."""
    import skops.io as sio

    sio.dump(model, folder / MODEL_FILE)
    (folder / INFO_FILE).write_text(json.dumps(info, indent=2))


def load_probe(folder: str | os.PathLike) -> tuple[Any, dict[str, Any]]:
    """The pipeline and info of a probe folder; refuses types outside scikit-learn/numpy."""
    import skops.io as sio

    folder = Path(folder)
    model_path, info_path = folder / MODEL_FILE, folder / INFO_FILE
    for p in (model_path, info_path):
        if not p.is_file():
            raise InputError(f"{p}: no such file (expected a folder written by 'cerberus probe')")
    try:
        info = json.loads(info_path.read_text())
        untrusted = sio.get_untrusted_types(file=model_path)
    except Exception as exc:  # noqa: BLE001 - zip/json/skops errors all mean a bad probe file
        raise InputError(f"{model_path}: not a readable probe ({first_line(exc)})") from None
    bad = [t for t in untrusted if not t.startswith(TRUSTED_PREFIXES)]
    if bad:
        raise InputError(f"{model_path}: refuses to load untrusted type(s) {', '.join(bad[:3])}")
    return sio.load(model_path, trusted=untrusted), info


def predict_frame(model: Any, info: dict[str, Any], columns: pd.DataFrame,
                  X: np.ndarray) -> pd.DataFrame:
    """The input's columns plus ``prediction`` and one ``score_<class>`` column per class."""
    classes = info["classes"]
    pred = model.predict(X)
    out = columns.copy()
    out["prediction"] = [classes[int(i)] for i in pred]
    if hasattr(model, "predict_proba") and info.get("classifier") != "svm":
        scores = model.predict_proba(X)
    else:
        d = np.asarray(model.decision_function(X))
        scores = np.stack([-d, d], axis=1) if d.ndim == 1 else d
    for i, name in enumerate(classes):
        out[f"score_{name}"] = scores[:, i].astype(np.float32)
    return out
