"""A dataset's own class ids as values of the task's type maps, coarse classes included.

A source class maps (:mod:`cerberus_cli.core.class_maps`: a preset such as ``consep``,
or a JSON file) to one class of the task's type head, to a *set* of them (a coarse
label: CoNSeP's "inflammatory" is a lymphocyte, plasma cell, neutrophil or eosinophil,
and says no more), or to nothing (``null``: the object is trained as an object, its type
is unknown). A set is stored in the type map as a set code
(:mod:`cerberus_cli.training.type_codes`), so it survives crops, warps and resampling
like any label; the type loss maximises the summed probability of the set
(:func:`cerberus_cli.training.losses.type_loss`) and never teaches one member over
another, nor "no-label" for a class the source did not label. A source id that the map
does not name is an error when the item is checked, not a silent guess.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from cerberus_cli.core.class_maps import PRESETS, read_class_map
from cerberus_cli.core.errors import InputError
from cerberus_cli.core.vocabulary import TASK_CLASSES
from cerberus_cli.training.type_codes import IGNORE, MAX_SET_CLASSES, set_code, set_members

__all__ = ["PRESETS", "ClassMap", "load_class_map"]


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


def load_class_map(spec: str, task: str) -> ClassMap:
    """A preset name or JSON file as a :class:`ClassMap` for ``task``'s type maps.

    Raises:
        InputError: see :func:`cerberus_cli.core.class_maps.read_class_map`; also a task
            without type classes, or sets on a type head too large for set codes.
    """
    if task not in TASK_CLASSES or task in ("lumen", "tissue"):
        raise InputError(f"--class-map {spec}: task {task!r} has no type classes to map onto")
    sets = read_class_map(spec, task)
    classes = [c.name for c in TASK_CLASSES[task]]
    values: dict[int, int] = {}
    for src, names in sets.covers.items():
        if len(names) > 1 and len(classes) > MAX_SET_CLASSES:
            raise InputError(f"--class-map {spec}: the {task} type head has too many classes for class sets")
        values[src] = set_code([classes.index(n) for n in names]) if names else IGNORE
    return ClassMap(sets.name, task, values)
