"""Lizard: PNG images and ``.mat`` labels holding ``inst_map``, ``id`` and ``class``.

The released layout spreads images over ``lizard_images1/Lizard_Images1/`` and
``lizard_images2/Lizard_Images2/`` and labels under ``lizard_labels/Lizard_Labels/Labels/``;
the phantom datasets use ``images/`` and ``labels/``. Images and labels are paired by
file stem anywhere under the dataset folder. Lizard is at 20x (0.5 um/px) and its
classes 1..6 are the Cerberus nucleus types.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cerberus_cli.core.errors import InputError
from cerberus_cli.training.dataset_base import InstanceItem, TaskDataset, read_rgb

LIZARD_MPP = 0.5
_IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


def looks_like(path: Path) -> bool:
    return path.is_dir() and next(path.rglob("*.mat"), None) is not None


def read_lizard_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(inst_map int32, types uint8)`` from a Lizard label file."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as exc:  # noqa: BLE001  (scipy raises several unrelated types for bad files)
        raise InputError(f"{path}: not a readable .mat file: {exc}") from None
    for key in ("inst_map", "id", "class"):
        if key not in mat:
            raise InputError(f"{path}: missing '{key}' (Lizard labels need inst_map, id and class)")
    inst = np.asarray(mat["inst_map"])
    if inst.ndim != 2:
        raise InputError(f"{path}: inst_map must be 2-D, got shape {inst.shape}")
    inst = inst.astype(np.int32)
    ids = np.asarray(mat["id"]).reshape(-1).astype(np.int64)
    classes = np.asarray(mat["class"]).reshape(-1).astype(np.int64)
    if ids.shape != classes.shape:
        raise InputError(f"{path}: 'id' has {ids.size} entries but 'class' has {classes.size}")
    if classes.size and (classes.min() < 0 or classes.max() > 6):
        raise InputError(f"{path}: 'class' values must be 0..6, found {classes.min()}..{classes.max()}")
    present = np.unique(inst[inst > 0])
    missing = np.setdiff1d(present, ids)
    if missing.size:
        raise InputError(f"{path}: inst_map ids {missing[:5].tolist()} have no entry in 'id'")
    lut = np.zeros(int(max(inst.max(), ids.max(initial=0))) + 1, dtype=np.uint8)
    lut[ids] = classes
    return inst, lut[inst]


class LizardDataset(TaskDataset):
    format = "lizard"
    tasks = ("nuclei",)

    def __init__(self, path: Path, task: str, target_mpp: float = 0.5) -> None:
        super().__init__(path, task, target_mpp)
        self.source_mpp = LIZARD_MPP
        if not self.path.is_dir():
            raise InputError(f"{self.path}: a Lizard dataset is a folder of images and .mat labels")
        labels = sorted(self.path.rglob("*.mat"))
        images = {p.stem: p for p in sorted(self.path.rglob("*")) if p.suffix.lower() in _IMAGE_EXTS}
        if not labels:
            raise InputError(f"{self.path}: no .mat label files found (Lizard layout)")
        self.pairs: list[tuple[Path, Path]] = []
        for lab in labels:
            img = images.get(lab.stem)
            if img is None:
                raise InputError(f"{lab}: no image named {lab.stem}.png for this label file")
            self.pairs.append((img, lab))
        self.names = [lab.stem for _, lab in self.pairs]
        # Lizard names are <source dataset>_<n>, one image region each: no patient ids.
        self.groups = list(self.names)

    def _source(self, i: int) -> str:
        return str(self.pairs[i][0])

    def _label_source(self, i: int) -> str:
        return str(self.pairs[i][1])

    def _read(self, i: int) -> InstanceItem:
        img_path, lab_path = self.pairs[i]
        image = read_rgb(img_path)
        inst, types = read_lizard_mat(lab_path)
        if inst.shape != image.shape[:2]:
            raise InputError(f"{lab_path}: inst_map {inst.shape} does not match image "
                             f"{img_path.name} {image.shape[:2]}")
        return InstanceItem(image, inst, types, self.names[i])
