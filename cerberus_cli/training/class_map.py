"""A dataset's own class ids mapped onto a task's type classes, coarse classes included.

A source class maps to one class of the task's type head, to a *set* of them (a coarse
label: CoNSeP's "inflammatory" is a lymphocyte, plasma cell, neutrophil or eosinophil,
and says no more), or to nothing (``null``: the object is trained as an object, its type
is unknown). A set is stored in the type map as ``SET_FLAG | bitmask`` of its members,
so it survives crops, warps and resampling like any label; the type loss maximises the
summed probability of the set (:func:`cerberus_cli.training.losses.type_loss`) and never
teaches one member over another, nor "no-label" for a class the source did not label.

A class map is a preset name (``consep``) or a JSON file::

    {"1": ["neutrophil", "epithelial", "lymphocyte", "plasma", "eosinophil", "connective"],
     "2": ["neutrophil", "lymphocyte", "plasma", "eosinophil"],
     "3": "epithelial",
     "4": "connective",
     "5": null}

Keys are the source's class ids (0, background, always stays background); values are
class names of the task (``cerberus model`` lists them). A source id that the map does
not name is an error when the item is checked, not a silent guess.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cerberus_cli.core.errors import InputError
from cerberus_cli.core.vocabulary import COARSE_NUCLEUS_TYPES, CONSEP_CLASSES, TASK_CLASSES
from cerberus_cli.training.type_codes import IGNORE, MAX_SET_CLASSES, set_code, set_members

#: Built-in class maps: name -> (task, source id -> class names).
PRESETS: dict[str, tuple[str, dict[int, tuple[str, ...]]]] = {
    "consep": ("nuclei", {i: COARSE_NUCLEUS_TYPES[name] for i, name in enumerate(CONSEP_CLASSES) if i}),
}


@dataclass(frozen=True)
class ClassMap:
    """Source class id -> type-map value (a class id, a set code, or IGNORE)."""

    name: str
    task: str
    values: Mapping[int, int]

    def apply(self, types: np.ndarray, where: str) -> np.ndarray:
        """The type map in the task's classes; ``where`` names the file for errors."""
        ids = np.unique(types)
        unknown = [int(i) for i in ids if i != 0 and int(i) not in self.values]
        if unknown:
            raise InputError(f"{where}: class ids {unknown[:5]} are not in the class map {self.name} "
                             f"(it maps {sorted(self.values)})")
        lut = np.zeros(max(int(ids.max()) + 1, 1), np.uint8)
        for src, value in self.values.items():
            if src < lut.size:
                lut[src] = value
        return lut[types]

    def describe(self) -> str:
        names = [c.name for c in TASK_CLASSES[self.task]]
        parts = []
        for src, value in sorted(self.values.items()):
            target = "unknown" if value == IGNORE else "|".join(names[m] for m in set_members(value))
            parts.append(f"{src}->{target}")
        return f"{self.name} ({', '.join(parts)})"


def _code(task: str, target: object, where: str) -> int:
    classes = [c.name for c in TASK_CLASSES[task]]
    if target is None:
        return IGNORE
    names = [target] if isinstance(target, str) else target
    if not isinstance(names, list | tuple) or not names or not all(isinstance(n, str) for n in names):
        raise InputError(f"{where}: a class maps to a class name, a list of names or null, got {target!r}")
    unknown = [n for n in names if n not in classes[1:]]
    if unknown:
        raise InputError(f"{where}: unknown {task} class(es) {', '.join(map(repr, unknown))} "
                         f"(choose from {', '.join(classes[1:])})")
    if len(classes) > MAX_SET_CLASSES and len(names) > 1:
        raise InputError(f"{where}: the {task} type head has too many classes for class sets")
    return set_code([classes.index(n) for n in names])


def load_class_map(spec: str, task: str) -> ClassMap:
    """A preset name or a JSON file as a :class:`ClassMap` for ``task``.

    Raises:
        InputError: unknown preset, unreadable or malformed file, a preset of another task.
    """
    if task not in TASK_CLASSES or task in ("lumen", "tissue"):
        raise InputError(f"--class-map {spec}: task {task!r} has no type classes to map onto")
    if spec in PRESETS:
        preset_task, table = PRESETS[spec]
        if preset_task != task:
            raise InputError(f"--class-map {spec}: a {preset_task} class map, not one for {task}")
        return ClassMap(spec, task, {i: _code(task, list(v), spec) for i, v in table.items()})
    path = Path(spec)
    if not path.is_file():
        raise InputError(f"--class-map {spec}: neither a preset ({', '.join(PRESETS)}) nor a file")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a readable JSON class map: {exc}") from None
    if not isinstance(data, dict) or not data:
        raise InputError(f"{path}: a class map is a JSON object of source id -> class name(s)")
    values: dict[int, int] = {}
    for key, target in data.items():
        try:
            src = int(key)
        except ValueError:
            raise InputError(f"{path}: key {key!r} is not a class id") from None
        if not 0 < src < 65536:
            raise InputError(f"{path}: class id {src} must be 1..65535 (0 is background)")
        values[src] = _code(task, target, f"{path}: class {src}")
    return ClassMap(str(path), task, values)
