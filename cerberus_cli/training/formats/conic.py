"""CoNIC: ``images.npy`` (N, H, W, 3) and ``labels.npy`` (N, H, W, 2).

``labels[..., 0]`` is the instance map and ``labels[..., 1]`` the per-pixel class
(the Lizard classes 1..6). An optional ``patch_info.csv`` names each patch
``<source image>-<patch>``; patches of one source image form one split group.
CoNIC patches are at 20x (0.5 um/px).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cerberus_cli.core.errors import InputError
from cerberus_cli.training.dataset_base import InstanceItem, TaskDataset, check_rgb

CONIC_MPP = 0.5


def looks_like(path: Path) -> bool:
    return path.is_dir() and (path / "images.npy").is_file() and (path / "labels.npy").is_file()


def _load_npy(path: Path) -> np.ndarray:
    if not path.is_file():
        raise InputError(f"{path}: missing")
    try:
        return np.load(path, mmap_mode="r")
    except (ValueError, OSError) as exc:
        raise InputError(f"{path}: not a readable .npy array: {exc}") from None


class ConicDataset(TaskDataset):
    format = "conic"
    tasks = ("nuclei",)

    def __init__(self, path: Path, task: str, target_mpp: float = 0.5) -> None:
        super().__init__(path, task, target_mpp)
        self.source_mpp = CONIC_MPP
        self.images = _load_npy(self.path / "images.npy")
        self.labels = _load_npy(self.path / "labels.npy")
        if self.images.ndim != 4 or self.images.shape[-1] != 3:
            raise InputError(f"{self.path / 'images.npy'}: expected (N, H, W, 3), got {self.images.shape}")
        if self.labels.ndim != 4 or self.labels.shape[-1] != 2:
            raise InputError(f"{self.path / 'labels.npy'}: expected (N, H, W, 2) with instance and "
                             f"class channels, got {self.labels.shape}")
        if self.labels.shape[:3] != self.images.shape[:3]:
            raise InputError(f"{self.path / 'labels.npy'}: shape {self.labels.shape[:3]} does not match "
                             f"images.npy {self.images.shape[:3]}")
        n = self.images.shape[0]
        self.names = [f"{i:05d}" for i in range(n)]
        self.groups = list(self.names)
        info = self.path / "patch_info.csv"
        if info.is_file():
            rows = [r.strip().split(",")[0] for r in info.read_text().splitlines() if r.strip()]
            if rows and not rows[0].startswith(("consep", "crag", "dpath", "glas", "pannuke")) and "-" not in rows[0]:
                rows = rows[1:]  # header line
            if len(rows) != n:
                raise InputError(f"{info}: {len(rows)} rows but images.npy has {n} patches")
            self.names = rows
            self.groups = [r.rsplit("-", 1)[0] for r in rows]

    def _source(self, i: int) -> str:
        return f"{self.path / 'images.npy'}[{i}]"

    def _label_source(self, i: int) -> str:
        return f"{self.path / 'labels.npy'}[{i}]"

    def _read(self, i: int) -> InstanceItem:
        image = check_rgb(np.asarray(self.images[i]), self.path / "images.npy")
        lab = np.asarray(self.labels[i])
        types = lab[..., 1]
        if types.max() > 6 or types.min() < 0:
            raise InputError(f"{self.path / 'labels.npy'}: patch {i}: class values must be 0..6")
        return InstanceItem(image, lab[..., 0].astype(np.int32), types.astype(np.uint8), self.names[i])
