"""Tissue-type class folders: ``ROOT/<CLASS>/*.png|tif|jpg``.

Folder names of Kather-100K / NCT-CRC-HE (ADI, BACK, DEB, LYM, MUC, MUS, NORM, STR,
TUM) map to the nine Cerberus tissue types by :data:`KATHER_TO_TISSUE`. Other
datasets give a mapping file, ``class_map.csv`` (or ``.json``) in the root or passed
explicitly: one ``folder,class`` row per folder, the class a Cerberus tissue-type
name or index; folders mapped to ``ignore`` are skipped. NCT-CRC-HE is at 0.5 um/px;
a ``dataset.json`` with ``"mpp"`` in the root says otherwise.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from cerberus_cli.core.errors import InputError
from cerberus_cli.core.vocabulary import KATHER_TO_TISSUE, TISSUE_TYPES
from cerberus_cli.training.dataset_base import (
    TaskDataset,
    TissueItem,
    image_files,
    read_rgb,
)
from cerberus_cli.training.formats.generic import read_mpp


def _class_index(value: str, where: Path) -> int | None:
    v = str(value).strip()
    if v.lower() == "ignore":
        return None
    names = [c.name.lower() for c in TISSUE_TYPES]
    if v.lower() in names:
        return names.index(v.lower())
    if v.upper() in KATHER_TO_TISSUE:
        return KATHER_TO_TISSUE[v.upper()]
    try:
        idx = int(v)
    except ValueError:
        idx = -1
    if not 0 <= idx < len(TISSUE_TYPES):
        raise InputError(f"{where}: unknown tissue class {value!r} (use a name from "
                         f"{', '.join(c.name for c in TISSUE_TYPES)}, an index 0..8 or 'ignore')")
    return idx


def read_mapping(path: Path) -> dict[str, int | None]:
    """Folder name -> tissue-type index (``None`` = skip) from a CSV or JSON file."""
    if not path.is_file():
        raise InputError(f"{path}: no such tissue class mapping file")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{path}: not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise InputError(f"{path}: expected a JSON object {{folder: class}}")
        return {str(k): _class_index(v, path) for k, v in data.items()}
    out: dict[str, int | None] = {}
    with open(path, newline="") as f:
        for n, row in enumerate(csv.reader(f), 1):
            if not row or row[0].startswith("#"):
                continue
            if len(row) != 2:
                raise InputError(f"{path}: line {n}: expected 'folder,class', got {row}")
            if n == 1 and row[0].strip().lower() == "folder":
                continue
            out[row[0].strip()] = _class_index(row[1], path)
    return out


def _default_mapping(root: Path) -> dict[str, int | None] | None:
    for name in ("class_map.csv", "class_map.json"):
        if (root / name).is_file():
            return read_mapping(root / name)
    return None


def looks_like(path: Path) -> bool:
    if not path.is_dir():
        return False
    subs = [p.name for p in path.iterdir() if p.is_dir()]
    return bool(subs) and (all(s.upper() in KATHER_TO_TISSUE for s in subs)
                           or _default_mapping(path) is not None)


class TissueFolderDataset(TaskDataset):
    format = "class-folders"
    tasks = ("tissue",)

    def __init__(self, path: Path, task: str, target_mpp: float = 0.5,
                 mapping_file: str | Path | None = None) -> None:
        super().__init__(path, task, target_mpp)
        if not self.path.is_dir():
            raise InputError(f"{self.path}: a tissue dataset is a folder of class folders")
        self.source_mpp = read_mpp(self.path, target_mpp)
        mapping = read_mapping(Path(mapping_file)) if mapping_file else _default_mapping(self.path)
        folders = sorted(p for p in self.path.iterdir() if p.is_dir())
        if not folders:
            raise InputError(f"{self.path}: no class folders (expected e.g. ADI/, BACK/, ..., TUM/)")
        self.files: list[tuple[Path, int]] = []
        for folder in folders:
            if mapping is not None:
                if folder.name not in mapping:
                    raise InputError(f"{folder}: folder not in the class mapping file")
                label = mapping[folder.name]
            elif folder.name.upper() in KATHER_TO_TISSUE:
                label = KATHER_TO_TISSUE[folder.name.upper()]
            else:
                raise InputError(f"{folder}: not a Kather class folder ({', '.join(KATHER_TO_TISSUE)}); "
                                 "give a class mapping file (class_map.csv)")
            if label is None:
                continue
            for img in image_files(folder):
                self.files.append((img, label))
                self.names.append(f"{folder.name}/{img.stem}")
        self.groups = list(self.names)

    @property
    def labels(self) -> list[int]:
        return [self.files[self._full_index(i)][1] for i in range(len(self))]

    def _source(self, i: int) -> str:
        return str(self.files[i][0])

    def _read(self, i: int) -> TissueItem:
        img, label = self.files[i]
        return TissueItem(read_rgb(img), label, self.names[i])
