"""Annotated instance layouts as sources of patch tasks (read by ``cerberus patches``).

A source folder is the generic instance layout ``cerberus train`` reads: ``images/NAME.*``
(RGB), ``instances/NAME.png`` (8- or 16-bit ids, 0 = background), optional
``classes/NAME.png`` (per-pixel class) with ``classes.json`` (id -> name), and
``dataset.json`` with the native ``mpp``. What each task needs besides:

- nucleus type: ``classes/`` (a nucleus's label is the majority class over its pixels);
- gland grade: ``grade.csv`` (``name``, ``patient_id``, ``grade``; GlaS's original
  ``Grade.csv`` spelling ``patient ID`` / ``grade (GlaS)`` is read too);
- organ: a table of ``name``, ``organ`` (``organs.csv`` in the folder, or a file given).

Every check here runs before anything is written, so a bad folder is one error naming
the file, and no partial output.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cerberus_cli.core.class_maps import read_class_names
from cerberus_cli.core.errors import InputError
from cerberus_cli.training.dataset_base import image_files, read_label_png, read_rgb
from cerberus_cli.training.formats.generic import read_mpp

GRADE_FILE = "grade.csv"
ORGAN_FILE = "organs.csv"


@dataclass(frozen=True)
class SourceImage:
    """One annotated image of a source folder."""

    name: str                 # file stem: the image's name in grade / organ tables
    image: Path
    instances: Path
    classes: Path | None


@dataclass(frozen=True)
class Source:
    """One source folder, the split its patches go to, and its images."""

    folder: Path
    split: str
    mpp: float
    images: tuple[SourceImage, ...]
    class_names: dict[int, str] | None


@dataclass(frozen=True)
class Objects:
    """The instances of one label map: ids, centroids and areas in native px.

    ``majority`` is the most frequent class > 0 over each object's pixels (0 where no
    pixel of the object is classed); None when no class map was given.
    """

    ids: np.ndarray       # int64 (N,)
    cy: np.ndarray        # float64 (N,)
    cx: np.ndarray        # float64 (N,)
    area: np.ndarray      # int64 (N,)
    majority: np.ndarray | None


def open_source(folder: str | Path, split: str, need_classes: bool,
                source_mpp: float | None) -> Source:
    """Check a source folder's layout and list its images (nothing is decoded yet).

    Raises:
        InputError: no such folder, no ``images/`` or ``instances/``, an image without
            its instance (or class) map, no resolution recorded and none given.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root}: no such folder")
    for sub in ("images", "instances") + (("classes",) if need_classes else ()):
        if not (root / sub).is_dir():
            why = " (nucleus-type patches need per-pixel classes)" if sub == "classes" else ""
            raise InputError(f"{root / sub}: no such folder (instance layout: images/, "
                             f"instances/, classes/){why}")
    mpp = read_mpp(root, math.nan)
    if math.isnan(mpp):
        if source_mpp is None:
            raise InputError(f"{root / 'dataset.json'}: no 'mpp' recorded for the images "
                             "(give --source-mpp)")
        mpp = source_mpp
    if not (math.isfinite(mpp) and mpp > 0):
        raise InputError(f"{root / 'dataset.json'}: 'mpp' must be positive, got {mpp}")
    instances = {p.stem: p for p in image_files(root / "instances")}
    classes = {p.stem: p for p in image_files(root / "classes")} if need_classes else {}
    images = []
    for img in image_files(root / "images"):
        inst = instances.get(img.stem)
        if inst is None:
            raise InputError(f"{img}: no instance map {root / 'instances' / (img.stem + '.png')}")
        cls = classes.get(img.stem) if need_classes else None
        if need_classes and cls is None:
            raise InputError(f"{img}: no class map {root / 'classes' / (img.stem + '.png')}")
        images.append(SourceImage(img.stem, img, inst, cls))
    if not images:
        raise InputError(f"{root / 'images'}: no images")
    return Source(root, split, mpp, tuple(images), read_class_names(root) if need_classes else None)


def _columns(path: Path, header: list[str], wanted: dict[str, tuple[str, ...]]) -> dict[str, int]:
    """Index of each wanted column (any of its accepted spellings, case-insensitive)."""
    names = [h.strip().lower() for h in header]
    out = {}
    for key, spellings in wanted.items():
        found = [names.index(s) for s in spellings if s in names]
        if not found:
            raise InputError(f"{path}: no column {spellings[0]!r} (has {', '.join(header)})")
        out[key] = found[0]
    return out


