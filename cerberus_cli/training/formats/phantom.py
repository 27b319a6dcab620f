"""Phantom datasets written by ``cerberus synth tiles``: one root, one folder per task.

``ROOT/dataset.json`` names the generator; ``nuclei/`` is in the Lizard layout,
``gland/`` and ``lumen/`` in the generic instance layout (gland with subtype class
maps), ``tissue/`` in Kather class folders. Opening the root for a task opens that
task's folder with its reader.
"""

from __future__ import annotations

import json
from pathlib import Path

from cerberus_cli.core.errors import InputError
from cerberus_cli.training.dataset_base import TaskDataset
from cerberus_cli.training.formats.generic import GenericDataset
from cerberus_cli.training.formats.lizard import LizardDataset
from cerberus_cli.training.formats.tissue_folders import TissueFolderDataset

SUBFORMAT = {"nuclei": "lizard", "gland": "generic", "lumen": "generic", "tissue": "class-folders"}
#: The reader of each task's folder (the formats named in :data:`SUBFORMAT`).
_READERS: dict[str, type[TaskDataset]] = {
    "nuclei": LizardDataset, "gland": GenericDataset, "lumen": GenericDataset, "tissue": TissueFolderDataset,
}


def looks_like(path: Path) -> bool:
    return path.is_dir() and (path / "dataset.json").is_file() and any(
        (path / t).is_dir() for t in SUBFORMAT
    )


def tasks_in(path: Path) -> list[str]:
    """Tasks for which the phantom root has a folder."""
    return [t for t in ("gland", "lumen", "nuclei", "tissue") if (path / t).is_dir()]


def open_phantom(path: Path, task: str, target_mpp: float = 0.5) -> TaskDataset:
    """The dataset of ``task`` in the phantom root ``path``, read by that folder's reader."""
    meta = path / "dataset.json"
    try:
        json.loads(meta.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{meta}: not valid JSON: {exc}") from None
    sub = path / task
    if not sub.is_dir():
        raise InputError(f"{path}: phantom dataset has no '{task}/' folder (has: {', '.join(tasks_in(path))})")
    ds = _READERS[task](sub, task, target_mpp)
    ds.format = "phantom"
    return ds
