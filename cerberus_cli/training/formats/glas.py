"""GlaS (Warwick-QU): ``NAME.bmp`` images with ``NAME_anno.bmp`` gland instance maps.

All files sit in one folder (``Warwick QU Dataset (Released 2016_07_08)/``), with
``Grade.csv`` whose ``patient ID`` column gives the patient-level split groups.
GlaS images are at 20x with 0.62 um/px and are resampled to the model resolution.
GlaS has no gland subtypes, so its glands train the instance head only.
"""

from __future__ import annotations

import csv
from pathlib import Path

from cerberus_cli.core.errors import InputError
from cerberus_cli.training.dataset_base import (
    InstanceItem,
    TaskDataset,
    read_label_png,
    read_rgb,
)

GLAS_MPP = 0.62


def _folder(path: Path) -> Path:
    if next(path.glob("*_anno.bmp"), None) is not None:
        return path
    for sub in sorted(p for p in path.iterdir() if p.is_dir()):
        if next(sub.glob("*_anno.bmp"), None) is not None:
            return sub
    return path


def looks_like(path: Path) -> bool:
    return path.is_dir() and next(_folder(path).glob("*_anno.bmp"), None) is not None


def _patients(folder: Path) -> dict[str, str]:
    grade = folder / "Grade.csv"
    if not grade.is_file():
        return {}
    with open(grade, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return {}
    header = [h.strip().lower() for h in rows[0]]
    if "name" not in header or "patient id" not in header:
        raise InputError(f"{grade}: expected columns 'name' and 'patient ID', got {rows[0]}")
    ni, pi = header.index("name"), header.index("patient id")
    return {r[ni].strip(): r[pi].strip() for r in rows[1:] if len(r) > max(ni, pi)}


class GlasDataset(TaskDataset):
    format = "glas"
    tasks = ("gland",)

    def __init__(self, path: Path, task: str, target_mpp: float = 0.5) -> None:
        super().__init__(path, task, target_mpp)
        self.source_mpp = GLAS_MPP
        folder = _folder(self.path)
        annos = sorted(folder.glob("*_anno.bmp"))
        if not annos:
            raise InputError(f"{self.path}: no *_anno.bmp files (GlaS layout)")
        patients = _patients(folder)
        self.files: list[tuple[Path, Path]] = []
        for anno in annos:
            name = anno.name[: -len("_anno.bmp")]
            img = folder / f"{name}.bmp"
            if not img.is_file():
                raise InputError(f"{anno}: no image {img.name} next to it")
            self.files.append((img, anno))
            self.names.append(name)
            self.groups.append(f"patient-{patients[name]}" if name in patients else name)

    def _source(self, i: int) -> str:
        return str(self.files[i][0])

    def _label_source(self, i: int) -> str:
        return str(self.files[i][1])

    def _read(self, i: int) -> InstanceItem:
        img, anno = self.files[i]
        return InstanceItem(read_rgb(img), read_label_png(anno), None, self.names[i])
