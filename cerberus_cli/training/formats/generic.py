"""The generic instance layout: ``images/``, ``instances/`` and optional ``classes/``.

``images/NAME.png`` (RGB), ``instances/NAME.png`` (8- or 16-bit instance ids, 0 =
background) and ``classes/NAME.png`` (uint8 per-pixel class). An optional
``dataset.json`` with ``"mpp"`` gives the resolution (default: the model's), and an
optional ``classes.json`` names the class ids; classes other than the task's need a
class map (:mod:`cerberus_cli.training.class_map`). The
phantom gland and lumen datasets use this layout; any instance task can.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from cerberus_cli.core.class_maps import read_class_names
from cerberus_cli.core.errors import InputError
from cerberus_cli.training.dataset_base import (
    InstanceItem,
    TaskDataset,
    image_files,
    read_label_png,
    read_rgb,
)


def looks_like(path: Path) -> bool:
    return path.is_dir() and (path / "images").is_dir() and (path / "instances").is_dir()


def read_mpp(path: Path, default: float) -> float:
    """``mpp`` from ``dataset.json`` in ``path`` or its parent, else ``default``."""
    for meta in (path / "dataset.json", path.parent / "dataset.json"):
        if meta.is_file():
            try:
                data = json.loads(meta.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise InputError(f"{meta}: not valid JSON: {exc}") from None
            if isinstance(data, dict) and "mpp" in data:
                try:
                    return float(data["mpp"])
                except (TypeError, ValueError):
                    raise InputError(f"{meta}: 'mpp' must be a number, got {data['mpp']!r}") from None
    return default


class GenericDataset(TaskDataset):
    format = "generic"
    tasks = ("gland", "lumen", "nuclei")

    def __init__(self, path: Path, task: str, target_mpp: float = 0.5) -> None:
        super().__init__(path, task, target_mpp)
        for sub in ("images", "instances"):
            if not (self.path / sub).is_dir():
                raise InputError(f"{self.path}: missing folder '{sub}/' (generic layout: images/, "
                                 "instances/, optional classes/)")
        self.source_mpp = read_mpp(self.path, target_mpp)
        instances = {p.stem: p for p in image_files(self.path / "instances")}
        classes_dir = self.path / "classes"
        classes = {p.stem: p for p in image_files(classes_dir)} if classes_dir.is_dir() else None
        self.files: list[tuple[Path, Path, Path | None]] = []
        for img in image_files(self.path / "images"):
            inst = instances.get(img.stem)
            if inst is None:
                raise InputError(f"{img}: no instance map {self.path / 'instances' / (img.stem + '.png')}")
            cls = None
            if classes is not None:
                cls = classes.get(img.stem)
                if cls is None:
                    raise InputError(f"{img}: no class map in {classes_dir}")
            self.files.append((img, inst, cls))
            self.names.append(img.stem)
        self.groups = list(self.names)
        self.class_names = read_class_names(self.path)

    def _source(self, i: int) -> str:
        return str(self.files[i][0])

    def _label_source(self, i: int) -> str:
        _, inst_path, cls_path = self.files[i]
        return str(cls_path or inst_path)

    def _read(self, i: int) -> InstanceItem:
        img_path, inst_path, cls_path = self.files[i]
        image = read_rgb(img_path)
        inst = read_label_png(inst_path)
        if inst.shape != image.shape[:2]:
            raise InputError(f"{inst_path}: size {inst.shape} does not match image {image.shape[:2]}")
        types = None
        if cls_path is not None:
            types = read_label_png(cls_path)
            if types.shape != inst.shape:
                raise InputError(f"{cls_path}: size {types.shape} does not match image {image.shape[:2]}")
            if types.max() > 254 or types.min() < 0:
                raise InputError(f"{cls_path}: class values must be 0..254")
            types = types.astype(np.uint8)
            types[inst == 0] = 0
        return InstanceItem(image, inst, types, self.names[i])
