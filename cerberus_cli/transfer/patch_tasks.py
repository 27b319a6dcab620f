"""``make_patches``: real patch tasks cut from annotated instance layouts (``cerberus patches``).

Kinds (what a row is, its label and group):

- ``nuclei-type``: one patch centred on each nucleus; label = the class name
  (``classes.json``) of the majority class over the nucleus's pixels; group = the source
  image. Nuclei with no classed pixel are skipped (counted).
- ``gland-grade``: one patch centred on each gland (the centroid of its pixels); label =
  the image's grade from ``grade.csv``; group = ``patient-<id>`` from ``grade.csv``. The
  grade describes the glands' architecture, so patches sit on glands rather than on a
  grid that would also cut stroma-only and background patches.
- ``organ``: patches on a grid over each image (``--stride-um``, whole patches only; an
  image smaller than one patch gives one padded patch); label = the image's organ from
  an organ table; group = the source image.

Each source folder carries a split name (``train``/``val``/``test``); its rows keep it.
Images are resampled once from their native mpp to ``mpp`` (0.5 um/px) with the
trainer's resampler, and patches are cut from them; parts of a patch outside the image
are white (as when features pad a patch) and the row says ``padded``. The output folder
holds ``patches.csv`` (the patch table ``cerberus features`` reads), ``patches.json``
(sources, options, counts, warnings) and ``patches/SPLIT/IMAGE/*.png``; it appears
complete or not at all.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from cerberus_cli import __version__
from cerberus_cli.core.atomic import AtomicPath
from cerberus_cli.core.errors import CerberusError, InputError
from cerberus_cli.core.optionspec import check_choice, check_mpp, check_positive, opt, require
from cerberus_cli.training.resample import resample_image
from cerberus_cli.transfer.patch_sources import (
    Source,
    SourceImage,
    open_source,
    read_grades,
    read_image,
    read_objects,
    read_organs,
)
from cerberus_cli.transfer.table import SPLITS

PATCH_KINDS = ("nuclei-type", "gland-grade", "organ")
#: Patch side in um when --patch-um is not given: a nucleus with its neighbours; a gland
#: (or a tile) at the 224 px input side of the encoders.
DEFAULT_PATCH_UM = {"nuclei-type": 32.0, "gland-grade": 112.0, "organ": 112.0}
TABLE_NAME = "patches.csv"
META_NAME = "patches.json"
COLUMNS = ["path", "label", "group", "split", "task", "mpp", "image", "x", "y", "object", "padded"]

#: ``progress(done, total)`` after every source image; the library never prints.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class PatchesOptions:
    """What ``cerberus patches`` cuts from the source folders, and at which size."""

    kind: str = opt("nuclei-type", "Task: nuclei-type (a patch per nucleus, labelled with its "
                    "class), gland-grade (a patch per gland, labelled with its image's grade "
                    "from grade.csv, grouped by patient) or organ (a grid of patches per image, "
                    "labelled with its organ).", metavar="|".join(PATCH_KINDS))
    patch_um: float | None = opt(None, "Patch side in um [default: nuclei-type 32, "
                                 "gland-grade 112, organ 112].")
    mpp: float = opt(0.5, "um/px of the written patches (images are resampled to it).")
    stride_um: float | None = opt(None, "organ: step between grid patches in um [default: the "
                                  "patch side].")
    organs: str | None = opt(None, "organ: CSV with columns name, organ (image name -> organ) "
                             "[default: organs.csv in each source folder].", metavar="CSV")
    source_mpp: float | None = opt(None, "um/px of source images whose folder records none "
                                   "(dataset.json 'mpp').")
    overwrite: bool = opt(False, "Replace an existing output folder.")

    def __post_init__(self) -> None:
        check_choice("kind", self.kind, PATCH_KINDS)
        check_mpp(self.mpp)
        check_mpp(self.source_mpp, "--source-mpp")
        if self.patch_um is not None:
            check_positive("patch_um", self.patch_um)
        if self.stride_um is not None:
            check_positive("stride_um", self.stride_um)
        require(self.patch_px >= 16, f"--patch-um {self.side_um:g} is {self.patch_px} px at "
                f"{self.mpp:g} um/px; patches need 16 px or more")

    @property
    def side_um(self) -> float:
        """The patch side in um (given, or the kind's default)."""
        return self.patch_um if self.patch_um is not None else DEFAULT_PATCH_UM[self.kind]

    @property
    def patch_px(self) -> int:
        """The patch side in px at ``mpp``."""
        return max(1, round(self.side_um / self.mpp))

    @property
    def stride_px(self) -> int:
        """The grid step in px at ``mpp`` (organ)."""
        return max(1, round((self.stride_um or self.side_um) / self.mpp))


@dataclass
class PatchesSummary:
    """What ``make_patches`` wrote: the table, its rows and what was left out."""

    table: Path
    rows: int
    images: int
    counts: dict[str, dict[str, int]]      # split -> label -> patches
    skipped: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def parse_source(text: str) -> tuple[str, str]:
    """``SPLIT=DIR`` (split train, val or test) or a bare ``DIR`` (split train)."""
    split, sep, folder = text.partition("=")
    if not sep or Path(text).exists():
        return "train", text
    if split.lower() not in SPLITS:
        raise InputError(f"{text}: unknown split {split!r} (write SPLIT=DIR with SPLIT one of "
                         f"{', '.join(SPLITS)}, or a bare DIR for train)")
    if not folder:
        raise InputError(f"{text}: no folder after '='")
    return split.lower(), folder


def _labeller(kind: str, source: Source, options: PatchesOptions
              ) -> Callable[[SourceImage], tuple[str | None, str]]:
    """(image label, or None for per-object labels; group) of each image of ``source``."""
    names = [item.name for item in source.images]
    if kind == "gland-grade":
        grades = read_grades(source.folder, names)
        return lambda item: (grades[item.name][1], f"patient-{grades[item.name][0]}")
    if kind == "organ":
        organs = read_organs(source.folder, options.organs, names)
        return lambda item: (organs[item.name], item.name)
    return lambda item: (None, item.name)


def _crop(image: np.ndarray, cy: float, cx: float, side: int) -> tuple[np.ndarray, bool]:
    """The ``side`` x ``side`` patch centred on (cy, cx); white outside the image."""
    y0 = int(round(cy - (side - 1) / 2))
    x0 = int(round(cx - (side - 1) / 2))
    h, w = image.shape[:2]
    ya, yb, xa, xb = max(0, y0), min(h, y0 + side), max(0, x0), min(w, x0 + side)
    out = np.full((side, side, 3), 255, np.uint8)
    if ya < yb and xa < xb:
        out[ya - y0:yb - y0, xa - x0:xb - x0] = image[ya:yb, xa:xb]
    return out, not (ya == y0 and xa == x0 and yb == y0 + side and xb == x0 + side)


def _grid(length: int, side: int, stride: int) -> list[int]:
    """Starts of whole patches along one axis (one centred start when the image is smaller)."""
    if length <= side:
        return [(length - side) // 2]
    return list(range(0, length - side + 1, stride))


def _class_name(names: dict[int, str] | None, cls: int) -> str:
    return names.get(cls, str(cls)) if names else str(cls)


def _check_sources(sources: list[Source], kind: str) -> None:
    """Distinct folders, unique image names per split, one class naming across folders."""
    seen: dict[Path, str] = {}
    names: dict[tuple[str, str], Path] = {}
    for src in sources:
        key = src.folder.resolve()
        if key in seen:
            raise InputError(f"{src.folder}: given twice (as {seen[key]} and {src.split})")
        seen[key] = src.split
        for item in src.images:
            other = names.get((src.split, item.name))
            if other is not None:
                raise InputError(f"{item.image}: image name {item.name!r} also in {other} "
                                 f"(split {src.split}); patch names would collide")
            names[(src.split, item.name)] = item.image
    if kind == "nuclei-type":
        first = sources[0]
        for src in sources[1:]:
            if src.class_names != first.class_names:
                raise InputError(f"{src.folder / 'classes.json'}: names the classes "
                                 f"{src.class_names}, but {first.folder / 'classes.json'} "
                                 f"{first.class_names}; labels would not match")


def _warnings(rows: list[dict[str, Any]]) -> list[str]:
    """What features or probe will refuse or what inflates scores, said now."""
    out = []
    splits: dict[str, set[str]] = {}
    for r in rows:
        splits.setdefault(r["group"], set()).add(r["split"])
    shared = sorted(g for g, s in splits.items() if len(s) > 1)
    if shared:
        out.append(f"group(s) {', '.join(shared[:5])}{' ...' if len(shared) > 5 else ''} "
                   f"({len(shared)}) appear in two splits: their patches leak between them; "
                   "features and probe refuse this table without --allow-group-overlap (or "
                   "give the folders without split names for a grouped cross-validation)")
    train = {r["label"] for r in rows if r["split"] == "train"}
    only = sorted({r["label"] for r in rows if r["split"] != "train"} - train)
    if only and train:
        out.append(f"label(s) {', '.join(only)} appear in val/test but not in train")
    return out


def _open_output(out: Path, overwrite: bool) -> AtomicPath:
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()  # an empty folder made beforehand is not a result to protect
    if out.exists() and not overwrite:
        raise CerberusError(f"{out}: already exists (--overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    target = AtomicPath(out, overwrite=overwrite)
    target.tmp.mkdir()
    return target


def _image_patches(item: SourceImage, src: Source, options: PatchesOptions,
                   label: str | None, group: str, folder: Path, rel: str,
                   skipped: Counter[str]) -> list[dict[str, Any]]:
    """Write the patches of one source image under ``folder``; their table rows."""
    native = read_image(item)
    image = resample_image(native, src.mpp, options.mpp)
    # Native -> written px per axis, from the sizes themselves (the resampler rounds them).
    fy, fx = image.shape[0] / native.shape[0], image.shape[1] / native.shape[1]
    side = options.patch_px
    centres: list[tuple[float, float, int, str, str]] = []  # (cy, cx, object, label, file stem)
    if options.kind == "organ":
        stride = options.stride_px
        for y0 in _grid(image.shape[0], side, stride):
            for x0 in _grid(image.shape[1], side, stride):
                cy, cx = y0 + (side - 1) / 2, x0 + (side - 1) / 2
                centres.append((cy, cx, 0, str(label), f"y{y0:05d}_x{x0:05d}"))
    else:
        objects = read_objects(item, native.shape[:2])
        for i, oid in enumerate(objects.ids.tolist()):
            if objects.majority is not None:
                cls = int(objects.majority[i])
                if cls == 0:
                    skipped["nucleus without a classed pixel"] += 1
                    continue
                name = _class_name(src.class_names, cls)
            else:
                name = str(label)
            # Pixel centres: native (c + 0.5) maps to written (c + 0.5) * f.
            cy = (objects.cy[i] + 0.5) * fy - 0.5
            cx = (objects.cx[i] + 0.5) * fx - 0.5
            centres.append((cy, cx, oid, name, f"{oid:06d}"))
    rows = []
    if centres:
        folder.mkdir(parents=True, exist_ok=True)
    for cy, cx, oid, name, stem in centres:
        patch, padded = _crop(image, cy, cx, side)
        path = folder / f"{stem}.png"
        if not cv2.imwrite(str(path), np.ascontiguousarray(patch[..., ::-1])):
            raise InputError(f"{path}: cannot be written")
        rows.append({"path": f"{rel}/{stem}.png", "label": name, "group": group,
                     "split": src.split, "task": options.kind, "mpp": options.mpp,
                     "image": str(item.image.resolve()),
                     "x": round((cx + 0.5) / fx - 0.5, 2), "y": round((cy + 0.5) / fy - 0.5, 2),
                     "object": oid, "padded": padded})
    return rows


def make_patches(sources: list[str], out_dir: str | os.PathLike, options: PatchesOptions,
                 progress: Progress | None = None) -> PatchesSummary:
    """Cut a patch task from instance-layout folders (see ``cerberus patches --help``).

    ``sources``: ``SPLIT=DIR`` or bare ``DIR`` (split train) entries. Every folder is
    checked (layout, grade or organ table, class names) before anything is written.

    Raises:
        InputError: a bad folder or table (one line naming the file); nothing is written.
        CerberusError: ``out_dir`` exists (without ``overwrite``).
    """
    if not sources:
        raise InputError("no source folder given (SPLIT=DIR or DIR)")
    opened = [open_source(folder, split, options.kind == "nuclei-type", options.source_mpp)
              for split, folder in map(parse_source, sources)]
    _check_sources(opened, options.kind)
    labellers = [_labeller(options.kind, src, options) for src in opened]
    out = Path(out_dir)
    target = _open_output(out, options.overwrite)
    rows: list[dict[str, Any]] = []
    skipped: Counter[str] = Counter()
    total = sum(len(s.images) for s in opened)
    done = 0
    try:
        for src, labeller in zip(opened, labellers):
            for item in src.images:
                label, group = labeller(item)
                rel = f"patches/{src.split}/{item.name}"
                rows.extend(_image_patches(item, src, options, label, group, target.tmp / rel,
                                           rel, skipped))
                done += 1
                if progress is not None:
                    progress(done, total)
        if not rows:
            raise InputError(f"{', '.join(str(s.folder) for s in opened)}: no objects to cut "
                             "patches from")
        counts: dict[str, dict[str, int]] = {}
        for r in rows:
            per = counts.setdefault(r["split"], {})
            per[r["label"]] = per.get(r["label"], 0) + 1
        summary = PatchesSummary(out / TABLE_NAME, len(rows), total,
                                 {s: dict(sorted(c.items())) for s, c in sorted(counts.items())},
                                 dict(skipped), _warnings(rows))
        with open(target.tmp / TABLE_NAME, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        meta = {
            "format": "cerberus-cli/patch-task", "format_version": 1, "kind": options.kind,
            "sources": [{"folder": str(s.folder.resolve()), "split": s.split, "mpp": s.mpp,
                         "images": len(s.images)} for s in opened],
            "options": asdict(options), "patch_px": options.patch_px, "patch_um": options.side_um,
            "rows": summary.rows, "counts": summary.counts, "skipped": summary.skipped,
            "warnings": summary.warnings, "package_version": __version__,
        }
        (target.tmp / META_NAME).write_text(json.dumps(meta, indent=2))
        target.commit()
    except BaseException:
        target.abort()
        raise
    return summary
