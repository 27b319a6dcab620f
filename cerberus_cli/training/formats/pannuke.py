"""PanNuke: ``images.npy`` (N, 256, 256, 3) and ``masks.npy`` (N, 256, 256, 6) per fold.

The released layout is ``Fold 1/images/fold1/images.npy`` and
``Fold 1/masks/fold1/masks.npy`` (and likewise for folds 2 and 3); a folder with
both arrays side by side is read too. Mask channels hold instance ids of the
classes neoplastic, inflammatory, connective, dead and epithelial, then background.
PanNuke is at 40x (0.25 um/px) and is resampled to the model resolution. Folds form
the split groups.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cerberus_cli.core.errors import InputError
from cerberus_cli.training.dataset_base import (
    IGNORE,
    InstanceItem,
    TaskDataset,
    check_rgb,
)

PANNUKE_MPP = 0.25
#: PanNuke mask channel -> Cerberus nucleus type. Inflammatory (lymphocytes, plasma
#: cells, neutrophils, eosinophils together) and dead cells have no single Cerberus
#: type: their nuclei train the instance head but not the type head.
PANNUKE_TO_NUCLEUS = {0: 2, 1: IGNORE, 2: 6, 3: IGNORE, 4: 2}


def _pairs(path: Path) -> list[tuple[Path, Path]]:
    if (path / "images.npy").is_file() and (path / "masks.npy").is_file():
        return [(path / "images.npy", path / "masks.npy")]
    pairs = []
    for masks in sorted(path.rglob("masks.npy")):
        # images.npy sits in the same fold folder: Fold N/images/foldN/images.npy.
        fold = masks.parent.parent.parent if masks.parent.parent.name == "masks" else masks.parent
        found = sorted(fold.rglob("images.npy"))
        if not found:
            raise InputError(f"{masks}: no images.npy next to it in {fold}")
        pairs.append((found[0], masks))
    return pairs


def looks_like(path: Path) -> bool:
    return path.is_dir() and (
        ((path / "images.npy").is_file() and (path / "masks.npy").is_file())
        or next(path.rglob("masks.npy"), None) is not None
    )


def masks_to_maps(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(instances int32, types uint8)`` from one (H, W, 6) PanNuke mask."""
    inst = np.zeros(masks.shape[:2], np.int32)
    types = np.zeros(masks.shape[:2], np.uint8)
    offset = 0
    for c, t in PANNUKE_TO_NUCLEUS.items():
        ch = masks[..., c].astype(np.int64)
        on = ch > 0
        if not on.any():
            continue
        # Ids are only unique within a channel: offset them so channels never collide.
        inst[on] = ch[on] + offset
        types[on] = t
        offset += int(ch.max())
    return inst, types


class PanNukeDataset(TaskDataset):
    format = "pannuke"
    tasks = ("nuclei",)

    def __init__(self, path: Path, task: str, target_mpp: float = 0.5) -> None:
        super().__init__(path, task, target_mpp)
        self.source_mpp = PANNUKE_MPP
        self.arrays: list[tuple[np.ndarray, np.ndarray, Path]] = []
        self.image_paths: list[Path] = []
        self.index: list[tuple[int, int]] = []
        pairs = _pairs(self.path)
        if not pairs:
            raise InputError(f"{self.path}: no PanNuke images.npy/masks.npy found")
        for f, (img_path, mask_path) in enumerate(pairs):
            try:
                images = np.load(img_path, mmap_mode="r")
                masks = np.load(mask_path, mmap_mode="r")
            except (ValueError, OSError) as exc:
                raise InputError(f"{img_path.parent}: not readable PanNuke arrays: {exc}") from None
            if images.ndim != 4 or images.shape[-1] != 3:
                raise InputError(f"{img_path}: expected (N, H, W, 3), got {images.shape}")
            if masks.ndim != 4 or masks.shape[-1] != 6:
                raise InputError(f"{mask_path}: expected (N, H, W, 6) PanNuke masks, got {masks.shape}")
            if masks.shape[:3] != images.shape[:3]:
                raise InputError(f"{mask_path}: shape {masks.shape[:3]} does not match {img_path} {images.shape[:3]}")
            fold = mask_path.parent.name if mask_path.parent != self.path else "fold"
            self.arrays.append((images, masks, mask_path))
            self.image_paths.append(img_path)
            for i in range(images.shape[0]):
                self.index.append((f, i))
                self.names.append(f"{fold}_{i:05d}")
                self.groups.append(fold)

    def _source(self, i: int) -> str:
        f, j = self.index[i]
        return f"{self.image_paths[f]}[{j}]"

    def _label_source(self, i: int) -> str:
        f, j = self.index[i]
        return f"{self.arrays[f][2]}[{j}]"

    def _read(self, i: int) -> InstanceItem:
        f, j = self.index[i]
        images, masks, mask_path = self.arrays[f]
        image = check_rgb(np.asarray(images[j]), mask_path.parent)
        inst, types = masks_to_maps(np.asarray(masks[j]))
        return InstanceItem(image, inst, types, self.names[i])
