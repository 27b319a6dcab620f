"""Find inputs and pair ground truth with predictions by name.

Label maps pair by file stem. Slide object files pair by slide name: the format
suffix (any of the object format table, :mod:`cerberus_cli.outputs.object_formats`:
``.parquet``, ``.geoparquet``, ``.geojson``, ``.geojson.gz``) and a ``.truth`` suffix
are removed, so ``slide.truth.parquet`` (``cerberus synth
slide``) pairs with ``slide.parquet`` (``cerberus segment``). A segment output
folder also holds ``slide.tissue.parquet`` (tissue-type regions): it is used for
the tissue task, in place of ``slide.parquet``, and ignored otherwise. Where a
slide has files of several formats, the table's first (GeoParquet) is used.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from cerberus_cli.core.errors import InputError
from cerberus_cli.outputs.object_formats import OBJECT_SUFFIXES, format_of_name, format_rank, suffix_of

PathLike = str | os.PathLike


def is_object_input(path: PathLike) -> bool:
    """True for an object file or a folder holding object files.

    Folders of label maps never hold GeoParquet/GeoJSON, while a ``cerberus
    segment`` output folder holds PNG overlays next to its object files.
    """
    p = Path(path)
    if p.is_file():
        return suffix_of(p) is not None
    return p.is_dir() and any(f.is_file() and suffix_of(f) for f in p.iterdir())


def slide_key(path: Path) -> str:
    """Slide name of an object file: ``a.truth.parquet`` and ``a.geojson.gz`` give ``a``."""
    suffix = suffix_of(path) or path.suffix
    base = path.name[: len(path.name) - len(suffix)]
    return base[: -len(".truth")] if base.endswith(".truth") else base


def object_files(paths: Iterable[PathLike], task: str) -> dict[str, Path]:
    """Slide name -> object file for the files and folders in ``paths``."""
    paths = list(paths)
    found: dict[str, tuple[int, Path]] = {}
    for entry in map(Path, paths):
        if entry.is_dir():
            files = [f for f in sorted(entry.iterdir()) if f.is_file() and suffix_of(f)]
        elif entry.is_file():
            if not suffix_of(entry):
                raise InputError(f"{entry}: not an object file ({', '.join(OBJECT_SUFFIXES)})")
            files = [entry]
        else:
            raise InputError(f"{entry}: no such file or folder")
        for f in files:
            key = slide_key(f)
            if key.endswith(".mask") and entry.is_dir():
                continue  # the tissue-detection mask of a segment output folder
            tissue_file = key.endswith(".tissue")
            if tissue_file:
                if task != "tissue" and entry.is_dir():
                    continue  # tissue regions of a segment output folder
                key = key[: -len(".tissue")]
            # Tissue regions beat the objects file for the tissue task; GeoParquet
            # beats the GeoJSON copy that synth and segment may write beside it.
            fmt = format_of_name(f)
            assert fmt is not None  # files hold object suffixes only
            rank = 2 * len(OBJECT_SUFFIXES) * tissue_file + format_rank(fmt)
            if key in found and found[key][0] == rank:
                raise InputError(f"{f}: a second object file for slide {key!r} ({found[key][1]})")
            if key not in found or rank > found[key][0]:
                found[key] = (rank, f)
    if not found:
        raise InputError(f"{names(paths)}: no object files found")
    return {k: f for k, (_, f) in found.items()}


def pair_by_name(true: dict[str, Path], pred: dict[str, Path], true_where: str,
                 pred_where: str, allow_missing: bool) -> tuple[list[str], dict[str, list[str]]]:
    """Names present on both sides, and the unpaired ones (an error unless allowed)."""
    stems = sorted(set(true) & set(pred))
    missing = {"true_only": sorted(set(true) - set(pred)),
               "pred_only": sorted(set(pred) - set(true))}
    n = len(missing["true_only"]) + len(missing["pred_only"])
    if n and not allow_missing:
        if missing["true_only"]:
            first = f"{true[missing['true_only'][0]]} has no prediction in {pred_where}"
        else:
            first = f"{pred[missing['pred_only'][0]]} has no ground truth in {true_where}"
        more = f" (and {n - 1} more unpaired)" if n > 1 else ""
        raise InputError(f"{first}{more}; use --allow-missing to skip unpaired files")
    if not stems:
        raise InputError(f"no files pair by name between {true_where} and {pred_where}")
    return stems, missing


def pair_object_files(true_paths: Iterable[PathLike], pred_paths: Iterable[PathLike], task: str,
                      allow_missing: bool) -> tuple[list[tuple[str, Path, Path]], dict[str, list[str]]]:
    """(slide name, true file, predicted file) triples; one file each side always pairs."""
    true_paths, pred_paths = list(true_paths), list(pred_paths)
    tfiles, pfiles = object_files(true_paths, task), object_files(pred_paths, task)
    if len(tfiles) == 1 and len(pfiles) == 1:
        (key, tpath), ppath = next(iter(tfiles.items())), next(iter(pfiles.values()))
        return [(key, tpath, ppath)], {"true_only": [], "pred_only": []}
    keys, missing = pair_by_name(tfiles, pfiles, names(true_paths), names(pred_paths),
                                 allow_missing)
    return [(k, tfiles[k], pfiles[k]) for k in keys], missing


def names(paths: Iterable[PathLike]) -> str:
    """Paths joined for a message."""
    return ", ".join(str(p) for p in paths)
