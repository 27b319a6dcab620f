"""The result of an evaluation: overall, per-class and per-image values.

A :class:`Report` is plain data. ``to_dict``/``to_json`` keep everything (NaN,
an undefined value, becomes ``null``); ``to_csv`` writes one long table with the
columns ``image, class, metric, value`` (empty image = whole set, empty class =
all classes), easy to load in pandas, R or a spreadsheet.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cerberus_cli.core.atomic import AtomicPath
from cerberus_cli.core.errors import InputError


@dataclass(frozen=True)
class Summary:
    """Mean and (population, ddof=0) standard deviation over the images where defined."""

    mean: float
    std: float
    n: int


@dataclass
class Report:
    """Metric values of one evaluation.

    ``overall`` holds the dataset-level value of each metric key (e.g. ``pq``,
    ``mpq+``, ``f1_d``); ``per_class`` maps class name -> key -> value;
    ``per_image`` is one dict per image (``image`` plus metric keys);
    ``settings`` records how it was computed (task, threshold, inputs, skipped).
    """

    task: str
    metrics: list[str]
    overall: dict[str, float] = field(default_factory=dict)
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)
    per_image: list[dict[str, Any]] = field(default_factory=list)
    confusion: list[list[float]] | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def image_summary(self, key: str) -> Summary:
        """Per-image mean and std of ``key`` over the images where it is defined."""
        v = np.array([r[key] for r in self.per_image if key in r and r[key] is not None
                      and not math.isnan(r[key])], dtype=np.float64)
        if v.size == 0:
            return Summary(math.nan, math.nan, 0)
        return Summary(float(v.mean()), float(v.std()), int(v.size))

    def to_dict(self) -> dict[str, Any]:
        """Everything as JSON-ready data (NaN -> None)."""
        per_image_keys = [k for k in self.overall if any(k in r for r in self.per_image)]
        return _clean({
            "task": self.task,
            "metrics": self.metrics,
            "overall": self.overall,
            "per_image_summary": {k: vars(self.image_summary(k)) for k in per_image_keys},
            "per_class": self.per_class,
            "confusion": self.confusion,
            "per_image": self.per_image,
            "settings": self.settings,
        })

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    def rows(self) -> list[tuple[str, str, str, float | None]]:
        """Long-format rows (image, class, metric, value)."""
        out: list[tuple[str, str, str, float | None]] = []
        out += [("", "", k, _num(v)) for k, v in self.overall.items()]
        out += [("", c, k, _num(v)) for c, d in self.per_class.items() for k, v in d.items()]
        out += [(str(r["image"]), "", k, _num(v)) for r in self.per_image
                for k, v in r.items() if k != "image"]
        return out

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["image", "class", "metric", "value"])
        for image, cls, metric, value in self.rows():
            w.writerow([image, cls, metric, "" if value is None else repr(value)])
        return buf.getvalue()

    def write(self, path: str | Path, overwrite: bool = False) -> list[Path]:
        """Write ``path`` (JSON, or CSV if it ends in ``.csv``) and its sibling CSV/JSON.

        ``report.json`` also writes ``report.csv`` and the other way round. Neither
        file is replaced unless ``overwrite``; both appear complete or not at all.
        """
        targets = report_paths(path)
        atomics = [AtomicPath(t, overwrite=overwrite) for t in targets]
        try:
            atomics[0].tmp.write_text(self.to_json())
            atomics[1].tmp.write_text(self.to_csv())
            return [a.commit() for a in atomics]
        except BaseException:
            for a in atomics:
                a.abort()
            raise


def _num(v: Any) -> float | None:
    if v is None:
        return None
    v = float(v)
    return None if math.isnan(v) else v


def _clean(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return None if math.isnan(float(x)) else float(x)
    return x


def report_paths(path: str | Path, overwrite: bool = True) -> list[Path]:
    """The JSON and CSV files a report named ``path`` becomes; checked before any work.

    Raises :class:`InputError` for a name without ``.json``/``.csv``, and (unless
    ``overwrite``) for report files that exist already.
    """
    path = Path(path)
    if path.suffix.lower() not in (".json", ".csv"):
        raise InputError(f"{path}: report name must end in .json or .csv")
    targets = [path.with_suffix(".json"), path.with_suffix(".csv")]
    if not overwrite:
        for t in targets:
            if t.exists():
                raise InputError(f"{t}: already exists (refusing to overwrite; use --overwrite)")
    if not targets[0].parent.is_dir():
        raise InputError(f"{path}: output folder {targets[0].parent} does not exist")
    return targets
