"""What every dataset reader shares: the item types, the ``TaskDataset`` base class and
the image and label-map readers.

The format readers (``cerberus_cli.training.formats``) build on this module and
``cerberus_cli.training.datasets`` (format detection, ``open_dataset``) imports them,
so the import graph runs one way: ``dataset_base`` <- ``formats`` <- ``datasets``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cerberus_cli.core.errors import InputError
from cerberus_cli.core.vocabulary import GLAND_TYPES, NUCLEUS_TYPES, TISSUE_TYPES
from cerberus_cli.training.resample import resample_image, resample_labels
from cerberus_cli.training.type_codes import IGNORE, is_set, set_members

if TYPE_CHECKING:
    from cerberus_cli.training.class_map import ClassMap

#: Number of type classes each task's type head predicts (lumina have no type head).
TYPE_CLASSES = {"nuclei": len(NUCLEUS_TYPES), "gland": len(GLAND_TYPES)}


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
    implement :meth:`_read`; they may override :meth:`_source` and
    :meth:`_label_source` to name the files of an item. ``indices`` restricts the
    dataset to a subset.
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
        #: Maps the source's type ids onto the task's (``with_class_map``); None: they are the task's.
        self.class_map: ClassMap | None = None
        #: The source's own class names by id, where it names them (``classes.json``).
        self.class_names: dict[int, str] | None = None
        if task not in self.tasks:
            raise InputError(f"{self.path}: a {self.format} dataset cannot serve task {task!r} "
                             f"(it serves {', '.join(self.tasks)})")

    # --- subclass interface -------------------------------------------------------
    @abstractmethod
    def _read(self, i: int) -> InstanceItem | TissueItem:
        """Item ``i`` (of the full dataset) at the source resolution."""

    def _source(self, i: int) -> str:
        """The file (or array entry) item ``i`` of the full dataset comes from."""
        return f"{self.path}: item {self.names[i]}"

    def _label_source(self, i: int) -> str:
        """Where the labels of item ``i`` of the full dataset come from."""
        return self._source(i)

    # --- public -----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.names) if self.indices is None else len(self.indices)

    def _full_index(self, i: int) -> int:
        return i if self.indices is None else self.indices[i]

    def name(self, i: int) -> str:
        return self.names[self._full_index(i)]

    def group(self, i: int) -> str:
        return self.groups[self._full_index(i)]

    def source(self, i: int) -> str:
        """The file (or array entry) item ``i`` comes from, for messages."""
        return self._source(self._full_index(i))

    def _read_mapped(self, full: int) -> InstanceItem | TissueItem:
        item = self._read(full)
        if self.class_map is not None and isinstance(item, InstanceItem) and item.types is not None:
            item.types = self.class_map.apply(item.types, self._label_source(full))
        return item

    def load(self, i: int) -> InstanceItem | TissueItem:
        """Item ``i`` at the model resolution, its types in the task's classes."""
        item = self._read_mapped(self._full_index(i))
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

    def problem(self, i: int) -> str | None:
        """Why item ``i`` cannot be trained on (one line naming its file), or ``None``.

        Reads the item as training would and checks what the batch builder and the
        losses rely on: an RGB uint8 image, integer label maps of the image's size,
        non-negative instance ids, type values the task's type head knows, a valid
        tissue class.
        """
        full = self._full_index(i)
        try:
            item = self._read_mapped(full)
        except InputError as exc:
            return str(exc)
        except Exception as exc:  # noqa: BLE001  (any decoder failure is a bad file, not a crash)
            first = (str(exc).strip().splitlines() or [""])[0]
            return f"{self._source(full)}: cannot be read ({type(exc).__name__}: {first})"
        bad_image = _image_problem(item.image)
        if bad_image:
            return f"{self._source(full)}: {bad_image}"
        if isinstance(item, TissueItem):
            if not isinstance(item.label, (int, np.integer)) or not 0 <= item.label < len(TISSUE_TYPES):
                return f"{self._label_source(full)}: tissue class {item.label!r} outside 0..{len(TISSUE_TYPES) - 1}"
            return None
        bad_labels = _label_problem(item, self.task)
        return f"{self._label_source(full)}: {bad_labels}" if bad_labels else None

    def subset(self, indices: list[int]) -> TaskDataset:
        """A view of this dataset restricted to ``indices`` (positions in this view)."""
        import copy

        view = copy.copy(self)
        view.indices = [self._full_index(i) for i in indices]
        return view

    def with_class_map(self, class_map: ClassMap) -> TaskDataset:
        """This dataset with its type ids read through ``class_map``."""
        if class_map.task != self.task:
            raise InputError(f"{self.path}: class map {class_map.name} is for {class_map.task}, "
                             f"not {self.task}")
        self.class_map = class_map
        return self

    def describe(self) -> str:
        mapped = f", classes {self.class_map.describe()}" if self.class_map is not None else ""
        return f"{self.task}: {self.format} {self.path} ({len(self)} items{mapped})"


def _image_problem(image: object) -> str | None:
    """What is wrong with a decoded image, or ``None`` for an HxWx3 uint8 array."""
    if not isinstance(image, np.ndarray):
        return f"image is a {type(image).__name__}, not an array"
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        return f"image must be RGB uint8 (H, W, 3), got {image.dtype} {image.shape}"
    if min(image.shape[:2]) < 1:
        return f"image is empty ({image.shape[0]}x{image.shape[1]} px)"
    return None


def _label_problem(item: InstanceItem, task: str) -> str | None:
    """What is wrong with the label maps of an instance item, or ``None``."""
    inst = item.instances
    if not isinstance(inst, np.ndarray) or inst.ndim != 2 or inst.dtype.kind not in "iu":
        return f"instance map must be a 2-D integer array, got {getattr(inst, 'dtype', type(inst).__name__)} " \
               f"{getattr(inst, 'shape', '')}"
    if inst.shape != item.image.shape[:2]:
        return f"instance map {inst.shape} does not match the image {item.image.shape[:2]}"
    if inst.size and inst.min() < 0:
        return f"instance map holds negative ids (min {inst.min()})"
    types = item.types
    if types is None:
        return None
    if not isinstance(types, np.ndarray) or types.ndim != 2 or types.dtype.kind not in "iu":
        return "type map must be a 2-D integer array"
    if types.shape != inst.shape:
        return f"type map {types.shape} does not match the image {item.image.shape[:2]}"
    n = TYPE_CLASSES.get(task)
    if n is not None and types.size:
        values = np.unique(types)
        bad = np.array([v for v in values.tolist() if v != IGNORE and not (
            0 <= v < n or (is_set(v) and max(set_members(v)) < n))], np.int64)
        if bad.size:
            return f"type values {bad[:5].tolist()} outside 0..{n - 1} (or {IGNORE} for unknown)"
    return None


# --- readers every format uses --------------------------------------------------------

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
    """Image files directly in ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in exts)
