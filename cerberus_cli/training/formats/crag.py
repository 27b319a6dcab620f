"""CRAG: ``Images/NAME.png`` with instance maps ``Annotation/NAME.png``.

The release has ``CRAG/train/`` and ``CRAG/valid/``, each with ``Images/`` and
``Annotation/``; any folder holding such pairs (at any depth) is read. CRAG is at
20x with 0.55 um/px and is resampled. It has no gland subtypes.
"""

from __future__ import annotations

from pathlib import Path

from cerberus_cli.core.errors import InputError
from cerberus_cli.training.dataset_base import (
    InstanceItem,
    TaskDataset,
    image_files,
    read_label_png,
    read_rgb,
)

CRAG_MPP = 0.55


def _roots(path: Path) -> list[Path]:
    cands = [path] + sorted(p.parent for p in path.rglob("Annotation") if p.is_dir())
    return sorted({c for c in cands if (c / "Images").is_dir() and (c / "Annotation").is_dir()})


def looks_like(path: Path) -> bool:
    return path.is_dir() and bool(_roots(path))


class CragDataset(TaskDataset):
    format = "crag"
    tasks = ("gland",)

    def __init__(self, path: Path, task: str, target_mpp: float = 0.5) -> None:
        super().__init__(path, task, target_mpp)
        self.source_mpp = CRAG_MPP
        roots = _roots(self.path)
        if not roots:
            raise InputError(f"{self.path}: no Images/ + Annotation/ folders (CRAG layout)")
        self.files: list[tuple[Path, Path]] = []
        for root in roots:
            annos = {p.stem: p for p in image_files(root / "Annotation")}
            for img in image_files(root / "Images"):
                anno = annos.get(img.stem)
                if anno is None:
                    raise InputError(f"{img}: no annotation {root / 'Annotation' / (img.stem + '.png')}")
                self.files.append((img, anno))
                prefix = "" if root == self.path else f"{root.name}/"
                self.names.append(prefix + img.stem)
        self.groups = list(self.names)

    def _source(self, i: int) -> str:
        return str(self.files[i][0])

    def _label_source(self, i: int) -> str:
        return str(self.files[i][1])

    def _read(self, i: int) -> InstanceItem:
        img, anno = self.files[i]
        return InstanceItem(read_rgb(img), read_label_png(anno), None, self.names[i])
