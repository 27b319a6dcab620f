"""Train/validation splits: split files (patient- or image-level) and random splits.

A split file is a CSV/TSV text file of ``key,split`` rows, ``split`` one of
``train``, ``val`` or ``test``. A key names either an item (its image name) or a
group (a patient / source image: Lizard source slide, GlaS patient, PanNuke fold,
CoNIC source image), so listing patients splits at patient level. Items not listed
are training items; ``test`` items are used by neither.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from cerberus_cli.core.errors import InputError
from cerberus_cli.training.datasets import TaskDataset

SPLITS = ("train", "val", "test")


def read_split_file(path: str | Path) -> dict[str, str]:
    """Key -> split from a ``key,split`` CSV (or tab separated) file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such split file")
    text = path.read_text()
    delim = "\t" if "\t" in text.split("\n", 1)[0] else ","
    out: dict[str, str] = {}
    for n, row in enumerate(csv.reader(text.splitlines(), delimiter=delim), 1):
        if not row or not row[0].strip() or row[0].startswith("#"):
            continue
        if len(row) != 2:
            raise InputError(f"{path}: line {n}: expected 'key,split', got {row}")
        key, split = row[0].strip(), row[1].strip().lower()
        if n == 1 and split == "split":
            continue  # header
        if split not in SPLITS:
            raise InputError(f"{path}: line {n}: split must be one of {', '.join(SPLITS)}, got {row[1]!r}")
        out[key] = split
    if not out:
        raise InputError(f"{path}: split file lists no items")
    return out


def apply_split_file(ds: TaskDataset, split_file: str | Path) -> tuple[TaskDataset, TaskDataset | None]:
    """``(train, val)`` views of ``ds`` from a split file (``val`` None when empty)."""
    mapping = read_split_file(split_file)
    train: list[int] = []
    val: list[int] = []
    matched = 0
    for i in range(len(ds)):
        split = mapping.get(ds.name(i), mapping.get(ds.group(i), "train"))
        matched += ds.name(i) in mapping or ds.group(i) in mapping
        (train if split == "train" else val if split == "val" else []).append(i)
    if matched == 0:
        raise InputError(f"{split_file}: no key matches an item or patient of {ds.path} "
                         f"(e.g. item {ds.name(0)!r}, group {ds.group(0)!r})")
    if not train:
        raise InputError(f"{split_file}: leaves no training items in {ds.path}")
    return ds.subset(train), (ds.subset(val) if val else None)


def random_split(ds: TaskDataset, val_fraction: float, seed: int) -> tuple[TaskDataset, TaskDataset | None]:
    """Split by group (patient-level where the format knows patients), reproducibly."""
    if val_fraction <= 0:
        return ds, None
    groups = sorted({ds.group(i) for i in range(len(ds))})
    if len(groups) < 2:
        return ds, None
    rng = np.random.default_rng(seed)
    n_val = min(len(groups) - 1, max(1, int(round(val_fraction * len(groups)))))
    val_groups = set(rng.permutation(groups)[:n_val].tolist())
    train = [i for i in range(len(ds)) if ds.group(i) not in val_groups]
    val = [i for i in range(len(ds)) if ds.group(i) in val_groups]
    return ds.subset(train), ds.subset(val)