def _read_csv(path: Path) -> list[list[str]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [r for r in csv.reader(f) if any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: not a readable CSV file: {exc}") from None
    if not rows:
        raise InputError(f"{path}: empty file")
    return rows


def _check_names(path: Path, known: Collection[str], names: list[str], folder: Path) -> None:
    """Every image of the folder has a row in the table at ``path``."""
    missing = [n for n in names if n not in known]
    if missing:
        raise InputError(f"{path}: no row for image(s) {', '.join(missing[:3])}"
                         f"{' ...' if len(missing) > 3 else ''} of {folder}")


def read_grades(folder: Path, names: list[str]) -> dict[str, tuple[str, str]]:
    """``grade.csv`` of a GlaS-style folder: image name -> (patient, grade).

    Raises:
        InputError: no such file, missing columns, an empty patient or grade, an image
            of ``names`` without a row.
    """
    path = folder / GRADE_FILE
    if not path.is_file():
        alt = folder / "Grade.csv"  # the original Warwick-QU release's name
        if not alt.is_file():
            raise InputError(f"{path}: no such file (gland-grade patches need each image's "
                             "patient and grade)")
        path = alt
    rows = _read_csv(path)
    col = _columns(path, rows[0], {"name": ("name",), "patient": ("patient_id", "patient id"),
                                   "grade": ("grade", "grade (glas)")})
    out = {}
    for r in rows[1:]:
        values = {k: (r[i].strip() if i < len(r) else "") for k, i in col.items()}
        if not values["patient"] or not values["grade"]:
            raise InputError(f"{path}: image {values['name']!r} has no patient or no grade")
        out[Path(values["name"]).stem] = (values["patient"], values["grade"])
    _check_names(path, out.keys(), names, folder)
    return out


def read_organs(folder: Path, table: str | None, names: list[str]) -> dict[str, str]:
    """Image name -> organ, from ``table`` or ``organs.csv`` in the folder.

    Raises:
        InputError: no organ table (MoNuSeg's TCGA image names give the tissue source
            site, not the organ, so nothing is guessed), missing columns, empty organs,
            an image of ``names`` without a row.
    """
    path = Path(table) if table is not None else folder / ORGAN_FILE
    if not path.is_file():
        if table is not None:
            raise InputError(f"{path}: no such file")
        raise InputError(f"{path}: no such file, and no --organs table: the organ of "
                         f"{folder.name}'s images is not recorded (TCGA names give the tissue "
                         "source site, not the organ); give a CSV with columns name, organ")
    rows = _read_csv(path)
    col = _columns(path, rows[0], {"name": ("name", "image"), "organ": ("organ",)})
    out = {}
    for r in rows[1:]:
        name = r[col["name"]].strip() if col["name"] < len(r) else ""
        organ = r[col["organ"]].strip() if col["organ"] < len(r) else ""
        if not name or not organ:
            raise InputError(f"{path}: a row without a name or an organ ({','.join(r)})")
        out[Path(name).stem] = organ
    _check_names(path, out.keys(), names, folder)
    return out


def read_image(item: SourceImage) -> np.ndarray:
    """The RGB image of one source image (uint8, H x W x 3)."""
    return read_rgb(item.image)


def read_objects(item: SourceImage, shape: tuple[int, int]) -> Objects:
    """The objects of one image's instance map (and their majority class).

    Raises:
        InputError: a map whose size differs from the image's, negative ids.
    """
    inst = read_label_png(item.instances)
    if inst.shape != shape:
        raise InputError(f"{item.instances}: size {inst.shape} does not match its image {shape}")
    if inst.min() < 0:
        raise InputError(f"{item.instances}: negative instance ids")
    flat = inst.ravel().astype(np.int64)
    n = int(flat.max()) + 1
    area = np.bincount(flat, minlength=n)
    yy, xx = np.indices(shape)
    sy = np.bincount(flat, weights=yy.ravel(), minlength=n)
    sx = np.bincount(flat, weights=xx.ravel(), minlength=n)
    ids = np.flatnonzero(area)
    ids = ids[ids > 0]
    majority = None
    if item.classes is not None:
        cls = read_label_png(item.classes)
        if cls.shape != shape:
            raise InputError(f"{item.classes}: size {cls.shape} does not match its image {shape}")
        if cls.min() < 0 or cls.max() > 254:
            raise InputError(f"{item.classes}: class values must be 0..254")
        c = cls.ravel().astype(np.int64)
        k = int(c.max()) + 1
        keep = (flat > 0) & (c > 0)  # background class 0 inside a nucleus does not vote
        counts = np.bincount(flat[keep] * k + c[keep], minlength=n * k).reshape(n, k)
        # argmax takes the lowest class id on a tie; an object with no classed pixel gets 0.
        majority = np.where(counts.sum(axis=1) > 0, counts.argmax(axis=1), 0)[ids]
    a = area[ids]
    return Objects(ids, sy[ids] / a, sx[ids] / a, a, majority)
