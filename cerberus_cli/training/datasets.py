"""Task-level datasets: the common item types, the base class and format detection.

A dataset serves one task (``nuclei``, ``gland``, ``lumen`` or ``tissue``) from one
source in one format. Every item comes back at the model resolution: readers give
their source resolution and the base class resamples. Readers live in
``cerberus_cli.training.formats``, one module per format.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cerberus_cli.core.errors import InputError
from cerberus_cli.core.vocabulary import TASKS
from cerberus_cli.training.resample import resample_image, resample_labels

#: Type-map value meaning "type unknown here": ignored by the type losses.
IGNORE = 255


@dataclass
class InstanceItem:
    """One image of an instance task at the model resolution.

    ``instances`` is an int32 map (0 = background, one id per object); ``types`` a
    uint8 map of per-pixel object classes (0 outside objects) or ``None`` when the
    dataset has no class labels.
    """

    image: np.ndarray
    instances: np.ndarray
    types: np.ndarray | None
    name: str


@dataclass
class TissueItem:
    """One tissue patch at the model resolution and its tissue-type index."""

    image: np.ndarray
    label: int
    name: str


class TaskDataset(ABC):
    """A dataset of one task read from one source.

    Subclasses fill ``names`` (one per item, unique), ``groups`` (the patient or
    source-image id of each item, for patient-level splits), ``source_mpp`` and
    implement :meth:`_read`. ``indices`` restricts the dataset to a subset.
    """

    format: str = ""
    tasks: tuple[str, ...] = ()

    def __init__(self, path: str | Path, task: str, target_mpp: float = 0.5) -> None:
        self.path = Path(path)
        self.task = task
        self.target_mpp = float(target_mpp)
        self.source_mpp = float(target_mpp)
        self.names: list[str] = []
        self.groups: list[str] = []
        self.indices: list[int] | None = None
        if task not in self.tasks:
            raise InputError(f"{self.path}: a {self.format} dataset cannot serve task {task!r} "
                             f"(it serves {', '.join(self.tasks)})")

    # --- subclass interface -------------------------------------------------------
    @abstractmethod
    def _read(self, i: int) -> InstanceItem | TissueItem:
        """Item ``i`` (of the full dataset) at the source resolution."""

    # --- public -----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.names) if self.indices is None else len(self.indices)

    def _full_index(self, i: int) -> int:
        return i if self.indices is None else self.indices[i]

    def name(self, i: int) -> str:
        return self.names[self._full_index(i)]

    def group(self, i: int) -> str:
        return self.groups[self._full_index(i)]

    def load(self, i: int) -> InstanceItem | TissueItem:
        """Item ``i`` at the model resolution."""
        item = self._read(self._full_index(i))
        if isinstance(item, TissueItem):
            item.image = resample_image(item.image, self.source_mpp, self.target_mpp)
            return item
        if item.instances.shape != item.image.shape[:2]:
            raise InputError(f"{self.path}: item {item.name}: label map {item.instances.shape} "
                             f"does not match image {item.image.shape[:2]}")
        item.image = resample_image(item.image, self.source_mpp, self.target_mpp)
        item.instances = resample_labels(item.instances, self.source_mpp, self.target_mpp)
        if item.types is not None:
            item.types = resample_labels(item.types, self.source_mpp, self.target_mpp)
        return item

    def subset(self, indices: list[int]) -> "TaskDataset":
        """A view of this dataset restricted to ``indices`` (positions in this view)."""
        import copy

        view = copy.copy(self)
        view.indices = [self._full_index(i) for i in indices]
        return view

    def describe(self) -> str:
        return f"{self.task}: {self.format} {self.path} ({len(self)} items)"


class ConcatDataset(TaskDataset):
    """Several datasets of one task (possibly different formats) served as one."""

    format = "concat"
    tasks = TASKS

    def __init__(self, parts: list[TaskDataset]) -> None:
        super().__init__(parts[0].path, parts[0].task, parts[0].target_mpp)
        self.parts = parts
        self.index = [(p, j) for p in parts for j in range(len(p))]
        self.names = [f"{p.path.name}/{p.name(j)}" for p, j in self.index]
        self.groups = [f"{p.path.name}/{p.group(j)}" for p, j in self.index]

    def _read(self, i: int) -> InstanceItem | TissueItem:
        part, j = self.index[i]
        return part.load(j)

    def load(self, i: int) -> InstanceItem | TissueItem:
        # Each part resamples from its own resolution.
        return self._read(self._full_index(i))

    def describe(self) -> str:
        return " + ".join(p.describe() for p in self.parts)


# --- helpers shared by the readers --------------------------------------------------

def check_rgb(image: np.ndarray | None, path: Path) -> np.ndarray:
    """Validate and normalise a decoded image to HxWx3 uint8 RGB."""
    if image is None:
        raise InputError(f"{path}: cannot be read as an image")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise InputError(f"{path}: expected an RGB image, got shape {image.shape}")
    image = image[..., :3]
    if image.dtype != np.uint8:
        if image.max() <= 1.0 and image.dtype.kind == "f":
            image = image * 255.0
        image = np.clip(image, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image)


def read_rgb(path: Path) -> np.ndarray:
    """Read an image file as RGB uint8."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise InputError(f"{path}: cannot be read as an image (missing, empty or corrupt)")
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB if img.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    return check_rgb(img, path)


def read_label_png(path: Path) -> np.ndarray:
    """Read a single-channel label image (8 or 16 bit) as int32."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise InputError(f"{path}: cannot be read as a label image (missing, empty or corrupt)")
    if img.ndim == 3:
        # Some tools save label maps as RGB with equal channels.
        if not (np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 1], img[..., 2])):
            raise InputError(f"{path}: expected a single-channel label map, got a colour image")
        img = img[..., 0]
    return img.astype(np.int32)


def image_files(folder: Path, exts: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in exts)


# --- format registry and detection ------------------------------------------------

def _formats() -> dict:
    from cerberus_cli.training.formats import FORMATS

    return FORMATS


def detect_format(task: str, path: Path) -> str:
    """The name of the format of the dataset at ``path`` for ``task``."""
    from cerberus_cli.training.formats import detect

    return detect(task, path)


def open_dataset(task: str, path: str | Path, fmt: str | None = None,
                 target_mpp: float = 0.5, tissue_map: str | Path | None = None) -> TaskDataset:
    """Open the dataset at ``path`` for ``task``, detecting its format unless named.

    ``tissue_map`` is a class mapping file for tissue class folders whose names are
    not the Kather-100K ones.

    Raises:
        InputError: unknown task or format, missing path, or a malformed dataset.
    """
    path = Path(path)
    if task not in TASKS:
        raise InputError(f"unknown task {task!r} for {path} (choose from {', '.join(TASKS)})")
    if not path.exists():
        raise InputError(f"{path}: no such file or directory (data for task {task})")
    formats = _formats()
    name = fmt or detect_format(task, path)
    if name not in formats:
        raise InputError(f"{path}: unknown dataset format {name!r} (choose from {', '.join(sorted(formats))})")
    kwargs = {"mapping_file": tissue_map} if tissue_map and name == "class-folders" else {}
    ds = formats[name](path, task, target_mpp, **kwargs)
    if len(ds) == 0:
        raise InputError(f"{path}: the {name} dataset for task {task} has no items")
    return ds
