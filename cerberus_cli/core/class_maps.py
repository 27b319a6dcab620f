"""Class maps: a dataset's own class ids -> the set of cerberus class names each covers.

One file format serves ``cerberus train --class-map`` (learning from a dataset's coarser
classes) and ``cerberus evaluate --class-map`` (scoring predictions in them)::

    {"1": ["neutrophil", "epithelial", "lymphocyte", "plasma", "eosinophil", "connective"],
     "2": ["neutrophil", "lymphocyte", "plasma", "eosinophil"],
     "3": "epithelial",
     "4": "connective",
     "5": null}

Keys are the dataset's class ids (0, background, is never mapped); values a class name
of the task, a list of them (a coarse class: one of these, not saying which), or
``null`` (a class that is none of the task's, or whose type is unknown). Presets name
the maps of known datasets.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cerberus_cli.core.errors import InputError
from cerberus_cli.core.vocabulary import COARSE_NUCLEUS_TYPES, CONSEP_CLASSES, TASK_CLASSES

#: Largest dataset class id a map may name (16-bit class maps).
MAX_CLASS_ID = 65535


@dataclass(frozen=True)
class ClassSets:
    """A parsed class map: dataset class id -> the task's class names it covers."""

    name: str
    task: str
    covers: Mapping[int, tuple[str, ...]]
    #: The dataset's own class names by id (presets know them; files do not).
    source_names: tuple[str, ...] | None = None


#: Built-in maps: name -> (task, the dataset's class names by id, id -> covered names).
PRESETS: dict[str, ClassSets] = {
    "consep": ClassSets("consep", "nuclei",
                        {i: COARSE_NUCLEUS_TYPES[n] for i, n in enumerate(CONSEP_CLASSES) if i},
                        CONSEP_CLASSES),
}


def read_class_map(spec: str, task: str) -> ClassSets:
    """A preset name or JSON file as :class:`ClassSets` for ``task``.

    Raises:
        InputError: unknown preset, a preset of another task, an unreadable or
            malformed file, ids out of range, names that are not the task's.
    """
    if spec in PRESETS:
        preset = PRESETS[spec]
        if preset.task != task:
            raise InputError(f"--class-map {spec}: a {preset.task} class map, not one for {task}")
        return preset
    path = Path(spec)
    if not path.is_file():
        raise InputError(f"--class-map {spec}: neither a preset ({', '.join(PRESETS)}) nor a file")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a readable JSON class map: {exc}") from None
    if not isinstance(data, dict) or not data:
        raise InputError(f"{path}: a class map is a JSON object of class id -> class name(s)")
    known = [c.name for c in TASK_CLASSES[task]][1:]
    covers: dict[int, tuple[str, ...]] = {}
    for key, target in data.items():
        try:
            cid = int(key)
        except ValueError:
            raise InputError(f"{path}: key {key!r} is not a class id") from None
        if not 0 < cid <= MAX_CLASS_ID:
            raise InputError(f"{path}: class id {cid} must be 1..{MAX_CLASS_ID} (0 is background)")
        items = [] if target is None else [target] if isinstance(target, str) else target
        if not isinstance(items, list) or not all(isinstance(n, str) for n in items):
            raise InputError(f"{path}: class {cid} maps to a class name, a list of names or null, "
                             f"got {target!r}")
        unknown = [n for n in items if n not in known]
        if unknown:
            raise InputError(f"{path}: class {cid}: unknown {task} class(es) "
                             f"{', '.join(map(repr, unknown))} (choose from {', '.join(known)})")
        covers[cid] = tuple(items)
    return ClassSets(str(path), task, covers)


def read_class_names(folder: Path) -> dict[int, str] | None:
    """A dataset's ``classes.json`` in ``folder`` (``{"1": "name", ...}``) as id -> name, or None."""
    meta = folder / "classes.json"
    if not meta.is_file():
        return None
    try:
        data = json.loads(meta.read_text())
        names = {int(k): str(v) for k, v in data.items()}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError, ValueError) as exc:
        raise InputError(f"{meta}: not a JSON object of class id -> name: {exc}") from None
    if any(i < 0 for i in names):
        raise InputError(f"{meta}: class ids must be >= 0")
    return names
