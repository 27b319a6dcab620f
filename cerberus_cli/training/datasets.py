"""Task-level datasets: format detection, ``open_dataset`` and several sources as one.

A dataset serves one task (``nuclei``, ``gland``, ``lumen`` or ``tissue``) from one
source in one format. Every item comes back at the model resolution: readers give
their source resolution and the base class resamples. The item types, the base class
and the shared readers live in :mod:`cerberus_cli.training.dataset_base`, the readers
in ``cerberus_cli.training.formats``, one module per format; this module sits above
both and is what the rest of the package imports.
"""

from __future__ import annotations

from pathlib import Path

from cerberus_cli.core.errors import InputError
from cerberus_cli.core.vocabulary import TASK_CLASSES, TASKS
from cerberus_cli.training.class_map import PRESETS, load_class_map
from cerberus_cli.training.dataset_base import (
    IGNORE,
    InstanceItem,
    TaskDataset,
    TissueItem,
    check_rgb,
    image_files,
    read_label_png,
    read_rgb,
)
from cerberus_cli.training.formats import FORMATS, detect

__all__ = [
    "IGNORE", "ConcatDataset", "InstanceItem", "TaskDataset", "TissueItem", "check_rgb", "detect_format",
    "image_files", "open_dataset", "read_label_png", "read_rgb",
]


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

    def _source(self, i: int) -> str:
        part, j = self.index[i]
        return part.source(j)

    def load(self, i: int) -> InstanceItem | TissueItem:
        # Each part resamples from its own resolution.
        return self._read(self._full_index(i))

    def problem(self, i: int) -> str | None:
        part, j = self.index[self._full_index(i)]
        return part.problem(j)

    def describe(self) -> str:
        return " + ".join(p.describe() for p in self.parts)


def detect_format(task: str, path: Path) -> str:
    """The name of the format of the dataset at ``path`` for ``task``."""
    return detect(task, path)


def open_dataset(task: str, path: str | Path, fmt: str | None = None,
                 target_mpp: float = 0.5, tissue_map: str | Path | None = None,
                 class_map: str | None = None) -> TaskDataset:
    """Open the dataset at ``path`` for ``task``, detecting its format unless named.

    ``tissue_map`` is a class mapping file for tissue class folders whose names are
    not the Kather-100K ones; ``class_map`` (a preset name or JSON file, see
    :mod:`cerberus_cli.training.class_map`) maps the type ids of an instance dataset
    onto the task's. A dataset whose ``classes.json`` names other classes than the
    task's is refused without one, rather than read as if its ids were the task's.

    Raises:
        InputError: unknown task or format, missing path, or a malformed dataset.
    """
    path = Path(path)
    if task not in TASKS:
        raise InputError(f"unknown task {task!r} for {path} (choose from {', '.join(TASKS)})")
    if not path.exists():
        raise InputError(f"{path}: no such file or directory (data for task {task})")
    name = fmt or detect_format(task, path)
    if name not in FORMATS:
        raise InputError(f"{path}: unknown dataset format {name!r} (choose from {', '.join(sorted(FORMATS))})")
    kwargs = {"mapping_file": tissue_map} if tissue_map and name == "class-folders" else {}
    ds = FORMATS[name](path, task, target_mpp, **kwargs)
    if len(ds) == 0:
        raise InputError(f"{path}: the {name} dataset for task {task} has no items")
    if class_map is not None:
        return ds.with_class_map(load_class_map(class_map, task))
    own = {i: n for i, n in (ds.class_names or {}).items() if i}
    names = [c.name for c in TASK_CLASSES.get(task, ())]
    foreign = {i: n for i, n in own.items() if not (i < len(names) and names[i] == n)}
    if foreign:
        listed = ", ".join(f"{i} {n}" for i, n in sorted(foreign.items()))
        raise InputError(f"{path}: its classes ({listed}) are not the {task} classes of cerberus; "
                         f"give a class map: --class-map {path}=FILE|PRESET (presets: {', '.join(PRESETS)})")
    return ds
