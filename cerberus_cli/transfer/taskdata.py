"""Labelled patch tasks for training: read, checked, and held in memory as uint8 arrays.

A task comes from ``TASK=PATH`` (a patch table or image-folder tree, see
:mod:`cerberus_cli.transfer.table`) or from one table with a ``task`` column (then every
task value is a task). Each task must have rows, at least two classes in its training
split, and no label in ``val``/``test`` that its training split lacks. Rows without a
``split`` column are all training rows. Patches are read once at the model's mpp and
cut (or padded) to one side so that batches stack; small sets (phantoms, the few
thousand patches of a transfer task) fit in memory comfortably.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cerberus_cli.core.errors import CerberusError, InputError
from cerberus_cli.transfer.patches import PatchReader
from cerberus_cli.transfer.table import read_patch_table

#: Task names become module names of the heads: letters, digits, ``_`` and ``-``.
TASK_NAME = re.compile(r"^[A-Za-z0-9_-]+$")

#: ``progress(done, total)`` over the patches read; the library never prints.
Progress = Callable[[int, int], None]


@dataclass
class SplitData:
    """The patches of one split of one task."""

    images: np.ndarray  # (N, S, S, 3) uint8
    labels: np.ndarray  # (N,) int64 indices into the task's classes
    groups: np.ndarray  # (N,) str

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class TaskData:
    """One classification task: its classes (sorted; index = label id) and its splits."""

    name: str
    classes: list[str]
    source: str
    splits: dict[str, SplitData] = field(default_factory=dict)

    @property
    def train(self) -> SplitData:
        return self.splits["train"]


def parse_data_spec(text: str) -> tuple[str | None, str]:
    """``TASK=PATH`` -> (TASK, PATH); a bare ``PATH`` -> (None, PATH)."""
    task, sep, path = text.partition("=")
    if not sep:
        return None, text
    if not TASK_NAME.match(task):
        raise InputError(f"--data {text!r}: task names use letters, digits, '_' and '-'")
    if not path:
        raise InputError(f"--data {text!r}: no path after '='")
    return task, path


def task_tables(specs: list[tuple[str | None, str]], group_regex: str | None = None,
                allow_group_overlap: bool = False) -> dict[str, tuple[pd.DataFrame, str]]:
    """Task name -> (its rows, source) from ``--data`` specs.

    A spec without a task name must be a table with a ``task`` column.
    """
    out: dict[str, tuple[pd.DataFrame, str]] = {}
    for task, path in specs:
        table = read_patch_table(path, group_regex, allow_group_overlap)
        if "label" not in table.columns:
            raise InputError(f"{path}: no 'label' column (a patch table for training needs labels)")
        if task is None:
            if "task" not in table.columns:
                raise InputError(f"{path}: no 'task' column; give --data TASK={path}")
            parts = [(str(t), rows) for t, rows in table.groupby("task", sort=True)]
        else:
            parts = [(task, table)]
        for name, rows in parts:
            if not TASK_NAME.match(name):
                raise InputError(f"{path}: task name {name!r}: use letters, digits, '_' and '-'")
            if name in out:
                raise InputError(f"{path}: task {name!r} is given twice")
            out[name] = (rows.reset_index(drop=True), path)
    if not out:
        raise InputError("no training data: give --data TASK=TABLE_OR_FOLDER")
    return out


def check_task(name: str, rows: pd.DataFrame, source: str) -> list[str]:
    """The classes of a task (sorted), after the checks every trainer needs.

    Raises:
        InputError: no labelled rows, one class in training, or a val/test label the
            training split does not have.
    """
    rows = rows[rows["label"].notna()]
    if rows.empty:
        raise InputError(f"{source}: task {name!r} has no labelled rows")
    split = rows["split"].astype(str) if "split" in rows.columns else pd.Series("train", index=rows.index)
    train_labels = set(rows.loc[split == "train", "label"].astype(str))
    if not train_labels:
        raise InputError(f"{source}: task {name!r} has no rows in the train split")
    if len(train_labels) < 2:
        raise InputError(f"{source}: task {name!r} has one class ({next(iter(train_labels))!r}) "
                         "in its train split; a classifier needs at least two")
    for other in ("val", "test"):
        extra = set(rows.loc[split == other, "label"].astype(str)) - train_labels
        if extra:
            raise InputError(f"{source}: task {name!r}: label sets differ between splits: {other} has "
                             f"{', '.join(sorted(extra))}, which train lacks")
    return sorted(train_labels)


def _read_rows(rows: pd.DataFrame, reader: PatchReader, side: int) -> np.ndarray:
    from cerberus_cli.transfer.patches import fit_to

    records = rows.to_dict("records")
    out = np.empty((len(records), side, side, 3), np.uint8)
    slides: dict = {}
    for i, row in enumerate(records):
        try:
            out[i] = fit_to(reader.read(row, slides), side)
        except CerberusError as exc:
            raise InputError(str(exc)) from None
    return out


def load_task(name: str, rows: pd.DataFrame, source: str, reader: PatchReader,
              side: int) -> TaskData:
    """Check a task's rows and read its patches (``side`` px at the reader's mpp)."""
    classes = check_task(name, rows, source)
    rows = rows[rows["label"].notna()]
    index = {c: i for i, c in enumerate(classes)}
    split = rows["split"].astype(str) if "split" in rows.columns else pd.Series("train", index=rows.index)
    data = TaskData(name, classes, source)
    for part in ("train", "val", "test"):
        sub = rows[split == part]
        if sub.empty:
            continue
        groups = sub["group"].astype(str).to_numpy() if "group" in sub.columns \
            else np.asarray([str(v) for v in sub.get("path", sub.index)])
        data.splits[part] = SplitData(_read_rows(sub, reader, side),
                                      np.asarray([index[str(v)] for v in sub["label"]], np.int64),
                                      groups)
    return data


def load_tasks(specs: list[tuple[str | None, str]], reader: PatchReader, side: int,
               group_regex: str | None = None, allow_group_overlap: bool = False) -> list[TaskData]:
    """Every task of ``specs``, checked (all of them) before any patch is read."""
    tables = task_tables(specs, group_regex, allow_group_overlap)
    for name, (rows, source) in tables.items():
        check_task(name, rows, source)
    return [load_task(name, rows, source, reader, side) for name, (rows, source) in tables.items()]
