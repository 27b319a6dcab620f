"""The patch table: one row per sample, shared by every transfer command.

Columns: ``path`` (an image file) or ``slide`` + ``x`` + ``y`` (level-0 px of the patch
centre); optional ``mpp`` (um/px of that row's image or slide), ``label``, ``group``
(what must not be split across folds: patient, slide or image), ``split``
(``train``/``val``/``test``) and ``task``. Other columns pass through to the outputs.

A table is read from CSV, TSV or Parquet, or built from an image-folder tree
(``ROOT/CLASS/*.png`` or ``ROOT/SPLIT/CLASS/*.png``; group = file-name prefix before the
first ``_``, or the first capture group of ``group_regex``; when the prefix is the same
for every file, one group per image: its path under ROOT without the suffix).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd

from cerberus_cli.core.errors import InputError, first_line

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
SPLITS = ("train", "val", "test")
TABLE_SUFFIXES = (".csv", ".tsv", ".txt", ".parquet", ".pq")


def group_of(stem: str, group_regex: str | None = None) -> str:
    """Group of a file name: the text before the first ``_`` (Mormont et al.'s
    convention), or the first capture group (else the whole match) of ``group_regex``."""
    if group_regex is None:
        return stem.split("_", 1)[0]
    match = re.search(group_regex, stem)
    if match is None:
        raise InputError(f"{stem}: --group-regex {group_regex!r} does not match this file name")
    return match.group(1) if match.groups() else match.group(0)


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def table_from_folders(root: str | os.PathLike, group_regex: str | None = None) -> pd.DataFrame:
    """The patch table of ``ROOT/CLASS/*`` or ``ROOT/SPLIT/CLASS/*`` image folders.

    Groups: see :func:`group_of`; without ``group_regex``, a prefix shared by every file
    gives way to one group per image (``CLASS/stem`` or ``SPLIT/CLASS/stem``).
    """
    root = Path(root)
    subdirs = sorted(p for p in root.iterdir() if p.is_dir())
    if not subdirs:
        raise InputError(f"{root}: no class folders (expected ROOT/CLASS/*.png or ROOT/SPLIT/CLASS/*.png)")
    by_split = {p.name for p in subdirs} <= set(SPLITS)
    rows = []
    for top in subdirs:
        classes = sorted(p for p in top.iterdir() if p.is_dir()) if by_split else [top]
        for cls in classes:
            for img in _images(cls):
                row = {"path": str(img), "label": cls.name, "group": group_of(img.stem, group_regex)}
                if by_split:
                    row["split"] = top.name
                rows.append(row)
    if not rows:
        raise InputError(f"{root}: no images ({', '.join(IMAGE_SUFFIXES)}) in its class folders")
    if group_regex is None and len(rows) > 1 and len({r["group"] for r in rows}) == 1:
        # A prefix shared by every file names the data set, not a slide: one group per
        # image instead (the probe then warns that patches of one slide may leak).
        for row in rows:
            row["group"] = Path(row["path"]).relative_to(root).with_suffix("").as_posix()
    return pd.DataFrame(rows)


def _read_table_file(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        return pd.read_csv(path, sep="\t" if suffix in (".tsv", ".txt") else ",")
    except Exception as exc:  # noqa: BLE001 - pandas/pyarrow raise many types for a bad file
        first = first_line(exc)
        raise InputError(f"{path}: not a readable table: {first}") from None


def read_patch_table(source: str | os.PathLike, group_regex: str | None = None,
                     allow_group_overlap: bool = False) -> pd.DataFrame:
    """Read and check a patch table (or image-folder tree) from ``source``.

    Relative ``path`` and ``slide`` entries are taken relative to the table's folder.
    Without a ``group`` column every image (or slide) is its own group.

    Raises:
        InputError: unreadable table, missing columns, bad split names, a group in two
            splits (unless ``allow_group_overlap``), an empty table.
    """
    src = Path(source)
    if not src.exists():
        raise InputError(f"{src}: no such file or folder")
    if src.is_dir():
        table = table_from_folders(src, group_regex)
    else:
        if src.suffix.lower() not in TABLE_SUFFIXES:
            raise InputError(f"{src}: not a patch table (CSV, TSV or Parquet) or an image folder")
        table = _read_table_file(src)
        table = _resolve_paths(table, src)
    return check_patch_table(table, src, allow_group_overlap)


def _resolve_paths(table: pd.DataFrame, src: Path) -> pd.DataFrame:
    table = table.copy()
    for col in ("path", "slide"):
        if col in table.columns:
            table[col] = [str(v) if Path(str(v)).is_absolute() else str(src.parent / str(v))
                          for v in table[col]]
    return table


def check_patch_table(table: pd.DataFrame, src: str | os.PathLike,
                      allow_group_overlap: bool = False) -> pd.DataFrame:
    """Validate the columns of a patch table (see module docs) and fill ``group``."""
    if table.empty:
        raise InputError(f"{src}: the table has no rows")
    has_path = "path" in table.columns
    has_slide = {"slide", "x", "y"} <= set(table.columns)
    if not (has_path or has_slide):
        raise InputError(f"{src}: missing columns: need 'path', or 'slide', 'x' and 'y' "
                         f"(has {', '.join(map(str, table.columns))})")
    key = "path" if has_path else "slide"
    if table[key].isna().any():
        raise InputError(f"{src}: empty '{key}' in row {int(table[key].isna().to_numpy().argmax())}")
    if has_slide and not has_path:
        for col in ("x", "y"):
            if not pd.api.types.is_numeric_dtype(table[col]) or table[col].isna().any():
                raise InputError(f"{src}: column '{col}' must hold numbers (level-0 px)")
    if "mpp" in table.columns and (pd.to_numeric(table["mpp"], errors="coerce") <= 0).any():
        raise InputError(f"{src}: column 'mpp' must be positive um/px")
    table = table.copy()
    if "group" not in table.columns:
        table["group"] = table[key].astype(str)
    table["group"] = table["group"].astype(str)
    if "label" in table.columns:
        table["label"] = table["label"].astype(str)
    if "split" in table.columns:
        table["split"] = table["split"].astype(str).str.lower()
        bad = sorted(set(table["split"]) - set(SPLITS))
        if bad:
            raise InputError(f"{src}: unknown split value(s) {', '.join(bad)} "
                             f"(use {', '.join(SPLITS)})")
        if not allow_group_overlap:
            check_group_overlap(table, src)
    return table.reset_index(drop=True)


def check_group_overlap(table: pd.DataFrame, src: str | os.PathLike) -> None:
    """Raise when a group appears in two splits (leakage between train and test)."""
    spread = table.groupby("group")["split"].nunique()
    leaked = spread[spread > 1]
    if len(leaked):
        name = leaked.index[0]
        splits = sorted(set(table.loc[table["group"] == name, "split"]))
        raise InputError(f"{src}: group {name!r} appears in splits {', '.join(splits)} "
                         f"({len(leaked)} such group(s); leakage; --allow-group-overlap to accept)")
